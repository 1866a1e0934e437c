"""Report-building benchmark: one project of 10,000 and of 100,000 issues on PostgreSQL.

For each size, a fresh worker process (a real Celery worker on the in-memory transport, as
``flyswatter dev`` runs it) builds the report of the whole project for the default period
and for a year, and prints the task's run time and the process' peak resident memory::

    .venv/bin/python -m bench.reports            # 10k and 100k, results in bench/REPORTS.md
    .venv/bin/python -m bench.reports --sizes 10000 --runs 1

PostgreSQL from ``FLYSWATTER_BENCH_DATABASE`` (default the local server's
``flyswatter_bench_reports`` database, made when missing and seeded once per size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from flyswatter import migrations
from flyswatter.config import Settings

HERE = Path(__file__).resolve().parent
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "flyswatter_bench_reports"
PROJECT = "BENCH"
PEOPLE = 40


def ensure_database(server: str, name: str) -> str:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def seed(url: str, size: int) -> None:
    """A project ``BENCH`` with ``size`` issues over the last 400 days (reused when it fits)."""
    settings = Settings(database_url=url)
    migrations.upgrade(settings)
    engine = sa.create_engine(settings.sync_database_url)
    with engine.begin() as connection:
        current = connection.execute(
            sa.text("SELECT last_issue_number FROM project WHERE key = :key"), {"key": PROJECT}
        ).scalar()
        if current == size:
            return
        connection.execute(sa.text("DELETE FROM job"))
        connection.execute(sa.text("DELETE FROM artifact"))
        connection.execute(sa.text("DELETE FROM project WHERE key = :key"), {"key": PROJECT})
        connection.execute(
            sa.text(
                'INSERT INTO "user" (id, username, email, name, is_service_account, '
                "created_at, updated_at) SELECT 'bench-' || n, 'bench' || n, NULL, "
                "'Bench Person ' || n, false, now(), now() FROM generate_series(1, :people) n "
                "ON CONFLICT (id) DO NOTHING"
            ),
            {"people": PEOPLE},
        )
        project_id = connection.execute(
            sa.text(
                "INSERT INTO project (key, name, description, created_by, archived, "
                "last_issue_number, created_at, updated_at) VALUES (:key, 'Benchmark', '', "
                "'bench-1', false, :size, now(), now()) RETURNING id"
            ),
            {"key": PROJECT, "size": size},
        ).scalar()
        connection.execute(
            sa.text(
                "INSERT INTO project_member (project_id, user_id, role, created_at) "
                "SELECT :project, 'bench-' || n, 'developer', now() "
                "FROM generate_series(1, :people) n"
            ),
            {"project": project_id, "people": PEOPLE},
        )
        # Statuses, priorities, types and assignees cycle at co-prime periods; creation times
        # spread over 400 days; a closed issue closed a few days after it was opened.
        connection.execute(
            sa.text(
                "INSERT INTO issue (project_id, number, title, description, type, priority, "
                "priority_rank, status, reporter_id, assignee_id, created_at, updated_at, "
                "closed_at, version) "
                "SELECT :project, n, 'Issue ' || n || ' — crash when saving Ωμέγα', '', "
                "(ARRAY['bug','feature','task'])[1 + n % 3], "
                "(ARRAY['low','medium','high','critical'])[1 + n % 4], n % 4, "
                "(ARRAY['open','in_progress','resolved','closed','closed'])[1 + n % 5], "
                "'bench-' || (1 + n % :people), "
                "CASE WHEN n % 7 = 0 THEN NULL ELSE 'bench-' || (1 + n % 11) END, "
                "now() - (n * 400.0 / :size) * interval '1 day', now(), "
                "CASE WHEN n % 5 >= 3 THEN now() - (n * 400.0 / :size - 3) * interval '1 day' END, "
                "1 FROM generate_series(1, :size) n"
            ),
            {"project": project_id, "size": size, "people": PEOPLE},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE issue"))
    engine.dispose()


# The measured process: a real worker on the in-memory transport builds one report.
CHILD = r"""
import json, resource, sys, time
import sqlalchemy as sa
import flyswatter.tables  # every table on the metadata: the job's foreign keys resolve
from flyswatter.config import Settings
from flyswatter.db import utcnow
from flyswatter.jobs.worker import InProcessWorker, make_celery, publish_job
from flyswatter.jobs.models import Job, JobKind, ReportParameters
from sqlmodel import Session, select

