"""A local server: migrates the database (SQLite ./flyswatter.db unless
FLYSWATTER_DATABASE_URL says otherwise), starts the development identity provider, seeds the
DEMO project with the demo users, and prints commands to try it.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from flyswatter.cli.common import listen_or_exit, port_number, refuse, settings_or_exit
from flyswatter.config import is_loopback_host


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


def cmd_dev(args: argparse.Namespace) -> None:
    # Everything ``dev`` starts is imported when it runs, never at import: ``serve`` must not load
    # the development identity provider.
    import asyncio

    import uvicorn

    from flyswatter import migrations
    from flyswatter.app import create_app
    from flyswatter.dev.demo import dev_banner, seed_demo_project
    from flyswatter.dev.server import start_dev_identity_provider
    from flyswatter.jobs.worker import InProcessWorker, broker_url, make_celery
    from flyswatter.observability.logs import configure_logging

    if not is_loopback_host(args.host):
        refuse("dev binds to loopback only (it trusts its development identities)")
    # The service trusts exactly the provider started below, whatever FLYSWATTER_KEYCLOAK_*
    # says; its URL is known once its port is bound.
    port = args.port if args.port is not None else settings_or_exit().port
    api_socket = listen_or_exit(args.host, port, "choose another port with --port")
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
        settings = settings_or_exit(
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


def add_dev_command(commands: Any) -> None:
    dev = commands.add_parser(
        "dev",
        help="a local server on SQLite with the development identity provider and demo data",
        # What ``flyswatter dev --help`` says is this module's docstring.
        description=__doc__,
    )
    dev.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (default: 127.0.0.1)"
    )
    dev.add_argument(
        "--port", type=port_number, help="port of the API (default: FLYSWATTER_PORT, else 8000)"
    )
    dev.add_argument(
        "--idp-port",
        type=port_number,
        default=8081,
        help="port of the development identity provider (default: 8081)",
    )
    dev.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies whose X-Forwarded-For is believed (default: none)",
    )
    dev.set_defaults(handler=cmd_dev)
