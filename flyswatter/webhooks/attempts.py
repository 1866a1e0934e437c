"""One attempt at a delivery: the signed POST, cut at its deadline, and what came of it.
Never raises for what the receiver or the network does."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from flyswatter.db import utcnow
from flyswatter.webhooks.models import MAX_EXCERPT, AttemptOutcome
from flyswatter.webhooks.signing import signed_headers
from flyswatter.webhooks.targets import RefusedTarget

USER_AGENT = "Flyswatter-Webhooks/1"


@dataclass(frozen=True, slots=True)
class Claim:
    """A due delivery a worker claimed, with what its attempt sends and whom it signs for."""

    delivery_id: int
    attempt: int
    webhook_id: int
    url: str
    secrets: list[str]
    event_uid: str
    payload: str
    # The claim's time, which it wrote to the row: a redelivery asked for meanwhile moves it.
    claimed_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt came to, as its row in the delivery log records it."""

    outcome: AttemptOutcome
    status_code: int | None
    duration_ms: float
    excerpt: str | None
    error: str | None
    started_at: datetime


class _Deadline:
    """Ends an attempt at its deadline by shutting its connection down, which wakes the read
    or write in progress with an error. The connection is learnt from httpcore's ``trace``
    extension as it opens; a duplicate of its socket, as the TLS handshake takes the socket
    itself over (and may trickle too)."""

    def __init__(self, seconds: float) -> None:
        self.passed = False
        self._ended = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def trace(self, name: str, info: dict[str, Any]) -> None:
        if name != "connection.connect_tcp.complete":
            return
        opened = info["return_value"].get_extra_info("socket")
        with self._lock:
            if self._ended or opened is None:
                return
            duplicate = opened.dup()
            self._sockets.append(duplicate)
            if self.passed:  # it took that long to resolve the host
                _shut(duplicate)

    def _cut(self) -> None:
        with self._lock:
            if self._ended:
                return
            self.passed = True
            for duplicate in self._sockets:
                _shut(duplicate)

    def __enter__(self) -> None:
        self._timer.start()

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._ended = True
            for duplicate in self._sockets:
                duplicate.close()
            self._sockets.clear()


def _shut(connection: socket.socket) -> None:
    # An error if the receiver closed it already.
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def send(claim: Claim, client: httpx.Client, deadline_seconds: float) -> AttemptResult:
    """POST the signed event, for ``deadline_seconds`` at most; never raises for what the
    receiver or the network does."""
    started_at = utcnow()
    headers = {
        **signed_headers(claim.secrets, claim.event_uid, started_at, claim.payload),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        # A connection of its own for every attempt: the deadline can only cut a connection
        # it saw open, which a connection kept from an earlier attempt was not.
        "connection": "close",
    }
    start = time.perf_counter()
    status_code = None
    excerpt = None
    deadline = _Deadline(deadline_seconds)
    try:
        with (
            deadline,
            client.stream(
                "POST",
                claim.url,
                content=claim.payload,
                headers=headers,
                extensions={"trace": deadline.trace},
            ) as response,
        ):
            status_code = response.status_code
            received = b""
            for chunk in response.iter_bytes():
                received += chunk
                if len(received) >= MAX_EXCERPT:
                    break
            excerpt = storable(received.decode("utf-8", errors="replace")[:MAX_EXCERPT])
        outcome = (
            AttemptOutcome.succeeded if 200 <= status_code < 300 else AttemptOutcome.http_error
        )
        error = None if outcome is AttemptOutcome.succeeded else f"HTTP {status_code}"
    except RefusedTarget as refused:
        outcome, error = AttemptOutcome.refused_target, refused.message
    except httpx.TimeoutException as exc:
        outcome, error = AttemptOutcome.timeout, f"no answer in time ({type(exc).__name__})"
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
        if deadline.passed:
            outcome = AttemptOutcome.timeout
            error = f"no answer in time (the attempt's {deadline_seconds:g} s deadline)"
        else:
            outcome, error = AttemptOutcome.connection_error, type(exc).__name__
    duration_ms = (time.perf_counter() - start) * 1000
    return AttemptResult(
        outcome=outcome,
        status_code=status_code,
        duration_ms=round(duration_ms, 3),
        excerpt=excerpt,
        error=error,
        started_at=started_at,
    )


def storable(text: str) -> str:
    # What a receiver answers is stored as text, and PostgreSQL text cannot hold NUL.
    return text.replace("\x00", "\ufffd")