url, storage, body = sys.argv[1], sys.argv[2], sys.argv[3]
settings = Settings(database_url=url, storage_dir=storage)
engine = sa.create_engine(settings.sync_database_url)
with Session(engine) as session:
    project_id = session.exec(sa.text("SELECT id FROM project WHERE key = 'BENCH'")).scalar()
    job = Job(public_id=utcnow().strftime("%H%M%S%f").ljust(32, "0")[:32], kind=JobKind.report,
              project_id=project_id, requested_by="bench-1",
              parameters=ReportParameters.model_validate_json(body).model_dump_json(
                  by_alias=True, exclude_defaults=True))
    session.add(job)
    session.commit()
    public_id = job.public_id
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with InProcessWorker(make_celery(settings)):
    publish_job(make_celery(settings), public_id)
    while True:
        with Session(engine) as session:
            job = session.exec(select(Job).where(Job.public_id == public_id)).one()
        if job.state in ("succeeded", "failed"):
            break
        time.sleep(0.05)
size = engine.connect().execute(
    sa.text("SELECT size FROM artifact WHERE id = :id"), {"id": job.artifact_id}).scalar()
print(json.dumps({
    "state": job.state, "error": job.error,
    "seconds": (job.finished_at - job.started_at).total_seconds(),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_before_mib": rss_before / 1024,
    "pdf_bytes": size,
}))
"""


def build_once(url: str, body: dict[str, Any], storage: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(storage), json.dumps(body)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLYSWATTER_")},
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if measured["state"] != "succeeded":
        raise SystemExit(f"the report failed: {measured['error']}")
    return measured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3, help="builds per size and period")
    parser.add_argument("--output", type=Path, default=HERE / "REPORTS.md")
    args = parser.parse_args(argv)
    server = os.environ.get("FLYSWATTER_BENCH_DATABASE", DEFAULT_SERVER)
    url = ensure_database(server, DATABASE)
    storage = Path(tempfile.mkdtemp(prefix="flyswatter-bench-artifacts-"))
    year_ago = datetime.fromtimestamp(time.time() - 365 * 86_400, UTC)
    periods = {"last 30 days (default)": {}, "last 365 days": {"from": year_ago.isoformat()}}
    rows = []
    for size in args.sizes:
        started = time.perf_counter()
        seed(url, size)
        print(f"{size} issues seeded in {time.perf_counter() - started:.1f} s", flush=True)
        for label, body in periods.items():
            runs = [build_once(url, body, storage) for _ in range(args.runs)]
            best = min(runs, key=lambda run: run["seconds"])
            rows.append((size, label, best, max(run["peak_rss_mib"] for run in runs)))
            print(
                f"{size:>7} {label:<24} build {best['seconds']:.2f} s (best of {args.runs}), "
                f"peak RSS {rows[-1][3]:.0f} MiB, PDF {best['pdf_bytes'] / 1024:.0f} KiB",
                flush=True,
            )
    lines = [
        "# Report building",
        "",
        f"`python -m bench.reports`, {datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
        f"{os.cpu_count()} cores, PostgreSQL; one project holding all the issues; the report",
        "table keeps its default limit (1,000 rows). Time: the task's run (claim to commit,",
        "queries, PDF, storage), best of the runs. Memory: the worker process' peak RSS.",
        "",
        "| issues | period | build time | worker peak RSS | PDF size |",
        "|---:|---|---:|---:|---:|",
    ]
    for size, label, best, peak in rows:
        lines.append(
            f"| {size:,} | {label} | {best['seconds']:.2f} s | {peak:.0f} MiB | "
            f"{best['pdf_bytes'] / 1024:.0f} KiB |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
