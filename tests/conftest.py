"""Shared fixtures: a migrated database, a real JWKS over HTTP, signed tokens, an API client.

The database is SQLite in a temporary folder unless ``FLYSWATTER_TEST_DATABASE_URL`` names a
PostgreSQL database, which the suite then owns: its schema is dropped and migrated afresh.
On a SQLite run the ``postgres_only`` tests run on a throwaway PostgreSQL server of the run's
own, and so do the tests that need a server to create databases on; Redis is the one
``FLYSWATTER_TEST_REDIS_URL`` names, else a throwaway one too. So the whole suite runs on a
machine with nothing but Python. Every test starts from empty tables.
"""

from __future__ import annotations

import inspect
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from flyswatter import migrations
from flyswatter.app import create_app
from flyswatter.config import Settings
from tests.support.api import Api
from tests.support.database import empty_all_tables
from tests.support.identity import ALL_SCOPES, JwksServer, TokenFactory
from tests.support.servers import (
    TEST_WEBHOOK_SECRET_KEYS,
    PostgresServer,
    RedisServer,
    redis_is_up,
    server_url_of,
)

TEST_DATABASE_ENV = "FLYSWATTER_TEST_DATABASE_URL"
TEST_REDIS_ENV = "FLYSWATTER_TEST_REDIS_URL"


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
    database = sa.make_url(url).render_as_string() if url else "SQLite"
    if not url:
        database += " (postgres_only tests: a throwaway PostgreSQL server)"
    redis = os.environ.get(TEST_REDIS_ENV) or "a throwaway server"
    return f"flyswatter database: {database}; Redis: {redis}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A SQLite run gives the PostgreSQL-only tests a PostgreSQL database of their own: the
    # session fixtures below are built once more for them, and pytest groups them together.
    if not metafunc.definition.get_closest_marker("postgres_only"):
        return
    if "database_backend" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: postgres_only, yet no database")
    if not os.environ.get(TEST_DATABASE_ENV):
        metafunc.parametrize("database_backend", ["postgresql"], indirect=True, scope="session")


@pytest.fixture(scope="session")
def database_backend(request: pytest.FixtureRequest) -> str:
    default = "postgresql" if os.environ.get(TEST_DATABASE_ENV) else "sqlite"
    return str(getattr(request, "param", default))


@pytest.fixture(scope="session")
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Started only when a test needs PostgreSQL and no server was named."""
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """A PostgreSQL server tests may create databases on (its ``postgres`` database): the one
    ``FLYSWATTER_TEST_DATABASE_URL`` is on, else a throwaway one."""
    url = os.environ.get(TEST_DATABASE_ENV)
    if url:
        return server_url_of(url)
    return str(request.getfixturevalue("throwaway_postgres").url)


@pytest.fixture(scope="session")
def database_url(
    database_backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if database_backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'flyswatter.db'}"
    url = os.environ.get(TEST_DATABASE_ENV)
    if url:
        return url
    server: str = request.getfixturevalue("postgres_url")
    name = f"flyswatter_tests_{uuid.uuid4().hex[:8]}"  # the fixture may be built again
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return sa.make_url(server).set(database=name).render_as_string()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis the tests may write their own keys to (never flushed): the one
    ``FLYSWATTER_TEST_REDIS_URL`` names, else a throwaway one."""
    url = os.environ.get(TEST_REDIS_ENV)
    if url:
        assert redis_is_up(url), f"no Redis answers at {TEST_REDIS_ENV}={url}"
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres", "postgresql"))


@pytest.fixture(scope="session")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_settings(
    database_url: str, jwks_server: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        database_url=database_url,
        # Files (attachments, reports) go to the run's own folder, never the working directory.
        storage_dir=str(tmp_path_factory.mktemp("storage")),
        keycloak_url=jwks_server.base_url,
        keycloak_realm=jwks_server.realm,
        audience="flyswatter-api",
        jwks_refresh_min_interval_seconds=0,
        rate_limit_enabled=False,
        # Tests pin what happens, not how fast: fifty creates queued on one row lock in one
        # event loop can wait longer than production's 5 s on two busy cores. The tests of
        # the timeout itself set theirs.
        database_timeout_seconds=30,
        # The key every served process and worker of the tests has: what the app in the
        # test process seals, a worker process opens.
        webhook_secret_keys=json.loads(TEST_WEBHOOK_SECRET_KEYS),
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
