"""What the parts run on their own (``bench.webhooks``, ``bench.sse``, ``bench.fleet``,
``bench.limiter``) share: the run's facts (date, commit, load average), their section of
``bench/RESULTS.md``, and the processes they start (a Redis and a PostgreSQL database of
their own, the test JWKS server).

Each part replaces only its own section of the results file, between two markers, so parts
measured on different days stand side by side; ``python -m bench`` keeps them when it writes
the rest of the file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from bench.bench import commit, cpu_model
from flyswatter import migrations
from flyswatter.config import Settings
from tests.support.identity import JwksServer, TokenFactory
from tests.support.servers import RedisServer, ServedFlyswatter

HERE = Path(__file__).resolve().parent
ROOT_DIR = HERE.parent
RESULTS = HERE / "RESULTS.md"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_MARK = re.compile(r"<!-- part:(\w+) -->\n.*?<!-- /part:\1 -->\n", re.S)


def load() -> float:
    return os.getloadavg()[0]


@dataclass
class RunFacts:
    """When, on what, and how busy the machine was (1-minute load average at each end)."""

    date: str
    commit: str
    machine: str
    load_start: float
    load_end: float = 0.0

    @classmethod
    def now(cls) -> RunFacts:
        return cls(
            date=datetime.now(UTC).isoformat(timespec="seconds"),
            commit=commit(),
            machine=f"{cpu_model()}, {os.cpu_count()} cores",
            load_start=load(),
        )

    def finish(self) -> None:
        self.load_end = load()

    def line(self, command: str) -> str:
        return (
            f"`{command}`, measured {self.date} at commit `{self.commit}` on {self.machine}; "
            f"load average {self.load_start:.1f} at the start, {self.load_end:.1f} at the end "
            "(1 min; the machine is shared, so compare ratios within the run)."
        )


def write_section(name: str, lines: list[str], path: Path = RESULTS) -> None:
    """Replace part ``name``'s section of the results file (appended the first time)."""
    block = f"<!-- part:{name} -->\n" + "\n".join(lines).rstrip("\n") + f"\n<!-- /part:{name} -->\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- part:{name} -->\n.*?<!-- /part:{name} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def kept_sections(path: Path) -> list[str]:
    """The parts' sections of an existing results file, for a rewrite of the rest of it."""
    if not path.exists():
        return []
    return [match.group(0) for match in _MARK.finditer(path.read_text())]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def process_cpu_seconds(pid: int) -> float:
    """A process' user + system CPU time so far (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def group_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += process_cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def children(pid: int) -> list[int]:
    """A process and its descendants (a Celery worker's pool, uvicorn's workers)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for child in (task / "children").read_text().split():
                found += children(int(child))
        except FileNotFoundError:
            continue
    return found


def database_url(name: str) -> str:
    """Database ``name`` on the server of ``FLYSWATTER_BENCH_DATABASE`` (a server's URL, with
    or without a database, as ``python -m bench`` and ``bench.reports`` take it)."""
    server = sa.make_url(os.environ.get("FLYSWATTER_BENCH_DATABASE", DEFAULT_SERVER))
    return server.set(database=name).render_as_string(hide_password=False)


@contextmanager
def fresh_database(name: str) -> Iterator[str]:
    """An empty, migrated database ``name`` on the benchmark's server (the benchmark's
    prefix), dropped after."""
    maintenance = database_url("postgres")
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    try:
        migrations.upgrade(Settings(database_url=url))
        yield url
    finally:
        with psycopg.connect(maintenance, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def private_redis() -> Iterator[str]:
    """A Redis of the run's own (from the test extra's wheel): the shared one is left alone."""
    root = Path(tempfile.mkdtemp(prefix="flyswatter-bench-redis-"))
    server = RedisServer(root)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def identity() -> Iterator[tuple[JwksServer, TokenFactory]]:
    """The test JWKS server as the service's Keycloak, and tokens it signs."""
    jwks = JwksServer()
    jwks.start()
    try:
        yield jwks, TokenFactory(jwks)
    finally:
        jwks.stop()


def served(
    url: str,
    jwks: JwksServer,
    redis_url: str,
    log_path: Path,
    *,
    workers: int,
    metrics_dir: Path | None = None,
    **settings: Any,
) -> ServedFlyswatter:
    """``flyswatter serve`` as the parts run it: rate limits far above any load's rate."""
    return ServedFlyswatter(
        database_url=url,
        jwks_server=jwks,
        log_path=log_path,
        redis_url=redis_url,
        workers=workers,
        metrics_dir=metrics_dir,
        rate_limit_writes="100000000/minute",
        rate_limit_reads="100000000/minute",
        **settings,
    )


def run_part(
    parser: argparse.ArgumentParser,
    name: str,
    measure: Callable[[argparse.Namespace], dict[str, Any]],
    section: Callable[[dict[str, Any]], list[str]],
    argv: list[str] | None,
) -> None:
    """Measure, print the raw figures and the section, and write the section (unless told)."""
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    result = measure(args)
    lines = section(result)
    print(json.dumps(result, default=str))
    print("\n".join(lines))
    if not args.no_write:
        write_section(name, lines)
