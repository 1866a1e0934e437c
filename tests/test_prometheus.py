"""A real Prometheus scraping ``flyswatter serve`` with two workers, and the Grafana queries.

One stack for the module: the service (2 workers, PostgreSQL, Redis, the test JWKS as its
Keycloak) and Prometheus (Debian's package) scraping it every second. The fixture drives
traffic that moves every metric and keeps a ledger of every response; the tests compare what
Prometheus stored with the ledger, run every dashboard panel's query, and kill a worker.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.identity import JwksServer, TokenFactory, new_signing_key
from tests.support.jobs import WorkerProcess
from tests.support.prometheus import Prometheus
from tests.support.servers import (
    RedisServer,
    ServedFlyswatter,
    serve_environment,
    served_database,
    system_program,
)

pytestmark = pytest.mark.slow

DASHBOARD = Path(__file__).resolve().parent.parent / "grafana" / "dashboards" / "flyswatter.json"
# What Grafana puts in place of its variables when the whole dashboard is shown.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$route": ".*"}
WRITE_BUDGET = 20


@dataclass
class Ledger:
    """Every response the tests received, as the service should have counted it."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def record(self, method: str, route: str, response: httpx.Response) -> httpx.Response:
        self.requests[(method, route, str(response.status_code))] += 1
        return response

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class Traffic:
    """Requests on fresh connections, so the kernel spreads them over both workers."""

    def __init__(self, base_url: str, ledger: Ledger) -> None:
        self.base_url = base_url
        self.ledger = ledger

    async def send(
        self,
        method: str,
        route: str,
        token: str | None = None,
        values: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        path = route.format(**(values or {}))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=15) as http:
            response = await http.request(method, path, headers=headers, **kwargs)
        return self.ledger.record(method, route, response)


@dataclass
class Stack:
    served: ServedFlyswatter
    prometheus: Prometheus
    ledger: Ledger
    traffic: Traffic
    tokens: TokenFactory
    database_url: str
    metrics_dir: Path
    alice: str
    project_key: str
    jwks_fetches: int = 0


async def drive_traffic(stack: Stack) -> None:
    send, alice, key = stack.traffic.send, stack.alice, stack.project_key
    project = {"key": key}
    assert (
        await send("POST", "/api/v1/projects", alice, json={"key": key, "name": "P"})
    ).status_code == 201
    reads = [
        ("GET", "/api/v1/users/me", {}),
        ("GET", "/api/v1/projects", {}),
        ("GET", "/api/v1/projects/{key}", project),
        ("GET", "/api/v1/projects/{key}/members", project),
    ]
    await asyncio.gather(*(send(m, route, alice, values) for m, route, values in reads * 3))
    issues = []
    for title in ("one", "two", "three"):
        created = await send(
            "POST", "/api/v1/projects/{key}/issues", alice, project, json={"title": title}
        )
        assert created.status_code == 201, created.text
        issues.append({"issue_key": created.json()["key"]})
    for issue, to in [
        (issues[0], "in_progress"),
        (issues[1], "in_progress"),
        (issues[0], "resolved"),
    ]:
        moved = await send(
            "POST", "/api/v1/issues/{issue_key}/transitions", alice, issue, json={"to": to}
        )
        assert moved.status_code == 200, moved.text
    # Not a transition the workflow allows: a 409, and no transition counted.
    illegal = await send(
        "POST", "/api/v1/issues/{issue_key}/transitions", alice, issues[2], json={"to": "resolved"}
    )
    assert illegal.status_code == 409
    # A report, built by the worker (whose metrics Prometheus scrapes too).
    requested = await send("POST", "/api/v1/projects/{key}/reports", alice, project, json={})
    assert requested.status_code == 202, requested.text
    job = {"job_id": requested.json()["id"]}
    for _ in range(600):
        polled = await send("GET", "/api/v1/jobs/{job_id}", alice, job)
        if polled.json()["state"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.2)
    assert polled.json()["state"] == "succeeded", polled.text
    for body in ("first", "second"):
        comment = await send(
            "POST", "/api/v1/issues/{issue_key}/comments", alice, issues[1], json={"body": body}
        )
        assert comment.status_code == 201, comment.text
    await asyncio.gather(
        send("GET", "/api/v1/issues/{issue_key}", alice, issues[0]),
        send("GET", "/api/v1/issues/{issue_key}/comments", alice, issues[1]),
        send("GET", "/api/v1/issues/{issue_key}/activity", alice, issues[0]),
        send("GET", "/api/v1/projects/{key}", alice, {"key": "NOSUCH"}),
    )
    # A path no route matches: one bucket, whatever the path.
    for path in ("/nope", "/api/v1/nope/1"):
        async with httpx.AsyncClient(base_url=stack.served.base_url) as http:
            stack.ledger.record("GET", "<unmatched>", await http.get(path))

    tokens = stack.tokens
    failures = [
        None,
        None,
        "not-a-jwt",
        tokens.user_token("alice", exp=1_000_000, iat=999_000),
        tokens.sign(tokens.claims(sub="x"), key=new_signing_key("never-published")),
    ]
    for token in failures:
        assert (await send("GET", "/api/v1/projects", token)).status_code == 401
    stack.jwks_fetches += 1  # the unknown key made one worker fetch the keys again

    flooder = tokens.service_token(f"flooder-{uuid.uuid4().hex[:6]}")
    statuses = await asyncio.gather(
        *(send("POST", "/api/v1/projects", flooder, json={}) for _ in range(WRITE_BUDGET + 3))
    )
    assert sorted(s.status_code for s in statuses) == [422] * WRITE_BUDGET + [429] * 3

    # The database stops answering in time: a 503 counted as a database error.
    with psycopg.connect(stack.database_url) as blocker:
        blocker.execute("LOCK TABLE project IN ACCESS EXCLUSIVE MODE")
        unavailable = await send("GET", "/api/v1/projects", alice)
        blocker.rollback()
    assert unavailable.status_code == 503

    # Which worker accepts a connection is the kernel's choice, and a busy machine can
    # leave one of them idle throughout: paced reads until both have answered something.
    for _ in range(100):
        if len([count for count in per_worker_requests(stack.metrics_dir).values() if count]) > 1:
            break
        await send("GET", "/api/v1/users/me", alice)
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def stack_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus-stack")


