"""Sentry error reporting, against a local HTTP endpoint standing in for Sentry: one event for
an unhandled error in a request and one for a task, each with its request id, no secrets."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from fastapi import FastAPI

from flyswatter.app import create_app
from flyswatter.config import Settings
from flyswatter.observability.errors import scrub_text
from tests.support.api import Api, make_team
from tests.support.jobs import in_process_worker, wait_for_job


class EnvelopeSink:
    """Accepts what sentry-sdk sends (envelopes) on loopback and keeps the raw bytes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":
                    import brotli

                    body = brotli.decompress(body)
                sink.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/42"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self) -> list[dict[str, Any]]:
        events = []
        for body in self.bodies:
            lines = body.split(b"\n")
            # Envelope header, then (item header, payload) pairs.
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if header and json.loads(header).get("type") == "event":
                    events.append(json.loads(payload))
        return events


@pytest.fixture
def sink() -> Iterator[EnvelopeSink]:
    sink = EnvelopeSink()
    sink.thread.start()
    yield sink
    sink.server.shutdown()


@pytest.fixture
def settings(
    base_settings: Settings, clean_database: str, tmp_path: Path, sink: EnvelopeSink
) -> Iterator[Settings]:
    yield base_settings.model_copy(
        update={
            "sentry_dsn": sink.dsn,
            "sentry_environment": "test",
            "sentry_release": "flyswatter@test",
            "storage_dir": str(tmp_path / "artifacts"),
        }
    )
    # The SDK is process-wide: later tests run without it.
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.init()


@pytest.fixture
async def app(settings: Settings) -> Any:
    application: FastAPI = create_app(settings)

    async def fail_unexpectedly() -> None:
        raise RuntimeError("something nobody handled")

    # A route of this test only: the service itself has no input that ends in a 500.
    application.add_api_route("/api/v1/test-failure", fail_unexpectedly, methods=["POST"])
    async with application.router.lifespan_context(application):
        yield application


def test_token_shaped_text_is_scrubbed() -> None:
    text = "Authorization: Bearer abc.def-ghi and eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"
    assert scrub_text(text) == "Authorization: Bearer [Filtered] and [Filtered]"


async def test_unhandled_errors_reach_sentry_once_with_request_id_and_no_secrets(
    api: Api, settings: Settings, sink: EnvelopeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = await make_team(api)
    caller = team["reporter"]
    response = await caller.post(
        "/api/v1/test-failure",
        headers={"X-Request-ID": "req-sentry-request", "Cookie": "session=cookie-secret"},
        json={"password": "body-secret", "token": caller.token},
    )
    assert response.status_code == 500
    assert response.json()["request_id"] == "req-sentry-request"

    # A bug in the renderer, as the worker would meet it: its task fails unexpectedly.
    def broken_renderer(*args: object) -> bytes:
        raise LookupError("a renderer bug")

    monkeypatch.setattr("flyswatter.reports.pdf.render_report", broken_renderer)
    with in_process_worker(settings):
        requested = await caller.post(
            "/api/v1/projects/FLY/reports", headers={"X-Request-ID": "req-sentry-task"}
        )
        assert requested.status_code == 202
        job_id = requested.json()["id"]
        job = await wait_for_job(caller, requested.headers["Location"])
    assert job["state"] == "failed"
    assert job["error"] == "the report could not be built because of an internal error"
    sentry_sdk.flush(timeout=10)

    events = sink.events()
    by_request = {event["tags"].get("request_id"): event for event in events}
    assert len(events) == 2, [event.get("exception") for event in events]
    request_event = by_request["req-sentry-request"]
    assert request_event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert request_event["environment"] == "test"
    assert request_event["release"] == "flyswatter@test"
    task_event = by_request["req-sentry-task"]
    assert task_event["exception"]["values"][-1]["type"] == "LookupError"
    assert task_event["tags"]["job_id"] == job_id
    everything = b"\n".join(sink.bodies).decode()
    for secret in (caller.token, "cookie-secret", "body-secret", caller.token.split(".")[2]):
        assert secret not in everything
