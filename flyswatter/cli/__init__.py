"""flyswatter: the bug tracker's command line (serve, dev, worker, migrate, smoke).

Settings come from FLYSWATTER_* environment variables (see the README's Configuration).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from flyswatter.cli.dev import add_dev_command
from flyswatter.cli.migrate import add_migrate_command
from flyswatter.cli.serve import add_serve_command
from flyswatter.cli.worker import add_worker_command
from flyswatter.smoke import add_smoke_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flyswatter", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_command(commands)
    add_dev_command(commands)
    add_worker_command(commands)
    add_migrate_command(commands)
    add_smoke_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)
