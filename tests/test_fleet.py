"""A fleet: three ``flyswatter serve`` replicas (two workers each) behind HAProxy, two
``flyswatter worker`` processes (one with beat), one PostgreSQL and one Redis, and a real
Prometheus scraping every replica.

What one process could keep in its memory must hold across the fleet: the write budget, the
``Idempotency-Key`` records, the live stream, the webhook deliveries and the request counts.
The last test restarts every replica in turn under load (as an orchestrator does: out of
rotation, SIGTERM, started, back in), and kills a worker mid-report.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from flyswatter.config import Settings
from flyswatter.jobs.worker import make_celery
from tests.support.balancer import Balancer
from tests.support.database import seed_issues
from tests.support.identity import JwksServer, TokenFactory
from tests.support.jobs import WorkerProcess
from tests.support.prometheus import Prometheus
from tests.support.servers import (
    RedisServer,
    ServedFlyswatter,
    scratch_database,
    serve_environment,
)
from tests.webhook_receiver import WebhookReceiver, running_receiver

pytestmark = pytest.mark.slow

REPLICAS = 3
WRITE_BUDGET = 30
PROJECT = "FLEET"


@dataclass
class Fleet:
    root: Path
    database_url: str
    redis_url: str
    replicas: list[ServedFlyswatter]
    workers: list[WorkerProcess]
    balancer: Balancer
    prometheus: Prometheus
    receiver: WebhookReceiver
    tokens: TokenFactory
    # Every answer the balancer gave the tests, as (method, route, status).
    ledger: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def headers(self, username: str = "fleet-owner") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.user_token(username)}"}

    async def send(
        self,
        method: str,
        route: str,
        values: dict[str, str],
        *,
        to: ServedFlyswatter | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Through the balancer (or ``to`` one replica), on a fresh connection, so that round
        robin spreads them; every answer goes in the ledger."""
        kwargs.setdefault("headers", self.headers())
        base_url = self.balancer.url if to is None else to.base_url
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            response = await http.request(method, route.format(**values), **kwargs)
        self.ledger[(method, route, str(response.status_code))] += 1
        return response


