"""Running Alembic from the service (``flyswatter migrate``, ``flyswatter dev``, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from flyswatter.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(settings: Settings) -> Config:
    if not ALEMBIC_INI.exists():
        raise FileNotFoundError(
            f"{ALEMBIC_INI} is missing: run Flyswatter from its source tree or image"
        )
    config = Config(str(ALEMBIC_INI))
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
