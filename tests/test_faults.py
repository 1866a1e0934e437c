"""Faults: a database that goes away and comes back, an identity provider down at start-up."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from flyswatter import migrations
from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.support.identity import JwksServer, TokenFactory
from tests.support.servers import PostgresServer


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
async def app_on_private_postgres(
    base_settings: Settings, private_postgres: PostgresServer
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
    app_on_private_postgres: FastAPI, private_postgres: PostgresServer, tokens: TokenFactory
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