@pytest.fixture(scope="module")
def fleet(
    postgres_url: str, jwks_server: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    redis = RedisServer(root)
    redis.start()
    artifacts = str(root / "artifacts")
    webhooks: dict[str, object] = {
        "webhook_allow_http": "true",
        "webhook_allowed_networks": '["127.0.0.1/32"]',
        "webhook_sweep_interval_seconds": "0.5",
    }
    replicas: list[ServedFlyswatter] = []
    workers: list[WorkerProcess] = []
    balancer = prometheus = None
    try:
        with scratch_database(postgres_url) as url, running_receiver() as receiver:
            for index in range(REPLICAS):
                metrics = root / f"metrics-{index}"
                metrics.mkdir()
                replicas.append(
                    ServedFlyswatter(
                        database_url=url,
                        jwks_server=jwks_server,
                        log_path=root / f"serve-{index}.log",
                        metrics_dir=metrics,
                        redis_url=redis.url,
                        storage_dir=artifacts,
                        rate_limit_writes=f"{WRITE_BUDGET}/hour",
                        rate_limit_reads="100000/hour",
                        **webhooks,
                    )
                )
                replicas[-1].start(timeout=180)
            environment = serve_environment(
                database_url=url,
                redis_url=redis.url,
                storage_dir=artifacts,
                report_table_limit="6000",
                job_visibility_timeout_seconds="5",
                **webhooks,
            )
            for index in range(2):
                beat = ["--beat"] if index == 0 else []
                workers.append(
                    WorkerProcess(
                        environment,
                        root / f"worker-{index}.log",
                        "--concurrency=1",
                        f"--hostname=fleet{index}@%h",
                        *beat,
                    )
                )
                workers[-1].start()
            balancer = Balancer(root, [replica.port for replica in replicas])
            balancer.start()
            prometheus = Prometheus(root, *(f"127.0.0.1:{replica.port}" for replica in replicas))
            prometheus.start()
            yield Fleet(
                root=root,
                database_url=url,
                redis_url=redis.url,
                replicas=replicas,
                workers=workers,
                balancer=balancer,
                prometheus=prometheus,
                receiver=receiver,
                tokens=TokenFactory(jwks_server),
            )
    finally:
        for process in (prometheus, balancer, *workers, *replicas):
            if process is not None:
                process.stop()
        redis.stop()


@pytest.fixture(scope="module")
async def project(fleet: Fleet) -> str:
    created = await fleet.send(
        "POST", "/api/v1/projects", {}, json={"key": PROJECT, "name": "Fleet"}
    )
    assert created.status_code == 201, created.text
    hook = await fleet.send(
        "POST",
        "/api/v1/projects/{key}/webhooks",
        {"key": PROJECT},
        json={"url": fleet.receiver.url},
    )
    assert hook.status_code == 201, hook.text
    fleet.receiver.secrets.append(hook.json()["secret"])
    return PROJECT


async def test_the_write_budget_holds_across_the_fleet_whichever_replica_answers(
    fleet: Fleet, project: str
) -> None:
    flooder = {"Authorization": f"Bearer {fleet.tokens.service_token('fleet-flooder')}"}
    answers = await asyncio.gather(
        *(
            fleet.send("POST", "/api/v1/projects", {}, json={}, headers=flooder)
            for _ in range(WRITE_BUDGET + 5)
        )
    )
    assert sorted(answer.status_code for answer in answers) == [422] * WRITE_BUDGET + [429] * 5
    # Every replica answered some of them: no one process' own count could have said this.
    attempts = 'flyswatter_http_requests_total{method="POST",route="/api/v1/projects"}'
    sent = sum(
        n
        for (method, route, _), n in fleet.ledger.items()
        if route == "/api/v1/projects" and method == "POST"
    )
    # Until a scrape of every replica after the flood is stored.
    fleet.prometheus.wait_for(f"sum({attempts})", sent)
    per_replica = fleet.prometheus.by(f"sum by (instance) ({attempts})", "instance")
    assert len(per_replica) == REPLICAS, per_replica
    assert all(per_replica.values()), per_replica


async def test_one_idempotency_key_sent_to_every_replica_creates_one_issue(
    fleet: Fleet, project: str
) -> None:
    headers = {**fleet.headers(), "Idempotency-Key": f"fleet-{uuid.uuid4().hex}"}
    body = {"title": "Sent to every replica"}
    answers = [
        await fleet.send(
            "POST",
            "/api/v1/projects/{key}/issues",
            {"key": project},
            to=replica,
            json=body,
            headers=headers,
        )
        for replica in fleet.replicas
    ]
    assert [answer.status_code for answer in answers] == [201] * REPLICAS
    assert len({answer.json()["key"] for answer in answers}) == 1
    assert len({answer.content for answer in answers}) == 1
    listed = await fleet.send(
        "GET", "/api/v1/projects/{key}/issues", {"key": project}, params={"q": "every replica"}
    )
    assert [issue["title"] for issue in listed.json()["items"]] == [body["title"]]


async def first_event(source: AsyncIterator[Any]) -> dict[str, Any]:
    with anyio.fail_after(30):
        async for event in source:
            if event.data:
                return dict(event.json())
    raise AssertionError("the stream ended")


async def test_an_event_written_through_one_replica_reaches_a_stream_on_another(
    fleet: Fleet, project: str
) -> None:
    writer, reader = fleet.replicas[0], fleet.replicas[-1]
    async with (
        httpx.AsyncClient(base_url=reader.base_url, timeout=30) as streaming,
        aconnect_sse(
            streaming, "GET", f"/api/v1/projects/{project}/events", headers=fleet.headers()
        ) as source,
    ):
        assert source.response.status_code == 200
        created = await fleet.send(
            "POST",
            "/api/v1/projects/{key}/issues",
            {"key": project},
            to=writer,
            json={"title": "Seen on another replica"},
        )
        assert created.status_code == 201, created.text
        event = await first_event(source.aiter_sse())
    # Counted by the reader's replica once the stream is closed.
    fleet.ledger[("GET", "/api/v1/projects/{key}/events", "200")] += 1
    assert event["data"]["issue"]["key"] == created.json()["key"]


async def test_each_event_is_delivered_to_the_webhook_once_whatever_the_workers(
    fleet: Fleet, project: str
) -> None:
    keys = []
    for number in range(6):
        created = await fleet.send(
            "POST",
            "/api/v1/projects/{key}/issues",
            {"key": project},
            json={"title": f"Delivered {number}"},
        )
        assert created.status_code == 201, created.text
        keys.append(created.json()["key"])

    def delivered() -> list[str]:
        return [
            received.event["data"]["issue"]["key"]
            for received in fleet.receiver.received
            if received.event["type"] == "issue.created"
        ]

    for _ in range(600):
        if set(keys) <= set(delivered()):
            break
        await anyio.sleep(0.1)
    assert set(keys) <= set(delivered())
    # Several sweeps later, by either worker: still once each.
    await anyio.sleep(3)
    ids = [received.webhook_id for received in fleet.receiver.received]
    assert len(ids) == len(set(ids))
    assert Counter(delivered()) == Counter(set(delivered()))
    assert not fleet.receiver.rejected


async def test_prometheus_sums_every_replica_to_exactly_the_requests_sent(
    fleet: Fleet, project: str
) -> None:
    values = {"key": project}
    for _ in range(4):
        await fleet.send("GET", "/api/v1/projects/{key}", values)
        await fleet.send("GET", "/api/v1/projects/{key}/issues", values)
    assert (await fleet.send("GET", "/api/v1/projects/{key}", {"key": "NOSUCH"})).status_code == 404
    sent = dict(fleet.ledger)
    fleet.prometheus.wait_for("sum(flyswatter_http_requests_total)", sum(sent.values()))
    counted = fleet.prometheus.by(
        "sum by (method, route, status) (flyswatter_http_requests_total)",
        "method",
        "route",
        "status",
    )
    assert {labels: value for labels, value in counted.items() if value} == {
        labels: float(count) for labels, count in sent.items()
    }


async def steady_load(fleet: Fleet, issue_key: str, stop: anyio.Event) -> Counter[int]:
    """Reads and idempotent writes through the balancer until ``stop``, four at a time."""
    statuses: Counter[int] = Counter()

    async def one_client(number: int) -> None:
        headers = fleet.headers(f"loader-{number}")
        writes = 0
        async with httpx.AsyncClient(base_url=fleet.balancer.url, timeout=30) as http:
            while not stop.is_set():
                read = await http.get(f"/api/v1/issues/{issue_key}", headers=headers)
                statuses[read.status_code] += 1
                if writes < WRITE_BUDGET // 2:
                    writes += 1
                    wrote = await http.post(
                        f"/api/v1/issues/{issue_key}/comments",
                        json={"body": f"load {number}.{writes}"},
                        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                    )
                    statuses[wrote.status_code] += 1

    async with anyio.create_task_group() as group:
        for number in range(4):
            group.start_soon(one_client, number)
    return statuses


async def test_a_rolling_restart_fails_no_request_and_a_killed_worker_loses_no_job(
    fleet: Fleet, project: str
) -> None:
    # Readers of the issue: members, so that load and report see the same project.
    for number in range(4):
        user_id = (
            await fleet.send(
                "GET", "/api/v1/users/me", {}, headers=fleet.headers(f"loader-{number}")
            )
        ).json()["id"]
        added = await fleet.send(
            "PUT",
            "/api/v1/projects/{key}/members/{user}",
            {"key": project, "user": user_id},
            json={"role": "reporter"},
        )
        assert added.status_code in (200, 201), added.text
    issue = await fleet.send(
        "POST", "/api/v1/projects/{key}/issues", {"key": project}, json={"title": "Under load"}
    )
    assert issue.status_code == 201
    # A report long enough to be caught running.
    seed_issues(fleet.database_url, 6000, project)
    requested = await fleet.send(
        "POST", "/api/v1/projects/{key}/reports", {"key": project}, json={}
    )
    assert requested.status_code == 202, requested.text
    job_id = requested.json()["id"]

    stop = anyio.Event()
    results: dict[str, Counter[int]] = {}

    async def load() -> None:
        results["load"] = await steady_load(fleet, issue.json()["key"], stop)

    async with anyio.create_task_group() as group:
        group.start_soon(load)
        killed = await anyio.to_thread.run_sync(kill_the_worker_running, fleet, job_id)
        for index in range(REPLICAS):
            await anyio.to_thread.run_sync(restart, fleet, index)
        stop.set()
    statuses = results["load"]
    assert set(statuses) <= {200, 201}, statuses
    assert statuses[201] > 0
    assert statuses[200] > 0

    # The job the killed worker held runs again on the other one, once, to the end.
    deadline = time.monotonic() + 120
    while True:
        job = (await fleet.send("GET", "/api/v1/jobs/{id}", {"id": job_id})).json()
        if job["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        await anyio.sleep(0.5)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2, killed


def kill_the_worker_running(fleet: Fleet, job_id: str) -> str:
    """SIGKILL the worker that holds the report, once Celery says it runs it; its name."""
    celery = make_celery(Settings(database_url=fleet.database_url, redis_url=fleet.redis_url))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        active = celery.control.inspect(timeout=1).active() or {}
        for hostname, tasks in active.items():
            if any(job_id in str(task.get("args")) for task in tasks):
                index = int(hostname.split("@")[0].removeprefix("fleet"))
                fleet.workers[index].kill()
                return hostname
        time.sleep(0.2)
    raise AssertionError("no worker was seen running the report")


def restart(fleet: Fleet, index: int) -> None:
    """Out of rotation, SIGTERM, started again, back in once the balancer holds it up."""
    fleet.balancer.take_out(index)
    fleet.replicas[index].stop()
    fleet.replicas[index].start(timeout=180)
    fleet.balancer.put_back(index)
