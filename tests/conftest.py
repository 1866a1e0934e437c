"""Shared fixtures: a migrated database, a real JWKS over HTTP, signed tokens, an API client.

The database is SQLite in a temporary folder unless ``FLYSWATTER_TEST_DATABASE_URL`` names a
PostgreSQL database, which the suite then owns: its schema is dropped and migrated afresh.
Every test starts from empty tables.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlmodel import SQLModel

import flyswatter.tables  # noqa: F401 - every table on the metadata, for cleaning
from flyswatter import migrations
from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.identity import ALL_SCOPES, JwksServer, TokenFactory

TEST_DATABASE_ENV = "FLYSWATTER_TEST_DATABASE_URL"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    # Every coroutine test runs on asyncio through anyio's pytest plugin (anyio ships with
    # httpx); marking here, before collection, keeps parametrize working alongside it.
    if name.startswith("test") and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def pytest_report_header() -> str:
    url = os.environ.get(TEST_DATABASE_ENV)
    return f"flyswatter database: {sa.make_url(url).render_as_string() if url else 'SQLite'}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get(TEST_DATABASE_ENV)
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'flyswatter.db'}"


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres", "postgresql"))


@pytest.fixture(autouse=True)
def _postgres_only(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.postgres_only`` tests need PostgreSQL; CI's PostgreSQL run allows no skip."""
    if request.node.get_closest_marker("postgres_only") and not request.getfixturevalue(
        "is_postgres"
    ):
        pytest.skip("PostgreSQL only (set FLYSWATTER_TEST_DATABASE_URL)")


@pytest.fixture(scope="session")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_settings(database_url: str, jwks_server: JwksServer) -> Settings:
    return Settings(
        database_url=database_url,
        keycloak_url=jwks_server.base_url,
        keycloak_realm=jwks_server.realm,
        audience="flyswatter-api",
        jwks_refresh_min_interval_seconds=0,
        rate_limit_enabled=False,
    )


@pytest.fixture(scope="session")
def migrated_database(base_settings: Settings) -> str:
    """The schema built by the migrations (not create_all), once per run."""
    sync_engine = sa.create_engine(base_settings.sync_database_url)
    if sync_engine.dialect.name == "postgresql":
        with sync_engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    sync_engine.dispose()
    migrations.upgrade(base_settings)
    return base_settings.sync_database_url


def _empty_all_tables(url: str) -> None:
    engine = sa.create_engine(url)
    tables = [table.name for table in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            quoted = ", ".join(f'"{name}"' for name in tables)
            connection.exec_driver_sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
        else:
            for name in tables:
                connection.exec_driver_sql(f'DELETE FROM "{name}"')
    engine.dispose()


@pytest.fixture
def clean_database(migrated_database: str) -> str:
    _empty_all_tables(migrated_database)
    return migrated_database


@pytest.fixture
def settings(base_settings: Settings, clean_database: str) -> Settings:
    return base_settings


@pytest.fixture
def tokens(jwks_server: JwksServer) -> TokenFactory:
    return TokenFactory(jwks_server)


@pytest.fixture(scope="session")
def shared_app(base_settings: Settings) -> FastAPI:
    """Building the app (routes, models) costs about 0.1 s: once per run is enough. Its
    lifespan, which holds every piece of per-run state, still starts afresh for each test."""
    return create_app(base_settings)


@pytest.fixture
async def app(settings: Settings, shared_app: FastAPI) -> AsyncIterator[FastAPI]:
    application = shared_app if settings is shared_app.state.settings else create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


class Api:
    """A thin caller: ``api.as_user("alice").post(...)`` with a real signed token."""

    def __init__(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        self.client = client
        self.tokens = tokens

    def as_user(
        self, username: str, *, scopes: list[str] | None = None, **claims: Any
    ) -> AuthedClient:
        token = self.tokens.user_token(username, scopes=scopes, **claims)
        return AuthedClient(self.client, token)

    def as_service(self, client_id: str, *, scopes: list[str] | None = None) -> AuthedClient:
        return AuthedClient(self.client, self.tokens.service_token(client_id, scopes=scopes))


class AuthedClient:
    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.token = token

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(method, url, headers=self._headers(headers), **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    async def sign_in(self) -> str:
        """Call the API once so Flyswatter mirrors this identity; returns its user id."""
        response = await self.get("/api/v1/users/me")
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


@pytest.fixture
def api(client: httpx.AsyncClient, tokens: TokenFactory) -> Api:
    return Api(client, tokens)


@pytest.fixture
def all_scopes() -> list[str]:
    return list(ALL_SCOPES)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