@pytest.fixture(scope="module")
def served_url(database_url: str, migrated_database: str, postgres_url: str) -> Iterator[str]:
    with served_database(database_url, postgres_url) as url:
        yield url


@pytest.fixture(scope="module")
def stack(served_url: str, jwks_server: JwksServer, stack_root: Path) -> Iterator[Stack]:
    # A Redis of this stack's own: rate limits and the job broker start empty.
    redis = RedisServer(stack_root)
    redis.start()
    metrics_dir = stack_root / "metrics"
    metrics_dir.mkdir()
    artifacts = str(stack_root / "artifacts")
    served = ServedFlyswatter(
        database_url=served_url,
        jwks_server=jwks_server,
        log_path=stack_root / "serve.log",
        metrics_dir=metrics_dir,
        rate_limit_writes=f"{WRITE_BUDGET}/hour",
        database_timeout_seconds="2",
        jwks_refresh_min_interval_seconds="0",
        redis_url=redis.url,
        storage_dir=artifacts,
    )
    worker = WorkerProcess(
        serve_environment(database_url=served_url, redis_url=redis.url, storage_dir=artifacts),
        stack_root / "worker.log",
        "--concurrency=1",
    )
    prometheus = Prometheus(
        stack_root, f"127.0.0.1:{served.port}", f"127.0.0.1:{worker.metrics_port}"
    )
    try:
        served.start(timeout=120)
        worker.start()
        prometheus.start()
        ledger = Ledger()
        tokens = TokenFactory(jwks_server)
        stack = Stack(
            served=served,
            prometheus=prometheus,
            ledger=ledger,
            traffic=Traffic(served.base_url, ledger),
            tokens=tokens,
            database_url=served_url,
            metrics_dir=metrics_dir,
            alice=tokens.user_token(f"alice-{uuid.uuid4().hex[:6]}"),
            project_key="P" + uuid.uuid4().hex[:6].upper(),
            jwks_fetches=2,  # each worker loads the keys at start
        )
        asyncio.run(drive_traffic(stack))
        prometheus.wait_for("sum(flyswatter_http_requests_total)", ledger.total)
        yield stack
    finally:
        prometheus.stop()
        worker.stop()
        served.stop()
        redis.stop()


def assert_prometheus_matches_ledger(stack: Stack) -> None:
    prometheus, ledger = stack.prometheus, stack.ledger
    prometheus.wait_for("sum(flyswatter_http_requests_total)", ledger.total)
    expected = {key: float(count) for key, count in ledger.requests.items()}
    labels = ("method", "route", "status")
    assert (
        prometheus.by("sum by (method, route, status) (flyswatter_http_requests_total)", *labels)
        == expected
    )
    by_route: dict[tuple[str, ...], float] = {}
    for (method, route, _status), count in expected.items():
        by_route[(method, route)] = by_route.get((method, route), 0.0) + count
    assert (
        prometheus.by(
            "sum by (method, route) (flyswatter_http_request_duration_seconds_count)",
            "method",
            "route",
        )
        == by_route
    )
    assert prometheus.scalar("sum(flyswatter_http_requests_in_progress)") == 0
    assert prometheus.by("flyswatter_jwks_refreshes_total", "outcome") == {
        ("success",): stack.jwks_fetches
    }


def per_worker_requests(metrics_dir: Path) -> dict[str, float]:
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        counts[path.stem] = sum(
            sample.value
            for metric in MultiProcessCollector.merge([str(path)])
            for sample in metric.samples
            if sample.name == "flyswatter_http_requests_total"
        )
    return counts


