"""Alembic: the migrations build exactly the models' schema, and every revision reverses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import flyswatter.tables  # noqa: F401 - every table on the metadata
from flyswatter.config import Settings
from flyswatter.migrations import alembic_config


@pytest.fixture
def scratch_settings(
    base_settings: Settings, is_postgres: bool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A database of its own, so the round trip cannot disturb the suite's database."""
    if not is_postgres:
        path = tmp_path_factory.mktemp("migrations") / "scratch.db"
        yield base_settings.model_copy(update={"database_url": f"sqlite:///{path}"})
        return
    url = sa.make_url(base_settings.sync_database_url)
    scratch = f"{url.database}_migrations"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        connection.exec_driver_sql(f'CREATE DATABASE "{scratch}"')
    try:
        scratch_url = url.set(database=scratch).render_as_string(hide_password=False)
        yield base_settings.model_copy(update={"database_url": scratch_url})
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        admin.dispose()


_ALEMBIC_OWN = {"alembic_version", "alembic_version_pkc"}

# Every object of the public schema PostgreSQL can describe, each with its full definition.
_POSTGRES_SCHEMA = {
    "relations": """
        SELECT c.relname, c.relkind::text FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'""",
    "columns": """
        SELECT table_name, column_name, data_type, character_maximum_length::text,
               is_nullable, column_default, is_generated, generation_expression
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    # Enums, domains, ranges (not the row types every table has).
    "types": """
        SELECT typname, typtype::text FROM pg_type
        WHERE typnamespace = 'public'::regnamespace AND typtype IN ('e', 'd', 'r', 'm')""",
    "functions": "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
    "triggers": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
    "extensions": "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'",
}


def schema_of(settings: Settings) -> dict[str, set[tuple[str | None, ...]]]:
    """Every schema object in the database with its definition, as sets of rows."""
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                return {
                    kind: {tuple(row) for row in connection.exec_driver_sql(query)}
                    for kind, query in _POSTGRES_SCHEMA.items()
                }
            rows = connection.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master")
            return {"objects": {tuple(row) for row in rows}}
    finally:
        engine.dispose()


def foreign_objects(schema: dict[str, set[tuple[str | None, ...]]]) -> list[tuple[str, ...]]:
    """What the schema holds beyond Alembic's own version table."""
    left = []
    for kind, rows in schema.items():
        for row in rows:
            names = {value for value in row[:3] if value}
            if not names & _ALEMBIC_OWN and not any(
                # SQLite's automatic index of alembic_version's primary key.
                name.startswith("sqlite_autoindex_alembic_version")
                for name in names
            ):
                left.append((kind, *map(str, row)))
    return sorted(left)


def test_upgrade_downgrade_upgrade_round_trip(scratch_settings: Settings) -> None:
    config = alembic_config(scratch_settings)
    command.upgrade(config, "head")
    built = schema_of(scratch_settings)
    names = {name for row in foreign_objects(built) for name in row}
    assert set(SQLModel.metadata.tables) <= names, "every table of the models is built"
    command.check(config)  # models and migrations agree

    command.downgrade(config, "base")
    assert foreign_objects(schema_of(scratch_settings)) == [], "downgrade base leaves nothing"

    command.upgrade(config, "head")
    rebuilt = schema_of(scratch_settings)
    for kind in built:
        assert rebuilt[kind] == built[kind], f"{kind} differ after the second upgrade"
    command.check(config)


def test_each_revision_downgrades_on_its_own(scratch_settings: Settings) -> None:
    config = alembic_config(scratch_settings)
    revisions = list(reversed(list(ScriptDirectory.from_config(config).walk_revisions())))
    for revision in revisions:
        command.upgrade(config, revision.revision)
        command.downgrade(config, revision.down_revision or "base")
        command.upgrade(config, revision.revision)


def test_revision_files_are_dated(project_root: Path) -> None:
    versions = project_root / "alembic" / "versions"
    names = [path.name for path in versions.glob("*.py")]
    assert names
    for name in names:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_[a-z0-9_]+\.py", name), name
