"""Flyswatter against its physical limits, measured in one run on this machine.

``python -m bench`` seeds PostgreSQL (reused between runs), starts the service and the
baselines B1 (bare Starlette JSON) and B2 (the service's own SQL behind the same token
check, through a psycopg pool) under uvicorn with one worker each, then drives each
endpoint with wrk over loopback: keep-alive, fixed connections, a discarded warm-up, and
several rounds in which the service and its baseline alternate. It reports medians and
spreads of throughput and latency, the server's CPU time per request (steadier than
requests per second on a shared machine), and writes ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
import sqlalchemy as sa
from cryptography.fernet import Fernet

from bench.seed import (
    BENCH_USER,
    COMMON_TERM,
    RARE_TERM,
    ensure_database,
    issue_count,
    seed,
)
from flyswatter.app import create_app
from flyswatter.config import Settings
from flyswatter.http.pagination import cursor_key, encode_cursor
from tests.support.identity import JwksServer, TokenFactory
from tests.support.servers import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEEP_ROWS = 100_000
SEARCH_P95_TARGET_MS = 20.0
# The service signs its cursors with it; the deep-page scenario's cursor is signed the same way.
CURSOR_SECRET = "the benchmark's cursor secret"
# endpoints: every endpoint against its baseline at every size; stack: the middleware stack
# in isolation (bench/stack.py); metrics: /metrics with four workers (bench/scrape.py).
PARTS = ("endpoints", "stack", "metrics")
# Parts with a command of their own (each one under five minutes), whose sections of
# RESULTS.md this command keeps when it rewrites the rest.
PARTS_ON_THEIR_OWN = [
    "Parts run on their own, each writing its own section at the end of this file (under five",
    "minutes each): `python -m bench.webhooks` (webhook deliveries per worker),",
    "`python -m bench.sse` (live-stream fan-out to 500 subscribers), `python -m bench.fleet`",
    "(three replicas behind HAProxy against one, /metrics per replica), `python -m bench.limiter`",
    "(the rate limiter's check alone, per storage).",
]

WRK_SCRIPT = r"""
local method, body, pace_ms = "%(method)s", %(body)s, %(pace_ms)d
wrk.method = method
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Content-Type"] = "application/json"
if body ~= nil then wrk.body = body end
function delay() return pace_ms end
function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %%d, "errors": %%d, "non2xx": %%d, "seconds": %%f, ' ..
    '"p50_ms": %%f, "p95_ms": %%f, "p99_ms": %%f}\n',
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3))
end
"""


class Loaded(Protocol):
    """What wrk drives: where it sends requests, and the CPU time of what serves them."""

    @property
    def base(self) -> str: ...

    def cpu_seconds(self) -> float: ...


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


@contextmanager
def uvicorn_server(
    name: str,
    target: str,
    env: dict[str, str],
    factory: bool = False,
    output: IO[bytes] | None = None,
) -> Iterator[Server]:
    port = free_port()
    command = [
        PYTHON,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--no-server-header",
    ]
    if factory:
        command.append("--factory")
    process = subprocess.Popen(
        command, env={**os.environ, **env}, cwd=ROOT, stdout=output, stderr=output
    )
    server = Server(name, process, port)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{name} did not start")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Scenario:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    reads: bool = True

    @property
    def b2_path(self) -> str:
        return f"/b2/{self.name}"


@dataclass
class Measurement:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    errors: int = 0

    def add(self, result: dict[str, Any], cpu_seconds: float) -> None:
        requests = max(1, result["requests"])
        self.rps.append(result["requests"] / result["seconds"])
        self.p50.append(result["p50_ms"])
        self.p95.append(result["p95_ms"])
        self.p99.append(result["p99_ms"])
        self.cpu_us.append(cpu_seconds / requests * 1e6)
        self.errors += result["errors"] + result["non2xx"]

    @staticmethod
    def summary(values: list[float]) -> str:
        if not values:
            return "-"
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median * 100 if median else 0
        return f"{median:,.1f} (±{spread / 2:.0f}%)"

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(self, attribute))


def wrk(
    server: Loaded,
    path: str,
    scenario: Scenario,
    token: str,
    seconds: int,
    connections: int,
    pace_ms: int = 0,
) -> tuple[dict[str, Any], float]:
    body = "nil" if scenario.body is None else json.dumps(json.dumps(scenario.body))
    script = WRK_SCRIPT % {
        "method": scenario.method,
        "body": body,
        "token": token,
        "pace_ms": pace_ms,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    before = server.cpu_seconds()
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", handle.name, server.base + path],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    cpu = server.cpu_seconds() - before
    os.unlink(handle.name)
    return json.loads(output.strip().splitlines()[-1]), cpu


def deep_cursor(url: str) -> str:
    """The cursor of the default sort, 100,000 rows into project P001."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        in_project = connection.execute(
            sa.text("SELECT last_issue_number FROM project WHERE key = 'P001'")
        ).scalar_one()
        row = connection.execute(
            sa.text(
                "SELECT i.updated_at, i.id FROM issue i JOIN project p ON p.id = i.project_id "
                "WHERE p.key = 'P001' ORDER BY i.updated_at DESC, i.id DESC OFFSET :n LIMIT 1"
            ),
            {"n": min(DEEP_ROWS, in_project - 100) - 1},
        ).one()
    engine.dispose()
    key = cursor_key(Settings(database_url=url, cursor_secret=CURSOR_SECRET))
    return encode_cursor(
        key, "/api/v1/projects/P001/issues", "-updated_at", [row[0].isoformat(), row[1]]
    )


