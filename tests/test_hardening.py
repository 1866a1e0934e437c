"""Hostile or sloppy input and headers: body caps, CORS, security headers, secrets in logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from flyswatter.app import create_app
from flyswatter.cli.serve import serve_options
from flyswatter.config import Settings
from flyswatter.observability.logs import JsonFormatter, RequestIdFilter, TextFormatter
from tests.support.api import Api


async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield client


class TestBodySize:
    async def test_declared_oversized_body_is_a_413_and_creates_nothing(self, api: Api) -> None:
        alice = api.as_user("alice")
        huge = '{"key": "FLY", "name": "x", "description": "' + "a" * 2_000_000 + '"}'
        response = await alice.post(
            "/api/v1/projects", content=huge, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert (await alice.get("/api/v1/projects")).json()["items"] == []

    async def test_streamed_oversized_body_is_a_413(self, api: Api) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"key": "FLY", "name": "x", "description": "'
            for _ in range(40):
                yield b"a" * 65_536
            yield b'"}'

        alice = api.as_user("alice")
        response = await alice.post(
            "/api/v1/projects", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert (await alice.get("/api/v1/projects")).json()["items"] == []

    async def test_body_under_the_cap_passes(self, api: Api) -> None:
        response = await api.as_user("alice").post(
            "/api/v1/projects", json={"key": "FLY", "name": "x", "description": "a" * 9_000}
        )
        assert response.status_code == 201


class TestCors:
    async def test_no_origin_is_allowed_by_default(self, client: httpx.AsyncClient) -> None:
        response = await client.options(
            "/api/v1/projects",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in response.headers

    async def test_configured_origin_is_allowed_and_others_are_not(
        self, settings: Settings
    ) -> None:
        configured = settings.model_copy(update={"cors_origins": ["https://tracker.example"]})
        async for client in client_for(configured):
            preflight = {"Access-Control-Request-Method": "POST"}
            allowed = await client.options(
                "/api/v1/projects", headers={"Origin": "https://tracker.example", **preflight}
            )
            assert allowed.headers["access-control-allow-origin"] == "https://tracker.example"
            refused = await client.options(
                "/api/v1/projects", headers={"Origin": "https://evil.example", **preflight}
            )
            assert "access-control-allow-origin" not in refused.headers

    async def test_the_last_resort_500_carries_the_cors_headers_of_any_other_answer(
        self, settings: Settings
    ) -> None:
        """A browser reads a 500 (and the request id to report) only when it carries the CORS
        headers; without them it sees an opaque network error instead. It gets exactly the
        headers any other answer gets: an origin CORS refuses is still refused."""
        allowed = "https://tracker.example"
        app = create_app(settings.model_copy(update={"cors_origins": [allowed]}))

        async def fail_unexpectedly() -> None:
            raise RuntimeError("something nobody handled")

        # A route of this test only: the service itself has no input that ends in a 500.
        app.add_api_route("/api/v1/test-failure", fail_unexpectedly, methods=["GET", "POST"])

        def cors_headers(response: httpx.Response) -> dict[str, str]:
            vary = {part.strip().lower() for part in response.headers.get("vary", "").split(",")}
            return {
                **{k: v for k, v in response.headers.items() if k.startswith("access-control-")},
                "vary origin": str("origin" in vary),
            }

        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            for n, origin in enumerate((allowed, "https://evil.example", None)):
                headers = {"X-Request-ID": f"req-{n}", **({"Origin": origin} if origin else {})}
                # Answered inside the CORS middleware: a 401 from the error handlers.
                handled = await client.get("/api/v1/projects", headers=headers)
                assert handled.status_code == 401
                for method in ("GET", "POST"):
                    failed = await client.request(method, "/api/v1/test-failure", headers=headers)
                    assert failed.status_code == 500
                    assert failed.headers["content-type"] == "application/problem+json"
                    assert failed.json()["request_id"] == failed.headers["x-request-id"]
                    assert failed.headers["x-request-id"] == f"req-{n}"
                    assert "something nobody handled" not in failed.text
                    assert cors_headers(failed) == cors_headers(handled), (origin, method)
                    if origin == allowed:
                        assert failed.headers["access-control-allow-origin"] == allowed
                        exposed = failed.headers["access-control-expose-headers"].lower()
                        assert "x-request-id" in exposed
                    else:
                        assert "access-control-allow-origin" not in failed.headers


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/api/v1/projects", "/nowhere"):
        response = await client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "server" not in response.headers


async def test_tokens_never_reach_the_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alice = api.as_user("alice")
    await alice.post("/api/v1/projects", json={"key": "FLY", "name": "x"})
    await alice.get("/api/v1/projects/FLY")
    forged = alice.token[:-10] + "AAAAAAAAAA"
    await api.client.get("/api/v1/projects", headers={"Authorization": f"Bearer {forged}"})
    await api.client.get("/api/v1/projects", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert caplog.records, "the requests were logged"
    signature = alice.token.rsplit(".", 1)[1]
    payload = alice.token.split(".")[1]
    for text in (caplog.text, *(str(r.__dict__) for r in caplog.records)):
        assert signature not in text
        assert payload not in text
        assert "dXNlcjpwYXNz" not in text


# As SQLAlchemy words a driver's error: the statement and its values in the message.
STATEMENT_ERROR = "[SQL: SELECT * FROM webhook WHERE secret = %s] [parameters: ('s3cr3t',)]"
DRIVER_ERROR = "the driver's own words"


def failing_statement(message: str, cause: str) -> None:
    try:
        raise KeyError(cause)
    except KeyError as error:
        raise RuntimeError(message) from error


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_a_logged_exception_shows_its_type_and_frames_never_its_message(
    formatter: logging.Formatter,
) -> None:
    """Whoever logs it: uvicorn logs an error raised once a stream has started, with the
    exception attached, and Celery logs a task's failure the same way."""
    try:
        failing_statement(STATEMENT_ERROR, DRIVER_ERROR)
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, exc_info
    )
    RequestIdFilter().filter(record)
    line = formatter.format(record)
    for secret in ("s3cr3t", "SELECT", DRIVER_ERROR):
        assert secret not in line
    for shown in ("builtins.RuntimeError", "builtins.KeyError", "in failing_statement"):
        assert shown in line


