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

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from flyswatter import migrations
from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.support.api import Api
from tests.support.database import empty_all_tables
from tests.support.identity import ALL_SCOPES, JwksServer, TokenFactory
from tests.support.servers import redis_is_up, server_url_of

TEST_DATABASE_ENV = "FLYSWATTER_TEST_DATABASE_URL"
TEST_REDIS_ENV = "FLYSWATTER_TEST_REDIS_URL"
# Where CI and the project's machines run PostgreSQL and Redis (see .ci/run).
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


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
def postgres_url(database_url: str) -> str:
    """A PostgreSQL server tests may create databases on (its ``postgres`` database): the
    suite's own server on PostgreSQL runs, else the local one."""
    if database_url.startswith("postgres"):
        return server_url_of(database_url)
    return LOCAL_POSTGRES


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis the tests may write their own keys to (never flushed)."""
    url = os.environ.get(TEST_REDIS_ENV, LOCAL_REDIS)
    assert redis_is_up(url), f"Redis must answer at {url} (set {TEST_REDIS_ENV}; .ci/run starts it)"
    return url


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


@pytest.fixture
def clean_database(migrated_database: str) -> str:
    empty_all_tables(migrated_database)
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
    application = shared_app if settings is shared_app.settings else create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def api(client: httpx.AsyncClient, tokens: TokenFactory) -> Api:
    return Api(client, tokens)


@pytest.fixture
def all_scopes() -> list[str]:
    return list(ALL_SCOPES)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
