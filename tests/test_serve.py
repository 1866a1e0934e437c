"""``flyswatter serve`` as operators run it: real processes, real sockets, real signals."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from flyswatter.cli.serve import serve_options
from flyswatter.config import Settings, UnsafeSettings
from tests.support.database import stored_row
from tests.support.identity import JwksServer, TokenFactory
from tests.support.servers import (
    FLYSWATTER,
    ServedFlyswatter,
    free_port,
    scratch_database,
    serve_environment,
)

IN_FLIGHT = 12


# --- refusing unsafe settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        pytest.param({}, "FLYSWATTER_KEYCLOAK_URL is not set", id="no-keycloak"),
        pytest.param(
            {"keycloak_url": "http://127.0.0.1:8081"},
            "FLYSWATTER_ALLOW_LOOPBACK_KEYCLOAK=true",
            id="development-provider-url",
        ),
        pytest.param(
            {"keycloak_url": "http://localhost:8081"},
            "points at loopback",
            id="development-provider-by-name",
        ),
        pytest.param(
            {"keycloak_url": "https://sso.example.org", "audience": ""},
            "FLYSWATTER_AUDIENCE is empty",
            id="no-audience",
        ),
        pytest.param(
            {
                "keycloak_url": "https://sso.example.org",
                "workers": 2,
                "redis_url": "redis://127.0.0.1:6379/0",
            },
            "SQLite cannot be shared by several workers",
            id="sqlite-with-workers",
        ),
        pytest.param(
            {
                "keycloak_url": "https://sso.example.org",
                "database_url": "postgresql://flyswatter@db.example.org/flyswatter",
                "workers": 2,
            },
            "FLYSWATTER_REDIS_URL",
            id="workers-without-shared-limits",
        ),
        pytest.param(
            {"keycloak_url": "https://sso.example.org"},
            "FLYSWATTER_CURSOR_SECRET is not set",
            id="no-cursor-secret",
        ),
        pytest.param(
            {
                "keycloak_url": "https://sso.example.org",
                "cursor_secret": "s",
                "webhook_secret_keys": "[]",
            },
            "FLYSWATTER_WEBHOOK_SECRET_KEYS is not set",
            id="no-webhook-secret-keys",
        ),
    ],
)
def test_serve_refuses_unsafe_settings_with_one_line_and_a_failing_exit(
    settings: dict[str, object], reason: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [FLYSWATTER, "serve"],
        env=serve_environment(port=free_port(), **settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    message = result.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith("flyswatter: refusing to start: ")
    assert reason in message
    # Refused before anything was created or bound.
    assert list(tmp_path.iterdir()) == []


def test_loopback_keycloak_is_accepted_when_explicitly_allowed() -> None:
    settings = Settings(
        keycloak_url="http://127.0.0.1:8080",
        allow_loopback_keycloak=True,
        cursor_secret="s",
        webhook_secret_keys=[Fernet.generate_key().decode()],
    )
    settings.check_production()
    with pytest.raises(UnsafeSettings, match="loopback"):
        settings.model_copy(update={"allow_loopback_keycloak": False}).check_production()


def test_forwarded_headers_are_trusted_only_when_proxies_are_configured() -> None:
    direct = serve_options(Settings())
    assert direct["proxy_headers"] is False
    behind_proxy = serve_options(Settings(forwarded_allow_ips="10.0.0.5"))
    assert behind_proxy["proxy_headers"] is True
    assert behind_proxy["forwarded_allow_ips"] == "10.0.0.5"


# --- the other commands: bad arguments and failures are one line, never a traceback --------


def run_command(args: list[str], tmp_path: Path, **settings: object) -> tuple[int, str]:
    result = subprocess.run(
        [FLYSWATTER, *args],
        env=serve_environment(**settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stderr.strip()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        pytest.param(["upgrade", "nosuchrev"], "Can't locate revision", id="upgrade-unknown"),
        pytest.param(["downgrade", "nosuchrev"], "Can't locate revision", id="downgrade-unknown"),
        pytest.param(["upgrade", "+500"], "didn't produce 500", id="upgrade-too-far"),
    ],
)
def test_migrate_to_a_revision_that_is_not_there_says_so_in_one_line(
    args: list[str], said: str, tmp_path: Path
) -> None:
    # Alembic's CommandError used to end the command in a traceback.
    code, message = run_command(
        ["migrate", *args], tmp_path, database_url=f"sqlite:///{tmp_path / 'm.db'}"
    )
    assert code == 1
    assert "\n" not in message, message
    assert message.startswith("flyswatter: migrate ")
    assert said in message


def test_migrate_on_a_database_it_cannot_reach_names_its_address_not_the_driver_error(
    tmp_path: Path,
) -> None:
    # The traceback ended in psycopg's own text; a driver's message may quote the URL or SQL.
    port = free_port()
    code, message = run_command(
        ["migrate", "upgrade"],
        tmp_path,
        database_url=f"postgresql://flyswatter:pw-not-to-print@127.0.0.1:{port}/flyswatter",
    )
    assert code == 1
    assert "\n" not in message, message
    assert f"the database at 127.0.0.1:{port} failed" in message
    assert "pw-not-to-print" not in message
    assert "Connection refused" not in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["dev", "--port", "70000"], id="dev-port-past-65535"),
        pytest.param(["dev", "--idp-port", "0"], id="dev-idp-port-zero"),
        pytest.param(["dev", "--port", "-1"], id="dev-port-negative"),
        pytest.param(["worker", "--concurrency", "0"], id="worker-no-processes"),
        pytest.param(["worker", "--concurrency", "-1"], id="worker-negative-processes"),
    ],
)
def test_out_of_range_ports_and_process_counts_are_usage_errors(
    args: list[str], tmp_path: Path
) -> None:
    # A port past 65535 ended in socket.bind's OverflowError, a negative concurrency in
    # Celery's click traceback, once the command had started things.
    code, message = run_command(
        args,
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'm.db'}",
        redis_url="redis://127.0.0.1:1/0",
        worker_metrics_port=0,
    )
    assert code == 2
    assert "Traceback" not in message, message
    assert message.splitlines()[-1].startswith(f"flyswatter {args[0]}: error: argument {args[1]}")
    # Refused before anything was created.
    assert list(tmp_path.iterdir()) == []


# --- a real server with two workers -------------------------------------------------------


@pytest.fixture
def serve_database_url(
    is_postgres: bool, postgres_url: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A migrated PostgreSQL database the server may write to."""
    if is_postgres:
        yield str(request.getfixturevalue("clean_database"))
        return
    with scratch_database(postgres_url) as url:
        yield url


