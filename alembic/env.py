"""Alembic environment: the same models and database URL as the service, psycopg 3 driver."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool
from sqlmodel import SQLModel

import flyswatter.tables  # noqa: F401 - registers every table on SQLModel.metadata
from flyswatter.config import Settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


# Expression indexes that autogenerate cannot compare faithfully (it re-creates them on every
# run); each one is written by hand in its migration and checked by the query-plan tests.
HAND_WRITTEN_INDEXES = frozenset({"ix_issue_search", "ix_issue_search_document"})
# PostgreSQL-only columns made by hand in their migration and kept off the models on purpose:
# issue.search_document (a generated tsvector) must not be loaded with every issue, and
# SQLite has no such type.
HAND_WRITTEN_COLUMNS = frozenset({("issue", "search_document")})
# Foreign keys SQLite could only add inline with their column (ALTER TABLE ADD COLUMN ...
# REFERENCES), which its reflection reads back without name or ON DELETE: compared on
# PostgreSQL only, where they are ordinary constraints.
INLINE_SQLITE_FOREIGN_KEYS = frozenset({("issue", "milestone_id")})


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    if type_ == "index" and name in HAND_WRITTEN_INDEXES:
        return False
    if type_ == "foreign_key_constraint" and context.get_context().dialect.name == "sqlite":
        table = getattr(getattr(obj, "table", None), "name", None)
        columns = tuple(getattr(obj, "column_keys", ()))
        return (table, *columns) not in INLINE_SQLITE_FOREIGN_KEYS
    if type_ == "column":
        table = getattr(getattr(obj, "table", None), "name", None)
        return (table, name) not in HAND_WRITTEN_COLUMNS
    return True


def database_url() -> str:
    # `flyswatter migrate` and the tests pass the URL in; the alembic CLI reads the environment.
    return config.attributes.get("database_url") or Settings().sync_database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
