"""A webhook receiver on loopback, verifying every delivery as a subscriber would.

It checks each request's Standard Webhooks signature with the specification's own package
(``standardwebhooks``), records what arrived, and answers as a test tells it to: a status per
request in turn, a delay (a receiver that hangs), or only once a test opens its gate (so
that the test can act while a delivery is in flight), with the body a test chose.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    headers: dict[str, str]
    verified_with: list[int]
    path: str

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class WebhookReceiver:
    """``secrets`` verify; ``statuses`` are answered in turn (then 200); ``hang_seconds``
    delays the answer of the first ``hang_requests`` requests."""

    secrets: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hang_seconds: float = 0.0
    hang_requests: int = 0
    # Answer every request with a redirect there (which the sender must not follow).
    redirect_to: str | None = None
    # Set: every answer waits until the test sets it.
    gate: threading.Event | None = None
    # The body of every answer, instead of a small JSON document.
    answer: bytes | None = None
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                verified = []
                for index, secret in enumerate(owner.secrets):
                    try:
                        StandardWebhook(secret).verify(body, headers)
                        verified.append(index)
                    except WebhookVerificationError as exc:
                        owner.rejected.append(str(exc))
                with owner._lock:
                    number = len(owner.received)
                    owner.received.append(
                        Received(
                            webhook_id=headers.get("webhook-id", ""),
                            timestamp=headers.get("webhook-timestamp", ""),
                            signature=headers.get("webhook-signature", ""),
                            body=body,
                            headers=headers,
                            verified_with=verified,
                            path=self.path,
                        )
                    )
                    status = owner.statuses[number] if number < len(owner.statuses) else 200
                if number < owner.hang_requests:
                    time.sleep(owner.hang_seconds)
                if owner.gate is not None:
                    owner.gate.wait(timeout=30)
                answer = owner.answer or json.dumps({"seen": number}).encode()
                try:
                    self.send_response(status)
                    if owner.redirect_to is not None:
                        self.send_header("location", owner.redirect_to)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} deliveries, got {len(self.received)}")


@contextmanager
def running_receiver(**options: Any) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(**options)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