def scenarios(url: str) -> list[Scenario]:
    deep = deep_cursor(url)
    return [
        Scenario("get_issue", "GET", "/api/v1/issues/P002-5"),
        Scenario(
            "list_filtered",
            "GET",
            "/api/v1/projects/P001/issues?status=open&priority=high&sort=-updated_at&limit=50",
        ),
        Scenario("list_page1", "GET", "/api/v1/projects/P001/issues?limit=50"),
        Scenario("list_deep", "GET", f"/api/v1/projects/P001/issues?limit=50&cursor={deep}"),
        Scenario("search_rare", "GET", f"/api/v1/projects/P001/issues?q={RARE_TERM}&limit=50"),
        Scenario("search_common", "GET", f"/api/v1/projects/P001/issues?q={COMMON_TERM}&limit=50"),
        Scenario(
            "create_issue",
            "POST",
            "/api/v1/projects/P003/issues",
            {"title": "Benchmark issue", "description": "made by the benchmark"},
            reads=False,
        ),
        Scenario(
            "add_comment",
            "POST",
            "/api/v1/issues/P003-1/comments",
            {"body": "A comment from the benchmark"},
            reads=False,
        ),
    ]


async def record_service_sql(
    settings: Settings, token: str, cases: list[Scenario]
) -> dict[str, Any]:
    """The statements the service runs for each scenario, captured from its own engine."""
    app = create_app(settings)
    recorded: dict[str, Any] = {}
    current: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        current.append((statement, parameters))

    headers = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await client.get("/api/v1/users/me", headers=headers)  # mirror the caller first
            sa.event.listen(app.services.engine.sync_engine, "before_cursor_execute", capture)
            for case in cases:
                current.clear()
                response = await client.request(
                    case.method, case.path, json=case.body, headers=headers
                )
                assert response.status_code < 300, (case.name, response.status_code, response.text)
                recorded[case.name] = {
                    "statements": [[s, json.loads(json.dumps(p, default=str))] for s, p in current],
                    "rollback": not case.reads,
                }
    return recorded


def service_env(url: str, jwks: JwksServer) -> dict[str, str]:
    """The service's environment in every measurement: limits far above the load's rate."""
    return {
        "FLYSWATTER_DATABASE_URL": url,
        "FLYSWATTER_KEYCLOAK_URL": jwks.base_url,
        "FLYSWATTER_LOG_LEVEL": "warning",
        "FLYSWATTER_RATE_LIMIT_READS": "100000000/minute",
        "FLYSWATTER_RATE_LIMIT_WRITES": "100000000/minute",
        "FLYSWATTER_DATABASE_POOL_SIZE": "10",
        # serve refuses to start without them.
        "FLYSWATTER_CURSOR_SECRET": CURSOR_SECRET,
        "FLYSWATTER_WEBHOOK_SECRET_KEYS": json.dumps([Fernet.generate_key().decode()]),
    }


