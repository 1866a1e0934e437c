"""flyswatter: the bug tracker's command line (serve, dev, worker, migrate, smoke).

Settings come from FLYSWATTER_* environment variables (see the README's Configuration).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_settings import SettingsError

from flyswatter.config import Settings, UnsafeSettings, is_loopback_host
from flyswatter.smoke import add_smoke_command

# A setting that cannot be read at all (as opposed to one that is unsafe to run with).
EXIT_BAD_SETTING = 2


def _refuse(message: str, code: int = 1) -> NoReturn:
    print(f"flyswatter: refusing to start: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _settings_or_exit(**overrides: object) -> Settings:
    """The settings, or one line naming the variable and what is wrong with it (exit 2).
    The value itself is never printed: it may be a URL with a password."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "FLYSWATTER_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        _refuse(f"{name}: {message}", EXIT_BAD_SETTING)
    except SettingsError as exc:
        # pydantic-settings could not parse a list or mapping variable: name it.
        field = str(exc).split('"')[1] if '"' in str(exc) else "settings"
        _refuse(f"FLYSWATTER_{field.upper()}: not valid JSON", EXIT_BAD_SETTING)


def _listen_or_exit(host: str, port: int, how_to_change: str) -> socket.socket:
    """A socket bound to ``host:port``, or one line naming the port and how to pick another,
    before anything else is printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(
            f"flyswatter: cannot listen on {host}:{port} ({exc.strerror}): {how_to_change}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    return sock


def serve_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``serve``: every worker builds its app from the same environment."""
    from flyswatter.observability.logs import logging_config

    return {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        # X-Forwarded-For/-Proto are believed only from the listed proxies: from anyone else
        # they would let a client pick its own address (and so its rate-limit bucket).
        "proxy_headers": settings.forwarded_allow_ips is not None,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "server_header": False,
        # A dictConfig, not a call here: uvicorn applies it again in each spawned worker.
        "log_config": logging_config(settings.log_format, settings.log_level),
        "access_log": False,
        # On SIGTERM: stop accepting, let in-flight requests finish (up to this long), then
        # run the lifespan shutdown, which closes the database pool.
        "timeout_graceful_shutdown": settings.graceful_shutdown_seconds,
    }


def dev_options(host: str, port: int, forwarded_allow_ips: str | None) -> dict[str, Any]:
    """uvicorn's options for ``dev``: no proxy is trusted unless one is named.

    uvicorn believes X-Forwarded-For from 127.0.0.1 by default, and on a developer's machine
    every local process is 127.0.0.1: any of them could pick its own address, and with it its
    rate-limit bucket.
    """
    return {
        "host": host,
        "port": port,
        "log_config": None,
        "server_header": False,
        "proxy_headers": forwarded_allow_ips is not None,
        "forwarded_allow_ips": forwarded_allow_ips,
    }


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from flyswatter.observability.multiprocess import prepare_multiprocess_dir

    if args.workers is not None:
        # Through the environment, so the worker processes read the same settings.
        os.environ["FLYSWATTER_WORKERS"] = str(args.workers)
    settings = _settings_or_exit()
    try:
        settings.check_production()
    except UnsafeSettings as unsafe:
        _refuse(str(unsafe))
    # A taken port is one line naming it, not a bind error inside a log record; the probe
    # closes at once, as uvicorn's supervisor binds the socket its workers share.
    _listen_or_exit(settings.host, settings.port, "set FLYSWATTER_PORT to a free port").close()
    _require_migrated(settings)
    # Before any worker imports prometheus_client, which picks its storage at import.
    prepare_multiprocess_dir(settings.workers)
    uvicorn.run("flyswatter.app:create_app", **serve_options(settings))


def _require_migrated(settings: Settings) -> None:
    """``serve`` never migrates: on a database behind this release's migrations it refuses
    to start, before any worker, rather than answer with queries the schema cannot run."""
    from sqlalchemy.exc import DBAPIError

    from flyswatter.migrations import SchemaBehind, require_head

    try:
        require_head(settings)
    except SchemaBehind as behind:
        _refuse(f"{behind}: run 'flyswatter migrate upgrade' first")
    except DBAPIError:
        # Never the driver's message: it may quote the URL or the SQL.
        _refuse(
            f"cannot read which migrations the database at {settings.database_address} "
            f"has applied (unreachable, or no access)"
        )


