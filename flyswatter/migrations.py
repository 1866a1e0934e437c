"""Running Alembic from the service (``flyswatter migrate``, ``flyswatter dev``, tests)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from flyswatter.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def find_alembic_ini() -> Path:
    """alembic.ini beside the package (a source tree), else in the working directory.

    The container image installs the package into a virtualenv and keeps ``alembic.ini`` and
    ``alembic/`` in its working directory, where the plain ``alembic`` command finds them too.
    """
    for candidate in (ALEMBIC_INI, Path.cwd() / "alembic.ini"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "alembic.ini is missing: run Flyswatter from its source tree, or from the directory "
        "holding alembic.ini and alembic/ (the image's working directory)"
    )


def alembic_config(settings: Settings) -> Config:
    config = Config(str(find_alembic_ini()))
    config.attributes["database_url"] = settings.sync_database_url
    # The service has configured logging already; alembic.ini's would replace it.
    config.attributes["configure_logger"] = False
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


def check(settings: Settings) -> None:
    """Raise when the models and the migrations disagree."""
    command.check(alembic_config(settings))


class SchemaBehind(Exception):
    """The database is not at the migrations' head: this release's code would not fit it."""


def require_head(settings: Settings) -> None:
    """Return when the database is at the migrations' head; else raise ``SchemaBehind``
    saying where it is (or ``sqlalchemy.exc.DBAPIError`` when it cannot be read)."""
    heads = set(ScriptDirectory.from_config(alembic_config(settings)).get_heads())
    # Bounded: a start that cannot reach its database says so instead of hanging.
    connect_args = {} if settings.is_sqlite else {"connect_timeout": 10}
    engine = sa.create_engine(
        settings.sync_database_url, poolclass=NullPool, connect_args=connect_args
    )
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    if current != heads:
        at = ", ".join(sorted(current)) or "no revision (an empty database)"
        raise SchemaBehind(f"the database is at {at}, the migrations' head is {', '.join(heads)}")