def ensure_wrk() -> None:
    """wrk, Debian's package, installed when missing and this may (root with apt-get): the
    benchmark is one command on a new machine, as the test suite is."""
    if shutil.which("wrk") is not None:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install wrk)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

        def apt_get(*words: str) -> None:
            subprocess.run(["apt-get", *words], env=env, stdout=subprocess.DEVNULL, check=False)

        apt_get("install", "-y", "-q", "wrk")
        if shutil.which("wrk") is None:  # a new machine may have no package lists yet
            apt_get("update", "-q")
            apt_get("install", "-y", "-q", "wrk")
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    ensure_wrk()
    server_url = args.database_server
    jwks = JwksServer()
    jwks.start()
    tokens = TokenFactory(jwks)
    now = int(time.time())
    token = tokens.sign(
        tokens.claims(
            sub=BENCH_USER,
            preferred_username="user1",
            exp=now + 6 * 3600,
            realm_access={"roles": []},
        )
    )
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        # The machine is shared: how busy it was says how far to trust the figures.
        "load_average": {"start": os.getloadavg()},
        "rounds": args.rounds,
        "seconds": args.seconds,
        "connections": args.connections,
        "parts": [part for part in PARTS if part in args.only],
        "sizes": {},
    }
    urls = {size: ensure_database(server_url, f"flyswatter_bench_{size}") for size in args.sizes}
    if not args.reseed:
        # Checked for every size before anything is measured, so a run stops at once.
        for size, url in urls.items():
            found = issue_count(url)
            if found not in (None, size):
                sys.exit(
                    f"flyswatter_bench_{size} holds {found:,} issues, not {size:,} (written by "
                    "something other than this benchmark, which undoes its own writes); "
                    "rerun with --reseed to rebuild it"
                )
    seeded = {size: seed(url, size) for size, url in urls.items()}
    with ExitStack() as undo:
        for url in urls.values():
            undo.enter_context(writes_undone(url))
        for size, url in urls.items():
            if "endpoints" in args.only:
                report["sizes"][str(size)] = measure_size(
                    args, url, jwks, token, size, seeded[size]
                )
        # Neither depends on the number of issues: the stack on the smallest database (its
        # routes barely query), the scrape on the largest (where the benchmark's writes go).
        if "stack" in args.only:
            from bench.stack import measure_stack

            report["stack"] = measure_stack(args, urls[min(args.sizes)], jwks, token)
        if "metrics" in args.only:
            from bench.scrape import measure_metrics

            report["metrics"] = measure_metrics(args, urls[max(args.sizes)], jwks, token)
    jwks.stop()
    report["load_average"]["end"] = os.getloadavg()
    return report


# Children first: the benchmark's issues, their comments and activity, and comments it adds
# to existing issues. Ids only grow, so its rows are those above each table's highest id.
WRITTEN_TABLES = ("activity", "comment", "issue")


@contextmanager
def writes_undone(url: str) -> Iterator[None]:
    """Delete what the benchmark's writes added once the run is over, however it ends.

    ``seed`` rebuilds a database whose issue count is not the size asked for, so without
    this every run that creates issues would make the next one reseed (long at 1M issues).
    """
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        marks = {
            table: connection.execute(
                sa.text(f"SELECT coalesce(max(id), 0) FROM {table}")
            ).scalar_one()
            for table in WRITTEN_TABLES
        }
        numbers = connection.execute(sa.text("SELECT id, last_issue_number FROM project")).all()
    try:
        yield
    finally:
        with engine.begin() as connection:
            for table in WRITTEN_TABLES:
                connection.execute(
                    sa.text(f"DELETE FROM {table} WHERE id > :mark"), {"mark": marks[table]}
                )
            connection.execute(
                sa.text("UPDATE project SET last_issue_number = :number WHERE id = :id"),
                [{"id": id_, "number": number} for id_, number in numbers],
            )
        engine.dispose()