def test_webhook_urls_are_not_logged_by_the_http_client(tmp_path: Path) -> None:
    """httpx logs every request's URL at info, and a receiver's URL may hold its secret."""
    script = """
import http.server, threading, httpx
from flyswatter.observability.logs import configure_logging
configure_logging("json", "INFO")
class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # the receiver's own log is not the service's
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}/services/T1/B1/s3cr3t-token"
print(httpx.post(url).status_code)
server.shutdown()
"""
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert ran.stdout.strip() == "501"  # the request was made
    assert "s3cr3t-token" not in ran.stderr


@pytest.mark.parametrize("control", ["%0A", "%0D", "%1B[2J", "%C2%85", "%E2%80%A8"])
async def test_the_access_log_line_cannot_be_split_or_forged_through_the_path(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, control: str
) -> None:
    forged = "2026-01-01 00:00:00,000 INFO flyswatter.auth [admin] token accepted for root"
    with caplog.at_level(logging.INFO, logger="flyswatter.requests"):
        await client.get(f"/x{control}{forged}")
    record = next(r for r in caplog.records if r.name == "flyswatter.requests")
    RequestIdFilter().filter(record)
    line = TextFormatter().format(record)
    assert len(line.splitlines()) == 1, line
    assert "\x1b" not in line
    # Each case starts with its control character, which the line shows as U+FFFD.
    assert line.endswith(f" GET /x\ufffd{unquote(control)[1:]}{forged} 404")
    # The structured field keeps the path as requested; JSON escapes it within one line.
    entry = JsonFormatter().format(record)
    assert len(entry.splitlines()) == 1
    assert json.loads(entry)["path"] == f"/x{unquote(control)}{forged}"


def test_served_responses_name_no_server_software(base_settings: Settings) -> None:
    # uvicorn adds "server: uvicorn" unless told not to; the ASGI tests above cannot see it.
    assert serve_options(base_settings)["server_header"] is False


def _wraps_proxy_headers(app: object) -> bool:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    while app is not None:
        if isinstance(app, ProxyHeadersMiddleware):
            return True
        app = getattr(app, "app", None)
    return False


@pytest.mark.parametrize(("asked", "trusted"), [(None, False), ("10.0.0.1", True)])
def test_dev_server_believes_forwarded_headers_only_when_asked(
    base_settings: Settings, asked: str | None, trusted: bool
) -> None:
    import uvicorn

    from flyswatter.cli import build_parser
    from flyswatter.cli.dev import dev_options

    arguments = ["dev"] + ([] if asked is None else ["--forwarded-allow-ips", asked])
    args = build_parser().parse_args(arguments)
    options = dev_options(args.host, args.port, args.forwarded_allow_ips)
    config = uvicorn.Config(create_app(base_settings), **options)
    config.load()
    assert _wraps_proxy_headers(config.loaded_app) is trusted
