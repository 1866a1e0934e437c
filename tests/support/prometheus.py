"""A real Prometheus (Debian's package) scraping the given targets every second."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port, system_program

# How long a scrape after the traffic may take to be stored and answered.
SCRAPE_WAIT_SECONDS = 20


class Prometheus:
    def __init__(self, root: Path, *targets: str) -> None:
        self.binary = system_program("prometheus", "prometheus")
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: flyswatter\n"
            f"    static_configs:\n      - targets: {json.dumps(list(targets))}\n"
        )
        self.command = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        with (self.root / "prometheus.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "prometheus.log").read_text()
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("Prometheus did not get ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        assert response.status_code == 200, f"{promql}: {response.text}"
        return list(response.json()["data"]["result"])

    def query_range(self, promql: str, seconds: int = 120) -> list[dict[str, Any]]:
        now = time.time()
        response = httpx.get(
            f"{self.url}/api/v1/query_range",
            params={"query": promql, "start": now - seconds, "end": now, "step": "2s"},
            timeout=10,
        )
        assert response.status_code == 200, f"{promql}: {response.text}"
        return list(response.json()["data"]["result"])

    def by(self, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
        """An instant vector as {label values: value}."""
        return {
            tuple(sample["metric"].get(label, "") for label in labels): float(sample["value"][1])
            for sample in self.query(promql)
        }

    def scalar(self, promql: str) -> float:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for(self, promql: str, expected: float) -> None:
        """Until a scrape after the traffic has been stored."""
        deadline = time.monotonic() + SCRAPE_WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.scalar(promql) == expected:
                return
            time.sleep(0.25)
        raise AssertionError(f"{promql} stayed {self.scalar(promql)}, expected {expected}")
