"""The ``flyswatter`` command: ``serve``, ``dev`` and ``migrate``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from flyswatter.config import Settings, UnsafeSettings, is_loopback_host


def _settings_or_exit(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "FLYSWATTER_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        sys.exit(f"flyswatter: refusing to start: {name}: {first['msg']}")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from flyswatter.observability.logs import configure_logging

    settings = _settings_or_exit()
    try:
        settings.check_production()
    except UnsafeSettings as unsafe:
        sys.exit(f"flyswatter: refusing to start: {unsafe}")
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        "flyswatter.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        date_header=True,
        log_config=None,
        timeout_graceful_shutdown=30,
    )


def cmd_dev(args: argparse.Namespace) -> None:
    import uvicorn

    from flyswatter import migrations
    from flyswatter.app import create_app
    from flyswatter.observability.logs import configure_logging

    if not is_loopback_host(args.host):
        sys.exit("flyswatter: dev binds to loopback only (it trusts its development identities)")
    settings = _settings_or_exit(host=args.host, port=args.port, log_format="text")
    configure_logging(settings.log_format, settings.log_level)
    migrations.upgrade(settings)
    app = create_app(settings)
    print(f"Flyswatter (dev) on http://{args.host}:{args.port}/docs", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, server_header=False)


def cmd_migrate(args: argparse.Namespace) -> None:
    from alembic import command

    from flyswatter.migrations import alembic_config

    config = alembic_config(_settings_or_exit())
    if args.action == "upgrade":
        command.upgrade(config, args.revision or "head")
    elif args.action == "downgrade":
        command.downgrade(config, args.revision or "-1")
    elif args.action == "check":
        command.check(config)
    elif args.action == "current":
        command.current(config, verbose=True)
    else:
        command.history(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flyswatter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="production server; settings from FLYSWATTER_*")
    serve.set_defaults(handler=cmd_serve)

    dev = commands.add_parser(
        "dev", help="local server on SQLite with the development identity provider"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=int(os.environ.get("FLYSWATTER_PORT", "8000")))
    dev.set_defaults(handler=cmd_dev)

    migrate = commands.add_parser("migrate", help="database migrations (Alembic)")
    migrate.add_argument("action", choices=["upgrade", "downgrade", "check", "current", "history"])
    migrate.add_argument("revision", nargs="?")
    migrate.set_defaults(handler=cmd_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
