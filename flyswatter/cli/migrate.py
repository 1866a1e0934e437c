"""Database migrations (Alembic) on FLYSWATTER_DATABASE_URL."""

from __future__ import annotations

import argparse
from typing import Any

from flyswatter.cli.common import database_failed, fail, settings_or_exit


def cmd_migrate(args: argparse.Namespace) -> None:
    from alembic import command
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from flyswatter.migrations import alembic_config

    settings = settings_or_exit()
    config = alembic_config(settings)
    try:
        if args.action == "upgrade":
            command.upgrade(config, args.revision)
        elif args.action == "downgrade":
            command.downgrade(config, args.revision)
        elif args.action == "check":
            command.check(config)
        elif args.action == "current":
            command.current(config, verbose=True)
        else:
            command.history(config)
    except CommandError as exc:
        # Alembic's own words (an unknown revision, models that differ from the migrations):
        # one line for the operator, as the plain ``alembic`` command prints them.
        fail(f"migrate {args.action}: {' '.join(str(exc).split())}")
    except DBAPIError as exc:
        fail(database_failed(f"migrate {args.action}", settings, exc))


def add_migrate_command(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="database migrations (Alembic) on FLYSWATTER_DATABASE_URL",
        description=__doc__,
    )
    actions = migrate.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="apply migrations up to REVISION")
    upgrade.add_argument("revision", nargs="?", default="head", help="default: head")
    downgrade = actions.add_parser("downgrade", help="undo migrations down to REVISION")
    downgrade.add_argument(
        "revision", nargs="?", default="-1", help="default: -1 (the last one); base undoes all"
    )
    actions.add_parser("current", help="the revision the database is at")
    actions.add_parser("history", help="every revision, newest first")
    actions.add_parser("check", help="fail when the models and the migrations disagree")
    migrate.set_defaults(handler=cmd_migrate)
