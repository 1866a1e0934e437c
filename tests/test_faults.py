"""Faults: a database that goes away and comes back, an identity provider down at start-up."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from flyswatter import migrations
from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.identity import JwksServer, TokenFactory

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server of this test's own, so stopping it disturbs nobody else."""

    def __init__(self) -> None:
        assert PG_BIN is not None, "PostgreSQL server binaries are not installed"
        # Outside pytest's root-only temp tree: the server runs as the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="flyswatter-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "postgres.log"
        self._as_postgres(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres")

    @staticmethod
    def _as_postgres(*command: object) -> None:
        # PostgreSQL refuses to run as root; CI and developers run the suite as root here.
        prefix = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else []
        subprocess.run([*prefix, *map(str, command)], check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                f"{PG_BIN}/pg_ctl",
                "-D",
                str(server.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
async def app_on_private_postgres(
    base_settings: Settings, private_postgres: PrivatePostgres
) -> AsyncIterator[FastAPI]:
    settings = base_settings.model_copy(
        update={"database_url": private_postgres.url, "database_timeout_seconds": 2.0}
    )
    migrations.upgrade(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.mark.postgres_only
async def test_database_outage_is_a_fast_503_and_the_service_recovers_by_itself(
    app_on_private_postgres: FastAPI, private_postgres: PrivatePostgres, tokens: TokenFactory
) -> None:
    headers = {"Authorization": f"Bearer {tokens.user_token('alice')}"}
    transport = httpx.ASGITransport(app=app_on_private_postgres)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client:
        created = await client.post(
            "/api/v1/projects", json={"key": "FLY", "name": "before"}, headers=headers
        )
        assert created.status_code == 201

        private_postgres.stop()
        started = time.monotonic()
        during = await client.get("/api/v1/projects/FLY", headers=headers)
        assert during.status_code == 503
        assert during.headers["content-type"] == "application/problem+json"
        assert during.headers["Retry-After"]
        assert "postgres" not in during.text.lower()
        assert time.monotonic() - started < 10
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200

        private_postgres.start()
        deadline = time.monotonic() + 20
        statuses = []
        while time.monotonic() < deadline:
            response = await client.get("/api/v1/projects/FLY", headers=headers)
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
        assert statuses[-1] == 200, statuses
        assert response.json()["name"] == "before"
        assert (await client.get("/readyz")).status_code == 200


async def test_identity_provider_down_at_start_means_not_ready_until_keys_load(
    settings: Settings,
) -> None:
    provider = JwksServer()
    provider.start()
    provider.stop()  # keep its port, take it down
    down_settings = settings.model_copy(update={"keycloak_url": provider.base_url})
    app = create_app(down_settings)
    transport = httpx.ASGITransport(app=app)
    tokens = TokenFactory(provider)
    headers = {"Authorization": f"Bearer {tokens.user_token('alice')}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        refused = await client.get("/api/v1/users/me", headers=headers)
        assert refused.status_code == 401

        provider.start()
        try:
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200
        finally:
            provider.stop()