def commit() -> str:
    """HEAD, and whether the measured tree differed from it (files tracked by git)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    # The benchmark's own output files are not what it measured.
    outputs = [f":(exclude)bench/{name}" for name in ("RESULTS.md", "REPORTS.md", "results.json")]
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *outputs],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return f"{head} + uncommitted changes" if changed else head


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    return platform.machine()


def measure_size(
    args: argparse.Namespace, url: str, jwks: JwksServer, token: str, size: int, seeded: float
) -> dict[str, Any]:
    env = service_env(url, jwks)
    settings = Settings(
        database_url=url,
        keycloak_url=jwks.base_url,
        rate_limit_enabled=False,
        cursor_secret=CURSOR_SECRET,
    )
    cases = scenarios(url)
    if size != max(args.sizes):
        cases = [case for case in cases if case.reads]  # scaling: reads only
    recorded = asyncio.run(record_service_sql(settings, token, cases))
    sql_file = Path(tempfile.mkstemp(suffix=".json")[1])
    sql_file.write_text(json.dumps(recorded))
    results: dict[str, Any] = {"seed_seconds": round(seeded, 1), "scenarios": {}}
    with (
        uvicorn_server("service", "flyswatter.app:create_app", env, factory=True) as service,
        uvicorn_server("B1", "bench.baselines:b1_app", env) as b1,
        uvicorn_server(
            "B2", "bench.baselines:b2_app", {**env, "BENCH_B2_SQL": str(sql_file)}
        ) as b2,
    ):
        bare = Scenario("bare", "GET", "/json")
        me = Scenario("stack", "GET", "/api/v1/users/me")
        pairs: list[tuple[Scenario, Server, str, Server, str]] = [
            (me, service, me.path, b1, bare.path)
        ] + [(case, service, case.path, b2, case.b2_path) for case in cases]
        # Warm-up, discarded: imports, pools, plans and caches.
        for case, left, left_path, right, right_path in pairs:
            wrk(left, left_path, case, token, 2, args.connections)
            wrk(right, right_path, case, token, 2, args.connections)
        measured = {case.name: (Measurement(), Measurement()) for case, *_ in pairs}
        for round_number in range(args.rounds):
            print(f"size {size:,}: round {round_number + 1}/{args.rounds}", flush=True)
            for case, left, left_path, right, right_path in pairs:
                ours, base = measured[case.name]
                for server, path, target in ((left, left_path, ours), (right, right_path, base)):
                    result, cpu = wrk(server, path, case, token, args.seconds, args.connections)
                    target.add(result, cpu)
        for case, *_ in pairs:
            ours, base = measured[case.name]
            results["scenarios"][case.name] = {
                "baseline": "B1" if case is me else "B2",
                "service": ours.__dict__,
                "base": base.__dict__,
                "throughput_ratio": ours.median("rps") / base.median("rps"),
                "cpu_ratio": ours.median("cpu_us") / base.median("cpu_us"),
            }
        # Tail latency at 70% of the service's peak on the main list.
        peak = statistics.median(measured["list_filtered"][0].rps)
        pace_connections = 8
        pace_ms = int(pace_connections * 1000 / (0.7 * peak))
        paced, _ = wrk(
            service, cases[1].path, cases[1], token, args.seconds, pace_connections, pace_ms
        )
        results["paced_70pct"] = {"target_rps": 0.7 * peak, **paced}
        # Search latency as one user sees it: one connection, so no request waits behind
        # another (with 16 connections on one process, p95 is mostly queueing).
        results["one_client"] = {}
        for case in cases:
            if case.name.startswith("search"):
                alone = [
                    wrk(service, case.path, case, token, args.seconds, 1)[0]
                    for _ in range(args.rounds)
                ]
                results["one_client"][case.name] = {
                    name: statistics.median(run[name] for run in alone)
                    for name in ("p50_ms", "p95_ms", "p99_ms")
                }
        results["rss_mib"] = {"service": service.rss_mib(), "B1": b1.rss_mib(), "B2": b2.rss_mib()}
    sql_file.unlink()
    return results


def write_results(report: dict[str, Any], path: Path) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Measured {report['date']} at commit `{report['commit']}` on {report['machine']}",
        f"(parts: {', '.join(report.get('parts', PARTS))}; load average {load_average(report)});",
        f"{report['rounds']} rounds of {report['seconds']} s per endpoint, wrk with one thread and "
        f"{report['connections']} keep-alive connections on loopback, one uvicorn process per server.",
        "Figures are medians over rounds (± half the spread). CPU is the server process's user+system",
        "time per request. B1: bare Starlette JSON; B2: the service's SQL behind the same token check.",
        "",
        *PARTS_ON_THEIR_OWN,
        "",
    ]
    for size, result in report["sizes"].items():
        lines += [
            f"## {int(size):,} issues (seeded in {result['seed_seconds']} s; 0 = reused)",
            "",
            "| endpoint | req/s | base req/s | ratio | p50 ms | p95 ms | p99 ms | CPU µs/req | base CPU µs/req |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, scenario in result["scenarios"].items():
            ours, base = Measurement(**scenario["service"]), Measurement(**scenario["base"])
            lines.append(
                f"| {name} (vs {scenario['baseline']}) | {Measurement.summary(ours.rps)} | "
                f"{Measurement.summary(base.rps)} | {scenario['throughput_ratio']:.2f} | "
                f"{Measurement.summary(ours.p50)} | {Measurement.summary(ours.p95)} | "
                f"{Measurement.summary(ours.p99)} | {Measurement.summary(ours.cpu_us)} | "
                f"{Measurement.summary(base.cpu_us)} |"
            )
        paced = result["paced_70pct"]
        lines += [
            "",
            f"At 70% of peak on list_filtered ({paced['target_rps']:.0f} req/s target, "
            f"{paced['requests'] / paced['seconds']:.0f} achieved): p50 {paced['p50_ms']:.2f} ms, "
            f"p99 {paced['p99_ms']:.2f} ms (p99/p50 = {paced['p99_ms'] / paced['p50_ms']:.1f}).",
            f"Resident memory (MiB): {json.dumps({k: round(v, 1) for k, v in result['rss_mib'].items()})}.",
            "",
        ]
        alone = result.get("one_client", {})
        if alone:
            lines += [
                "Search with one client (one connection; medians over rounds; target p95 <= "
                f"{SEARCH_P95_TARGET_MS:.0f} ms at 1M issues): "
                + "; ".join(
                    f"{name} p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms, "
                    f"p99 {figures['p99_ms']:.1f} ms"
                    + (
                        f" ({verdict(figures['p95_ms'] <= SEARCH_P95_TARGET_MS)})"
                        if int(size) >= 1_000_000
                        else ""
                    )
                    for name, figures in alone.items()
                )
                + ".",
                "",
            ]
    if "stack" in report:
        lines += stack_section(report["stack"], report)
    if "metrics" in report:
        lines += metrics_section(report["metrics"], report)
    from bench.sections import kept_sections

    # The parts run on their own keep their sections (and their own dates) at the end.
    path.write_text("\n".join([*lines, *kept_sections(path)]) + "\n")


def load_average(report: dict[str, Any]) -> str:
    load = report.get("load_average")
    if not load:
        return "not recorded"
    start, end = load["start"], load.get("end", load["start"])
    return f"{start[0]:.1f} at the start, {end[0]:.1f} at the end, over 1 min"


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def stack_section(stack: dict[str, Any], report: dict[str, Any]) -> list[str]:
    target = stack["target_us"]
    lines = [
        f"## Middleware stack (target: <= {target:.0f} µs of CPU per request)",
        "",
        "The same app and route in one uvicorn process per variant, on the smallest database, "
        f"{report['rounds']} interleaved rounds of {report['seconds']} s each:",
        "",
    ]
    lines += [f"- {name}: {doc}" for name, doc in stack["variants"].items()]
    lines += [
        "",
        "Overhead = the variant's CPU µs/request minus the bare variant's in the same round; "
        "median (lowest..highest) over rounds.",
        "",
        "| route | variant | req/s | p50 ms | CPU µs/req | overhead µs/req | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for route, result in stack["routes"].items():
        for name, measured in result["variants"].items():
            figures = Measurement(**measured)
            differences = result["cpu_us_over_bare"].get(name)
            if differences:
                median = statistics.median(differences)
                overhead = f"{median:,.1f} ({min(differences):,.1f}..{max(differences):,.1f})"
                met = verdict(median <= target)
            else:
                overhead, met = "-", "-"
            lines.append(
                f"| {route} | {name} | {Measurement.summary(figures.rps)} | "
                f"{Measurement.summary(figures.p50)} | {Measurement.summary(figures.cpu_us)} | "
                f"{overhead} | {met} |"
            )
    in_process = stack.get("in_process")
    if in_process:
        lines += [
            "",
            f"Without the server (bench/stackcpu.py): the same variants side by side in one "
            f"process, called through a minimal ASGI driver one request at a time, "
            f"{in_process['rounds']} interleaved rounds of {in_process['requests_per_block']} "
            "requests each; the process's CPU time per request (what uvicorn adds is the same "
            'for every variant). Overhead as above; "of minima": the variant\'s lowest block '
            "minus the bare variant's lowest (noise only ever adds CPU time).",
            "",
            "| route | variant | CPU µs/req | overhead µs/req | of minima | target |",
            "|---|---|---|---|---|---|",
        ]
        for route, result in in_process["routes"].items():
            for name, values in result["cpu_us"].items():
                differences = result["cpu_us_over_bare"].get(name)
                if differences:
                    median = statistics.median(differences)
                    overhead = f"{median:,.1f} ({min(differences):,.1f}..{max(differences):,.1f})"
                    of_minima = f"{min(values) - min(result['cpu_us']['bare']):,.1f}"
                    met = verdict(median <= target)
                else:
                    overhead, of_minima, met = "-", "-", "-"
                lines.append(
                    f"| {route} | {name} | {Measurement.summary(values)} | {overhead} | "
                    f"{of_minima} | {met} |"
                )
    probe = next(iter(stack["routes"].values()))["variants"]
    measured = {"under uvicorn": {name: m["cpu_us"] for name, m in probe.items()}}
    if in_process:
        measured["in process"] = next(iter(in_process["routes"].values()))["cpu_us"]
    for where, cpu_us in measured.items():
        shares = []
        for piece in stack.get("pieces", {}):
            full, without = cpu_us.get("full_memory"), cpu_us.get(f"without_{piece}")
            if full and without:
                differences = [a - b for a, b in zip(full, without, strict=True)]
                shares.append(f"{piece} {statistics.median(differences):,.1f}")
        if shares:
            lines += [
                "",
                f"Each piece's share on the probe, {where} (full_memory minus the variant "
                "without it, median over rounds, µs/request): " + ", ".join(shares) + ".",
            ]
    return [*lines, ""]


def metrics_section(metrics: dict[str, Any], report: dict[str, Any]) -> list[str]:
    target = metrics["target_ms"]
    rss = metrics["rss_mib"]
    statuses = ", ".join(f"{status}: {n}" for status, n in metrics["traffic_statuses"].items())
    return [
        f"## /metrics with {metrics['workers']} workers (target: scrape <= {target:.0f} ms)",
        "",
        f"`flyswatter serve --workers {metrics['workers']}` (multiprocess metrics, Redis rate "
        "limits, JSON logs at info) on the largest database, after wrk on every read endpoint "
        "and a sweep of every API operation (answers by status: "
        f"{statuses}); then {len(metrics['scrape_ms'])} sequential scrapes, each on a new "
        "connection, timed by the client.",
        "",
        "| median ms | p95 ms | max ms | workers' CPU ms/scrape | body | series | families "
        "| sample files | target |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {metrics['median_ms']:.1f} | {metrics['p95_ms']:.1f} | {metrics['max_ms']:.1f} | "
        f"{metrics['cpu_ms_per_scrape']:.1f} | "
        f"{metrics['body_bytes'] / 1024:,.1f} KiB | {metrics['series']:,} | "
        f"{metrics['families']} | {metrics['sample_files']} "
        f"({metrics['sample_bytes'] / 1024 / 1024:,.1f} MiB) | "
        f"{verdict(metrics['p95_ms'] <= target)} (p95) |",
        "",
        "Samples written per worker: "
        + ", ".join(f"{count:,}" for count in metrics.get("samples_per_worker", []))
        + ". Resident memory per worker (MiB): "
        + ", ".join(f"{value:.1f}" for value in rss["workers"])
        + f"; supervisor {rss['supervisor']:.1f}.",
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--database-server",
        default=os.environ.get(
            "FLYSWATTER_BENCH_DATABASE", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--only",
        type=parts,
        default=PARTS,
        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--scrapes", type=int, default=50, help="sequential GET /metrics timed (metrics part)"
    )
    parser.add_argument(
        "--reseed",
        action="store_true",
        help="rebuild a benchmark database whose issue count is not its size (else stop)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    args.sizes = sorted(args.sizes)
    report = run_benchmark(args)
    args.output.write_text(json.dumps(report, indent=2))
    write_results(report, args.markdown)
    print(args.markdown.read_text())


def parts(value: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [part for part in chosen if part not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}; got {value!r}")
    return chosen