def http_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    if method != "GET":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.strip().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


@pytest.mark.slow
async def test_sigterm_lets_every_in_flight_request_finish_then_exits_0(
    serve_database_url: str, jwks_server: JwksServer, tokens: TokenFactory, tmp_path: Path
) -> None:
    server = ServedFlyswatter(
        database_url=serve_database_url,
        jwks_server=jwks_server,
        log_path=tmp_path / "serve.log",
        redis_url=None,
        workers=2,
        host="127.0.0.1",
        rate_limit_enabled="false",
        forwarded_allow_ips="127.0.0.1",
        graceful_shutdown_seconds=20,
        log_format="json",
        log_level="info",
    )
    port = server.port
    try:
        server.start()
        token = tokens.user_token("alice")
        auth = {"Authorization": f"Bearer {token}"}
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, headers=auth, timeout=30) as client:
            assert (await client.get("/api/v1/users/me")).status_code == 200
            for key in ("PRE1", "PRE2"):
                created = await client.post("/api/v1/projects", json={"key": key, "name": key})
                assert created.status_code == 201, created.text
            # From a trusted proxy, X-Forwarded-Proto makes the links the client follows https.
            page = await client.get(
                "/api/v1/projects", params={"limit": 1}, headers={"X-Forwarded-Proto": "https"}
            )
            assert page.headers["link"].startswith(f"<https://127.0.0.1:{port}/api/v1/projects")
            burst = await asyncio.gather(*(client.get("/api/v1/projects") for _ in range(40)))
            assert {response.status_code for response in burst} == {200}

        async def start_in_flight(number: int) -> tuple[Any, Any, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # A complete exchange first: a worker has accepted this connection.
            writer.write(http_request("GET", "/healthz", {}))
            status, _, _ = await read_response(reader)
            assert status == 200
            body = json.dumps({"key": f"INF{number:02d}", "name": "in flight"}).encode()
            headers = {
                **auth,
                "Content-Type": "application/json",
                "X-Request-ID": f"in-flight-{number}",
            }
            request = http_request("POST", "/api/v1/projects", headers, body)
            # Head and half the body now, the rest after SIGTERM: the request is in flight.
            split = len(request) - len(body) // 2
            writer.write(request[:split])
            await writer.drain()
            return reader, writer, request[split:]

        in_flight = await asyncio.gather(*(start_in_flight(n) for n in range(IN_FLIGHT)))
        # Both workers have read the heads and are inside the app, waiting for the bodies.
        await asyncio.sleep(1.0)

        server.process.send_signal(signal.SIGTERM)
        server.wait_for_records(lambda record: record["message"] == "Shutting down", 2, 30)
        await asyncio.sleep(0.5)
        assert server.process.poll() is None, "the server exited with requests in flight"

        async def finish(reader: Any, writer: Any, rest: bytes) -> tuple[int, dict[str, str], Any]:
            writer.write(rest)
            await writer.drain()
            status, headers, body = await asyncio.wait_for(read_response(reader), 30)
            # The server closes the connection after the response: it was shutting down.
            assert await asyncio.wait_for(reader.read(), 30) == b""
            writer.close()
            return status, headers, json.loads(body)

        finished = await asyncio.gather(*(finish(*connection) for connection in in_flight))
        for number, (status, headers, body) in enumerate(finished):
            assert status == 201, body
            assert headers["connection"] == "close"
            assert headers["x-request-id"] == f"in-flight-{number}"
            assert body["key"] == f"INF{number:02d}"

        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()

    # Every worker logged JSON with the request id, and ran its shutdown (the pool is closed).
    records = server.records()
    logged = {
        record["request_id"]
        for record in records
        if record.get("status") == 201 and record.get("request_id", "").startswith("in-flight-")
    }
    assert logged == {f"in-flight-{number}" for number in range(IN_FLIGHT)}
    shutdowns = [r for r in records if r["message"] == "Application shutdown complete."]
    assert len(shutdowns) == 2

    stored = stored_row(serve_database_url, "SELECT count(*) FROM project WHERE key LIKE 'INF%'")
    assert stored[0] == IN_FLIGHT
