"""Database engine, the constraint naming convention, column types and the session dependency."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, Request
from sqlalchemy import DateTime, Engine, Table, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar
from starlette.types import ASGIApp, Receive, Scope, Send

from flyswatter.config import Settings
from flyswatter.errors import NotFound
from flyswatter.http.context import find_request_context, request_context
from flyswatter.services import ServicesDep

# Named constraints make migrations reviewable and reversible on every backend.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


AUTOCOMMIT = "AUTOCOMMIT"
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})

# Integer primary keys and issue numbers are 32-bit columns on PostgreSQL.
MAX_ROW_ID = 2**31 - 1


def table(model: type[SQLModel]) -> Table:
    """The model's table, for statements in SQLAlchemy Core (where a page or a batch reads
    rows without building model instances); SQLModel does not type ``__table__``."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


def tables(*models: type[SQLModel]) -> tuple[Table, ...]:
    return tuple(table(model) for model in models)


_Row = TypeVar("_Row")


_Locked = TypeVar("_Locked", bound=SelectOfScalar[Any])


def for_change(statement: _Locked) -> _Locked:
    """The rows locked until the transaction ends, for a change that keeps their keys:
    FOR NO KEY UPDATE, which queues the changes of a row one after the other but lets other
    transactions insert rows that reference it (their foreign-key checks take KEY SHARE).
    FOR UPDATE would make those wait too, and two writers each holding one issue while
    recording history on the other's would wait on each other (a deadlock). A row's
    deletion still waits for, and is waited on by, every lock of the row."""
    return statement.with_for_update(key_share=True)


async def first_or_not_found(
    session: AsyncSession, statement: SelectOfScalar[_Row], missing: str, *, for_update: bool
) -> _Row:
    """The statement's first row, locked until the transaction ends when ``for_update``;
    a 404 saying ``missing`` when there is none."""
    if for_update:
        statement = for_change(statement)
    row = (await session.exec(statement)).first()
    if row is None:
        raise NotFound(missing)
    return row


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL cannot corrupt the file; it only defers the fsync to checkpoints.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
    # SQLite's own lower() (and so ILIKE, which SQLAlchemy writes as lower() LIKE lower())
    # folds ASCII letters only: "É" would never find "émile". Python's is Unicode's, as
    # PostgreSQL's is under a UTF-8 locale. No index is built on lower(), so none goes stale.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _sqlite_begin_immediate(conn: Any) -> None:
    # SQLite upgrades a read transaction to a write lazily and then fails at once with
    # "database is locked" when another writer won; taking the write lock at BEGIN makes
    # concurrent writers queue on busy_timeout instead (the pysqlite recipe). Reads run in
    # autocommit (see ``read_only_engine``) and take no lock at all.
    if conn.get_execution_options().get("isolation_level") != AUTOCOMMIT:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.async_database_url,
            connect_args={"timeout": settings.database_timeout_seconds},
        )
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "connect", _sqlite_pragmas)

        @event.listens_for(sync_engine, "connect")
        def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below decide how transactions start.
            dbapi_connection.isolation_level = None

        event.listen(sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_async_engine(
        settings.async_database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_timeout_seconds,
        # No pre-ping: it is a round trip on every checkout, paid by every request. When the
        # server restarts, the first statement on a stale connection fails as a disconnect,
        # that request gets a 503, and SQLAlchemy then discards every older pooled connection.
        pool_pre_ping=False,
        connect_args={
            "connect_timeout": max(1, int(settings.database_timeout_seconds)),
            # Bound every statement so a stuck query cannot pin a worker.
            "options": f"-c statement_timeout={int(settings.database_timeout_seconds * 1000)}",
        },
    )


def read_only_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for requests that only read: their statements run in autocommit.

    Reads gain nothing from a transaction here: at READ COMMITTED every statement takes its
    own snapshot anyway. Without one, a read request saves the BEGIN and ROLLBACK round trips
    (on SQLite, the write lock BEGIN IMMEDIATE would take). The one write a read may make,
    mirroring a new caller, is a single upsert and is atomic on its own.
    """
    return engine.execution_options(isolation_level=AUTOCOMMIT)


async def get_session(request: Request, services: ServicesDep) -> AsyncSession:
    """The request's session, made on first use; ``SessionMiddleware`` closes it.

    A plain dependency rather than one with ``yield``: FastAPI runs those through an exit
    stack and a shielded cancel scope, which cost more per request (about 120 µs measured
    here) than the session itself. A session that never ran a statement holds nothing.
    """
    context = request_context(request.scope)
    session = context.session
    if session is None:
        engine = services.read_engine if request.method in READ_ONLY_METHODS else services.engine
        session = context.session = AsyncSession(engine, expire_on_commit=False)
    return session


class SessionMiddleware:
    """Closes the request's session, if it made one, once the request is done, whatever
    happened: what was not committed is rolled back and the connection goes back to the
    pool. Pure ASGI, like every middleware here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            context = find_request_context(scope)
            if context is not None and context.session is not None:
                session, context.session = context.session, None
                await session.close()


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def create_sync_engine(settings: Settings) -> Engine:
    """The same database for synchronous code (Celery tasks), with the same SQLite rules."""
    if settings.is_sqlite:
        engine = sa_create_engine(
            settings.sync_database_url,
            connect_args={"timeout": settings.database_timeout_seconds},
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, record)
            dbapi_connection.isolation_level = None

        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return sa_create_engine(
        settings.sync_database_url,
        pool_size=2,
        max_overflow=2,
        pool_timeout=settings.database_timeout_seconds,
        # Workers run for days between restarts of the database: check a connection before use
        # (one round trip per task, not per request).
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(settings.database_timeout_seconds))},
    )