def cmd_dev(args: argparse.Namespace) -> None:
    import asyncio

    import uvicorn

    from flyswatter import migrations
    from flyswatter.app import create_app
    from flyswatter.dev.demo import dev_banner, seed_demo_project
    from flyswatter.dev.server import start_dev_identity_provider
    from flyswatter.jobs.worker import InProcessWorker, broker_url, make_celery
    from flyswatter.observability.logs import configure_logging

    if not is_loopback_host(args.host):
        _refuse("dev binds to loopback only (it trusts its development identities)")
    # The service trusts exactly the provider started below, whatever FLYSWATTER_KEYCLOAK_*
    # says; its URL is known once its port is bound.
    port = args.port if args.port is not None else _settings_or_exit().port
    api_socket = _listen_or_exit(args.host, port, "choose another port with --port")
    api_url = f"http://{args.host}:{port}"
    # The realm's browser client (Swagger UI) redirects back to this very server, unless the
    # environment names another base URL, as it does for Keycloak's import.
    environ = {"FLYSWATTER_BASE_URL": api_url, **os.environ}
    try:
        provider, idp_server = start_dev_identity_provider(
            args.host, args.idp_port, environ=environ
        )
    except OSError as exc:
        api_socket.close()
        print(
            f"flyswatter: the development identity provider cannot listen on "
            f"{args.host}:{args.idp_port} ({exc.strerror}): choose another port with --idp-port",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    try:
        settings = _settings_or_exit(
            host=args.host,
            port=port,
            log_format="text",
            keycloak_url=provider.base_url,
            keycloak_realm=provider.realm.name,
            audience="flyswatter-api",
            issuer=None,
            # A webhook receiver on this laptop works; metadata and private ranges stay refused.
            webhook_allow_http=True,
            webhook_allow_loopback=True,
        )
        configure_logging(settings.log_format, settings.log_level)
        migrations.upgrade(settings)
        asyncio.run(seed_demo_project(settings, provider.realm))
        transport = broker_url(settings).split("://", 1)[0]
        jobs = (
            "Jobs and webhook deliveries: a Celery worker (with beat) runs in this process on "
            "kombu's in-memory transport; they need no Redis"
            if transport == "memory"
            else "Jobs and webhook deliveries: a Celery worker (with beat) runs in this process "
            "on FLYSWATTER_REDIS_URL"
        )
        config = uvicorn.Config(
            create_app(settings),
            lifespan="on",
            **dev_options(args.host, port, args.forwarded_allow_ips),
        )
        # The in-memory transport's queues are per process: API and worker share them here.
        with InProcessWorker(make_celery(settings), beat=True):
            _serve_then_announce(config, [api_socket], dev_banner(api_url, provider) + jobs + "\n")
    finally:
        idp_server.stop()
        api_socket.close()


def _serve_then_announce(config: Any, sockets: list[socket.socket], banner: str) -> None:
    """uvicorn on these sockets, printing the banner once it accepts connections (not before:
    a banner above a start-up failure would send people to a URL nothing answers)."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(banner, flush=True)

    AnnouncingServer(config).run(sockets=sockets)


def cmd_worker(args: argparse.Namespace) -> None:
    from flyswatter.observability.multiprocess import prepare_multiprocess_dir

    settings = _settings_or_exit()
    if settings.redis_url is None:
        sys.exit(
            "flyswatter: refusing to start: FLYSWATTER_REDIS_URL is not set; the worker "
            "takes its jobs from that broker (flyswatter dev runs one in-process instead)"
        )
    # Before prometheus_client is imported: the pool processes write to a shared directory.
    prepare_multiprocess_dir(workers=2)

    from flyswatter.jobs.health import serve_worker_endpoint
    from flyswatter.jobs.worker import QUEUE, make_celery
    from flyswatter.observability.errors import init_error_reporting
    from flyswatter.observability.logs import configure_logging
    from flyswatter.storage.service import S3Storage, StorageUnavailable

    configure_logging(settings.log_format, settings.log_level)
    init_error_reporting(settings, "worker")
    celery = make_celery(settings)
    if settings.storage_backend == "s3" and settings.s3_create_bucket:
        try:
            S3Storage(settings).ensure_bucket()
        except StorageUnavailable as exc:
            # Not fatal: report jobs retry until the storage answers.
            print(f"flyswatter: the bucket could not be checked now: {exc}", file=sys.stderr)
    if settings.worker_metrics_port:
        try:
            serve_worker_endpoint(
                celery, settings.worker_metrics_host, settings.worker_metrics_port
            )
        except OSError as exc:
            sys.exit(f"flyswatter: the worker's metrics port cannot bind: {exc.strerror}")
    argv = [
        "worker",
        f"--loglevel={settings.log_level.upper()}",
        f"--concurrency={args.concurrency}",
        f"--queues={QUEUE}",
        f"--hostname={args.hostname}",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.beat:
        argv.append("--beat")
    celery.worker_main(argv)


def cmd_migrate(args: argparse.Namespace) -> None:
    from alembic import command

    from flyswatter.migrations import alembic_config

    config = alembic_config(_settings_or_exit())
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flyswatter", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="the production server (uvicorn workers; settings from FLYSWATTER_*)",
        description="The production server. Refuses unsafe settings with one line, never "
        "migrates (run 'flyswatter migrate upgrade' first) and stops gracefully on SIGTERM. "
        "Listens on FLYSWATTER_HOST:FLYSWATTER_PORT.",
    )
    serve.add_argument(
        "--workers", type=int, help="worker processes (default: FLYSWATTER_WORKERS, else 1)"
    )
    serve.set_defaults(handler=cmd_serve)

    dev = commands.add_parser(
        "dev",
        help="a local server on SQLite with the development identity provider and demo data",
        description="A local server: migrates the database (SQLite ./flyswatter.db unless "
        "FLYSWATTER_DATABASE_URL says otherwise), starts the development identity provider, "
        "seeds the DEMO project with the demo users, and prints commands to try it.",
    )
    dev.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (default: 127.0.0.1)"
    )
    dev.add_argument(
        "--port", type=int, help="port of the API (default: FLYSWATTER_PORT, else 8000)"
    )
    dev.add_argument(
        "--idp-port",
        type=int,
        default=8081,
        help="port of the development identity provider (default: 8081)",
    )
    dev.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies whose X-Forwarded-For is believed (default: none)",
    )
    dev.set_defaults(handler=cmd_dev)

    worker = commands.add_parser(
        "worker",
        help="Celery worker for jobs (reports) and webhook deliveries; broker: "
        "FLYSWATTER_REDIS_URL",
    )
    worker.add_argument("--concurrency", type=int, default=2, help="worker processes")
    worker.add_argument(
        "--beat", action="store_true", help="also run the periodic tasks (one worker only)"
    )
    worker.add_argument("--hostname", default="flyswatter@%h", help="the worker's node name")
    worker.set_defaults(handler=cmd_worker)

    migrate = commands.add_parser(
        "migrate",
        help="database migrations (Alembic) on FLYSWATTER_DATABASE_URL",
        description="Database migrations (Alembic) on FLYSWATTER_DATABASE_URL.",
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
    add_smoke_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
