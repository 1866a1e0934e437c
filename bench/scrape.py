"""``GET /metrics`` with four workers, served the way production serves it.

``flyswatter serve --workers 4`` runs with a fresh ``PROMETHEUS_MULTIPROC_DIR``, Redis for
the shared rate limits and the production log settings. Before the scrapes every worker is
given many series: wrk drives each of the benchmark's read endpoints, then a sweep over
every operation of the OpenAPI document, one new connection per request so that the kernel
spreads them over the workers, answers with many statuses (401, 404, 405, 422 and 429
among them: the write budget is set low enough to run out during the sweep). Nothing the sweep sends changes data
except the few issues and comments it creates in P003, as the write scenarios do: every other
write is sent with a bad token or a body that fails validation. Then ``/metrics`` is fetched
sequentially, each time on a new connection, and timed from the client; the workers'
resident memory is read from ``/proc``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from prometheus_client.mmap_dict import MmapedDict

from bench.bench import (
    CLOCK_TICKS,
    PYTHON,
    ROOT,
    Server,
    free_port,
    scenarios,
    service_env,
    wrk,
)
from bench.seed import BENCH_USER
from bench.stack import REDIS_URL
from tests.support.identity import JwksServer

WORKERS = 4
TARGET_MS = 50.0
SWEEP_REPEATS = 6
# Low enough that the sweep's writes run out of budget (429s), high enough for its real writes.
WRITE_LIMIT = "60/minute"
PRESENT = {"key": "P001", "issue_key": "P002-5", "user_id": BENCH_USER, "name": "bug", "id": "1"}
MISSING = {
    "key": "Q999",
    "issue_key": "P001-999999",
    "user_id": "nobody",
    "name": "no-such-label",
    "id": "999999",
}
SPAWNED_WORKER = "spawn_main"


def serve_command() -> list[str]:
    script = Path(PYTHON).parent / "flyswatter"
    if script.exists():
        return [str(script), "serve", "--workers", str(WORKERS)]
    return [PYTHON, "-m", "flyswatter.cli", "serve", "--workers", str(WORKERS)]


def worker_pids(supervisor: int) -> list[int]:
    """uvicorn's spawned workers: children of the supervisor running multiprocessing's spawn."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if parent == supervisor and SPAWNED_WORKER.encode() in command:
            pids.append(int(entry.name))
    return sorted(pids)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def samples_per_worker(files: list[Path], pids: list[int]) -> list[int]:
    """How many samples each worker has written, bucket by bucket (``<kind>_<pid>.db``)."""
    counts = dict.fromkeys(pids, 0)
    for path in files:
        pid = int(path.stem.rsplit("_", 1)[1])
        if pid in counts:
            counts[pid] += sum(1 for _ in MmapedDict.read_all_values_from_file(str(path)))
    return [counts[pid] for pid in pids]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def forget_rate_limits() -> None:
    """Drop the bench's counters left by a previous run within the minute (write budget)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for pattern in (f"*user:{BENCH_USER}*", "*ip:127.0.0.1*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)
    finally:
        client.close()


def fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def _streams(operation: dict[str, Any]) -> bool:
    content = operation.get("responses", {}).get("200", {}).get("content", {})
    return "text/event-stream" in content


def sweep(base: str, token: str) -> dict[int, int]:
    """Every operation with several outcomes; returns how many answers of each status."""
    statuses: dict[int, int] = {}
    good = {"Authorization": f"Bearer {token}", "Connection": "close"}
    bad = {"Authorization": "Bearer not-a-token", "Connection": "close"}
    anonymous = {"Connection": "close"}
    with httpx.Client(base_url=base, timeout=30) as client:
        paths = client.get("/openapi.json").json()["paths"]

        def send(method: str, path: str, headers: dict[str, str], content: str | None) -> None:
            if content is not None:
                headers = {**headers, "Content-Type": "application/json"}
            status = client.request(method, path, headers=headers, content=content).status_code
            statuses[status] = statuses.get(status, 0) + 1

        for _ in range(SWEEP_REPEATS):
            for template, operations in paths.items():
                if not template.startswith("/api/"):
                    continue
                present, missing = fill(template, PRESENT), fill(template, MISSING)
                for method, operation in operations.items():
                    method = method.upper()
                    if _streams(operation):
                        # A live stream answers until the client leaves: never one answer.
                        continue
                    if method == "GET":
                        send(method, present, good, None)
                        send(method, missing, good, None)
                        send(method, present, anonymous, None)
                    elif "requestBody" in operation:
                        send(method, present, good, "[]")  # fails validation: 422, later 429
                        send(method, present, good, "{")  # not JSON
                    send(method, present, bad, None if method == "GET" else "{}")
                if "put" not in operations:
                    send("PUT", present, good, "{}")  # 405, counted under the template
            send("GET", "/api/v1/nowhere", good, None)  # 404 under <unmatched>
    return statuses


def measure_metrics(
    args: argparse.Namespace, url: str, jwks: JwksServer, token: str
) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flyswatter-bench-serve-") as work:
        directory = Path(work, "metrics")
        directory.mkdir()
        env = {
            **service_env(url, jwks),
            "FLYSWATTER_HOST": "127.0.0.1",
            "FLYSWATTER_PORT": str(port),
            # The test identity provider listens on loopback; serve refuses that unless told.
            "FLYSWATTER_ALLOW_LOOPBACK_KEYCLOAK": "true",
            "FLYSWATTER_REDIS_URL": REDIS_URL,
            "FLYSWATTER_RATE_LIMIT_WRITES": WRITE_LIMIT,
            "FLYSWATTER_LOG_LEVEL": "info",
            "FLYSWATTER_LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
        }
        forget_rate_limits()
        log = Path(work, "serve.log")
        with log.open("wb") as output:
            process = subprocess.Popen(
                serve_command(), env={**os.environ, **env}, cwd=ROOT, stdout=output, stderr=output
            )
            try:
                server = Server("serve", process, port)
                pids = wait_for_workers(server, log)
                return drive_and_scrape(args, server, pids, directory, url, token)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def drive_and_scrape(
    args: argparse.Namespace,
    server: Server,
    pids: list[int],
    directory: Path,
    url: str,
    token: str,
) -> dict[str, Any]:
    cases = scenarios(url)
    for case in cases:
        if case.reads:
            wrk(server, case.path, case, token, args.seconds, args.connections)
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=server.base, timeout=30) as client:
        for case in cases:
            if not case.reads:
                for _ in range(3):
                    status = client.request(
                        case.method,
                        case.path,
                        json=case.body,
                        headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                    ).status_code
                    statuses[status] = statuses.get(status, 0) + 1
    for status, count in sweep(server.base, token).items():
        statuses[status] = statuses.get(status, 0) + count
    # CPU time of the workers is steadier than the client's clock on a shared machine.
    before = sum(cpu_seconds(pid) for pid in pids)
    timings, size, series, families = scrape(server.base, args.scrapes)
    cpu = sum(cpu_seconds(pid) for pid in pids) - before
    samples = sorted(directory.glob("*.db"))
    return {
        "workers": WORKERS,
        "target_ms": TARGET_MS,
        "traffic_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "scrape_ms": timings,
        "median_ms": statistics.median(timings),
        "p95_ms": percentile(timings, 95),
        "max_ms": max(timings),
        "cpu_ms_per_scrape": cpu / len(timings) * 1000,
        "body_bytes": size,
        "series": series,
        "families": families,
        "sample_files": len(samples),
        "sample_bytes": sum(path.stat().st_size for path in samples),
        "samples_per_worker": samples_per_worker(samples, pids),
        "rss_mib": {
            "supervisor": rss_mib(server.process.pid),
            "workers": [rss_mib(pid) for pid in pids],
        },
    }


def wait_for_workers(server: Server, log: Path) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"serve exited:\n{log.read_text()[-2000:]}")
        pids = worker_pids(server.process.pid)
        if len(pids) == WORKERS:
            try:
                if httpx.get(server.base + "/readyz", timeout=2).status_code == 200:
                    return pids
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"serve did not start {WORKERS} workers:\n{log.read_text()[-2000:]}")


def scrape(base: str, count: int) -> tuple[list[float], int, int, int]:
    """Times of ``count`` sequential scrapes (ms); size, series and families of the last."""
    timings = []
    body = b""
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.get("/metrics", headers={"Connection": "close"})
            body = response.content
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    lines = body.decode().splitlines()
    series = sum(1 for line in lines if line and not line.startswith("#"))
    families = sum(1 for line in lines if line.startswith("# TYPE "))
    return timings, len(body), series, families


def percentile(values: list[float], percent: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]
