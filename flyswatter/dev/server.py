"""Serving the development identity provider (or any ASGI app) on loopback in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp

from flyswatter.config import is_loopback_host
from flyswatter.dev.identity_provider import DevIdentityProvider
from flyswatter.dev.realm import REALM_FILE, load_realm


@dataclass
class BackgroundServer:
    """An ASGI app served by uvicorn in a daemon thread on loopback, for dev and tests."""

    host: str = "127.0.0.1"
    port: int = 0
    _socket: socket.socket | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _server: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not is_loopback_host(self.host):
            raise ValueError(
                f"refusing to bind {self.host!r}: development servers are loopback only"
            )
        # Bound now, so the URL (and a provider's issuer) is known before the thread starts.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._socket = sock

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, app: ASGIApp, timeout: float = 10.0) -> None:
        import uvicorn

        assert self._socket is not None, "a stopped server cannot be restarted"
        config = uvicorn.Config(
            app, log_config=None, access_log=False, server_header=False, lifespan="auto"
        )
        self._server = uvicorn.Server(config)
        sockets = [self._socket]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": sockets}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.base_url} did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def start_dev_identity_provider(
    host: str = "127.0.0.1",
    port: int = 0,
    realm_file: Path = REALM_FILE,
    environ: Mapping[str, str] | None = None,
) -> tuple[DevIdentityProvider, BackgroundServer]:
    """Load the realm file and serve it on ``host:port`` (loopback only) in the background."""
    server = BackgroundServer(host=host, port=port)
    try:
        provider = DevIdentityProvider(load_realm(realm_file, environ), server.base_url)
        server.start(provider.app)
    except BaseException:
        server.stop()
        raise
    return provider, server
