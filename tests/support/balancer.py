"""HAProxy (Debian's package) in front of several ``flyswatter serve`` replicas.

It checks each replica's ``/readyz`` every 300 ms and takes it out after one failed check. A
replica is restarted as an orchestrator does it: taken out of rotation first (its admin socket,
as Kubernetes removes an endpoint before it sends SIGTERM), stopped once it holds no request,
started, and put back. A request whose connection is refused or closed before any answer is
retried on another replica (``retry-on`` with ``redispatch``) should one die unannounced;
``http-server-close`` gives every request a connection of its own to its replica. Its
statistics page says which replicas it holds up and how many requests each holds.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.servers import free_port, system_program


class Balancer:
    def __init__(
        self, root: Path, replica_ports: list[int], checks: str = "inter 300ms fall 1 rise 1"
    ) -> None:
        """``checks``: HAProxy's health-check timing for every replica (the tests' is quick to
        take one out; a benchmark's load slows ``/readyz`` past 300 ms)."""
        self.binary = system_program("haproxy", "haproxy")
        self.root = root
        self.port = free_port()
        self.stats_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.replicas = len(replica_ports)
        servers = "\n".join(
            f"  server replica{index} 127.0.0.1:{port} check"
            for index, port in enumerate(replica_ports)
        )
        self.config = root / "haproxy.cfg"
        self.config.write_text(
            f"""global
  maxconn 2000
  stats socket {root / "haproxy.sock"} mode 600 level admin

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  # A check's answer may take this long: without it the check's whole budget is its
  # interval (300 ms here), and a machine busy for that long (the tests share two cores
  # with PostgreSQL runs) takes every replica out at once. A stopped replica still fails
  # its check at once (connection refused), and one shutting down at its first 503.
  timeout check 2s
  retries 3
  option redispatch 1
  option http-server-close
  retry-on conn-failure empty-response response-timeout

frontend api
  bind 127.0.0.1:{self.port}
  default_backend replicas

frontend stats
  bind 127.0.0.1:{self.stats_port}
  stats enable
  stats uri /stats

backend replicas
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server {checks}
{servers}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        subprocess.run([self.binary, "-c", "-q", "-f", self.config], check=True)
        with (self.root / "haproxy.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", self.config],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for_up(self.replicas, timeout)

    def _rows(self) -> list[dict[str, str]]:
        assert self.process is not None
        assert self.process.poll() is None, self.log()
        try:
            response = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2)
        except httpx.TransportError:
            return []
        rows = csv.DictReader(io.StringIO(response.text.lstrip("# ")))
        return [
            row
            for row in rows
            if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
        ]

    def states(self) -> dict[str, str]:
        """Each replica's state as HAProxy holds it: UP, DOWN, MAINT, or a transition."""
        return {row["svname"]: row["status"] for row in self._rows()}

    def admin(self, command: str) -> str:
        """One command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.root / "haproxy.sock"))
            admin.sendall(command.encode() + b"\n")
            return b"".join(iter(lambda: admin.recv(4096), b"")).decode()

    def take_out(self, index: int, timeout: float = 30) -> None:
        """No new request to replica ``index``; returns once it holds none."""
        self.admin(f"set server replicas/replica{index} state maint")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = next(r for r in self._rows() if r["svname"] == f"replica{index}")
            if row["status"] == "MAINT" and row["scur"] == "0":
                return
            time.sleep(0.05)
        raise AssertionError(f"replica{index} still holds requests: {self.states()}")

    def put_back(self, index: int) -> None:
        self.admin(f"set server replicas/replica{index} state ready")
        self.wait_for_up(self.replicas)

    def wait_for_up(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(state == "UP" for state in self.states().values()) == count:
                return
            time.sleep(0.1)
        raise AssertionError(f"HAProxy holds {self.states()} up, not {count}: {self.log()}")

    def log(self) -> str:
        path = self.root / "haproxy.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
