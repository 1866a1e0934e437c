"""Alembic: the migrations build exactly the models' schema, and every revision reverses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

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


def table_names(settings: Settings) -> set[str]:
    engine = sa.create_engine(settings.sync_database_url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(scratch_settings: Settings) -> None:
    config = alembic_config(scratch_settings)
    command.upgrade(config, "head")
    built = table_names(scratch_settings)
    assert {"user", "project", "project_member"} <= built
    command.check(config)  # models and migrations agree

    command.downgrade(config, "base")
    assert table_names(scratch_settings) == set()

    command.upgrade(config, "head")
    assert table_names(scratch_settings) == built
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
