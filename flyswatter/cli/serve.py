"""The production server. Refuses unsafe settings with one line, never migrates (run
'flyswatter migrate upgrade' first) and stops gracefully on SIGTERM. Listens on
FLYSWATTER_HOST:FLYSWATTER_PORT.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flyswatter.cli.common import database_failed, listen_or_exit, refuse, settings_or_exit
from flyswatter.config import Settings, UnsafeSettings


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


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from flyswatter.observability.multiprocess import prepare_multiprocess_dir

    if args.workers is not None:
        # Through the environment, so the worker processes read the same settings.
        os.environ["FLYSWATTER_WORKERS"] = str(args.workers)
    settings = settings_or_exit()
    try:
        settings.check_production()
    except UnsafeSettings as unsafe:
        refuse(str(unsafe))
    # A taken port is one line naming it, not a bind error inside a log record; the probe
    # closes at once, as uvicorn's supervisor binds the socket its workers share.
    listen_or_exit(settings.host, settings.port, "set FLYSWATTER_PORT to a free port").close()
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
        refuse(f"{behind}: run 'flyswatter migrate upgrade' first")
    except DBAPIError as exc:
        refuse(database_failed("cannot read which migrations it has applied", settings, exc))


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="the production server (uvicorn workers; settings from FLYSWATTER_*)",
        # What ``flyswatter serve --help`` says is this module's docstring.
        description=__doc__,
    )
    serve.add_argument(
        "--workers", type=int, help="worker processes (default: FLYSWATTER_WORKERS, else 1)"
    )
    serve.set_defaults(handler=cmd_serve)
