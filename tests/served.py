"""``flyswatter serve`` with several worker processes, as production runs it, for slow tests.

The service runs on PostgreSQL (the suite's own database when ``FLYSWATTER_TEST_DATABASE_URL``
is set, else a temporary database made here and dropped after), Redis on 127.0.0.1:6379,
and the test JWKS server as its Keycloak.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

from flyswatter import migrations
from flyswatter.config import Settings
from tests.identity import JwksServer

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_is_up(port: int = 6379) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def served_database(suite_database_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database for the served process."""
    if suite_database_url.startswith("postgres"):
        yield suite_database_url  # migrated and emptied by the suite's fixtures
        return
    name = f"flyswatter_served_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_SERVER}/{name}"
    try:
        migrations.upgrade(Settings(database_url=url))
        yield url
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServedFlyswatter:
    """``python -m flyswatter.cli serve`` in its own process group, stopped on exit."""

    def __init__(
        self,
        *,
        database_url: str,
        jwks_server: JwksServer,
        log_path: Path,
        metrics_dir: Path | None = None,
        workers: int = 2,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.metrics_dir = metrics_dir
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("FLYSWATTER_", "PROMETHEUS_"))
        }
        environment.update(
            {
                "FLYSWATTER_DATABASE_URL": database_url,
                "FLYSWATTER_KEYCLOAK_URL": jwks_server.base_url,
                "FLYSWATTER_KEYCLOAK_REALM": jwks_server.realm,
                "FLYSWATTER_AUDIENCE": "flyswatter-api",
                # The test JWKS server stands in for Keycloak on this host.
                "FLYSWATTER_ALLOW_LOOPBACK_KEYCLOAK": "true",
                "FLYSWATTER_REDIS_URL": REDIS_URL,
                "FLYSWATTER_WORKERS": str(workers),
                "FLYSWATTER_PORT": str(self.port),
                "FLYSWATTER_LOG_LEVEL": "warning",
                # Prometheus' keep-alive scrape connection would hold a graceful stop this long.
                "FLYSWATTER_GRACEFUL_SHUTDOWN_SECONDS": "2",
                **{f"FLYSWATTER_{name.upper()}": value for name, value in settings.items()},
            }
        )
        if metrics_dir is not None:
            environment["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flyswatter.cli", "serve"],
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited: {self.log()}"
            if len(self.worker_pids()) == int(self.environment["FLYSWATTER_WORKERS"]):
                try:
                    if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not get ready in {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def worker_pids(self) -> list[int]:
        """The uvicorn workers: children of the supervisor started by multiprocessing."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            pids = [int(pid) for pid in children.read_text().split()]
        except FileNotFoundError:
            return []
        workers = []
        for pid in pids:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in command:
                workers.append(pid)
        return sorted(workers)

    def replace_worker(self, pid: int, timeout: float = 30.0) -> int:
        """SIGKILL one worker and wait for the supervisor to start its replacement."""
        before = set(self.worker_pids())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = set(self.worker_pids())
            fresh = now - before
            if pid not in now and fresh and len(now) == len(before):
                try:
                    if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                        return fresh.pop()
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"worker {pid} was not replaced in {timeout} s: {self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> ServedFlyswatter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