def test_prometheus_counts_match_the_requests_sent_to_two_workers(stack: Stack) -> None:
    assert_prometheus_matches_ledger(stack)
    served_by = [pid for pid, count in per_worker_requests(stack.metrics_dir).items() if count]
    assert len(served_by) == 2, "one worker answered everything; nothing was summed"

    prometheus = stack.prometheus
    assert prometheus.by("flyswatter_rate_limited_requests_total", "kind") == {("write",): 3}
    assert prometheus.by("flyswatter_auth_failures_total", "reason") == {
        ("missing",): 2,
        ("malformed",): 1,
        ("expired",): 1,
        ("unknown_key",): 1,
    }
    assert prometheus.scalar("flyswatter_issues_created_total") == 3
    assert prometheus.by("flyswatter_issue_transitions_total", "to") == {
        ("in_progress",): 2,
        ("resolved",): 1,
    }
    assert prometheus.scalar("flyswatter_comments_created_total") == 2
    assert prometheus.by("flyswatter_database_errors_total", "kind") == {("unavailable",): 1}
    assert prometheus.scalar("flyswatter_rate_limit_storage_errors_total") == 0
    # Scrapes and probes are not traffic.
    assert (
        prometheus.query('flyswatter_http_requests_total{route=~"/metrics|/healthz|/readyz"}') == []
    )


def test_metrics_of_two_workers_pass_promtool_check(stack: Stack) -> None:
    exposed = httpx.get(f"{stack.served.base_url}/metrics", timeout=10)
    promtool = system_program("promtool", "prometheus")
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposed.content,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            queries.append((f"{panel['title']} [{target['refId']}]", expr))
    return queries


def test_every_dashboard_panel_query_returns_data(stack: Stack) -> None:
    prometheus = stack.prometheus
    # Rates need two samples of each series inside their window.
    time.sleep(3)
    empty = [title for title, expr in dashboard_queries() if not prometheus.query_range(expr)]
    assert empty == []
    routes = httpx.get(
        f"{prometheus.url}/api/v1/label/route/values",
        params={"match[]": "flyswatter_http_requests_total"},
        timeout=10,
    ).json()["data"]
    assert "/api/v1/projects" in routes
    assert "<unmatched>" in routes


def in_progress_by_worker(metrics_dir: Path) -> dict[int, float]:
    found = {}
    for path in metrics_dir.glob("gauge_livesum_*.db"):
        try:
            metrics = MultiProcessCollector.merge([str(path)])
        except FileNotFoundError:
            continue
        found[int(path.stem.rsplit("_", 1)[1])] = sum(
            sample.value
            for metric in metrics
            for sample in metric.samples
            if sample.name == "flyswatter_http_requests_in_progress"
        )
    return found


async def kill_a_worker_mid_request(stack: Stack) -> int:
    """Hold a request inside one worker (waiting on a locked table), then SIGKILL that worker;
    returns the replacement's pid."""
    served = stack.served
    with psycopg.connect(stack.database_url) as blocker:
        blocker.execute("LOCK TABLE project IN ACCESS EXCLUSIVE MODE")
        async with httpx.AsyncClient(base_url=served.base_url, timeout=15) as http:
            stuck = asyncio.create_task(
                http.get("/api/v1/projects", headers={"Authorization": f"Bearer {stack.alice}"})
            )
            deadline = time.monotonic() + 1.5
            busy: list[int] = []
            while not busy and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                busy = [pid for pid, n in in_progress_by_worker(stack.metrics_dir).items() if n > 0]
            assert busy, "the held request never showed as in progress"
            assert busy[0] in served.worker_pids()
            replacement = await asyncio.to_thread(served.replace_worker, busy[0])
            with pytest.raises(httpx.TransportError):
                await stuck  # its worker died with it: never answered, never counted
        blocker.rollback()
    return replacement


def test_a_worker_killed_mid_request_is_replaced_and_counters_never_go_back(
    stack: Stack,
) -> None:
    prometheus, served = stack.prometheus, stack.served
    assert_prometheus_matches_ledger(stack)
    before = prometheus.scalar("sum(flyswatter_http_requests_total)")

    replacement = asyncio.run(kill_a_worker_mid_request(stack))
    stack.jwks_fetches += 1
    # The replacement has finished starting once it has loaded the signing keys.
    prometheus.wait_for("sum(flyswatter_jwks_refreshes_total)", stack.jwks_fetches)

    async def more_reads() -> None:
        await asyncio.gather(
            *(stack.traffic.send("GET", "/api/v1/projects", stack.alice) for _ in range(12))
        )

    asyncio.run(more_reads())
    assert replacement in served.worker_pids()

    # The killed worker's held request left nothing behind in "in progress" (checked here),
    # and everything it counted before dying is still in the totals.
    assert_prometheus_matches_ledger(stack)
    assert prometheus.scalar("sum(flyswatter_http_requests_total)") == before + 12
    # No scrape ever saw a counter lower than the one before it.
    counters = prometheus.by(
        'count by (__name__) ({__name__=~"flyswatter_.+_(total|count)"})', "__name__"
    )
    assert len(counters) >= 9
    for (name,) in counters:
        assert prometheus.scalar(f"sum(resets({name}[5m]))") == 0, name
