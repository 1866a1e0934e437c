"""The deliverer on the job system's Celery worker: beat sends it, a worker runs it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from celery.beat import Service

from flyswatter.config import Settings
from flyswatter.jobs.worker import make_celery
from flyswatter.webhooks.delivery import lease_seconds
from flyswatter.webhooks.tasks import DELIVER_WEBHOOKS, PRUNE_EVENTS
from tests.support.api import Api, AuthedClient
from tests.support.jobs import WorkerProcess, in_process_worker
from tests.support.servers import RedisServer, serve_environment
from tests.webhook_receiver import WebhookReceiver, running_receiver


@pytest.fixture
def settings(base_settings: Settings, clean_database: str) -> Settings:
    return base_settings.model_copy(
        update={
            "webhook_allow_http": True,
            "webhook_allowed_networks": ["127.0.0.1/32"],
            "webhook_timeout_seconds": 1.0,
            "webhook_sweep_interval_seconds": 0.5,
        }
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A Redis of the test's own: no other worker takes its messages, none are left behind."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server.url
    server.stop()


async def subscribed_project(api: Api, receiver: WebhookReceiver) -> tuple[AuthedClient, int]:
    owner = api.as_user("wendy")
    created = await owner.post("/api/v1/projects", json={"key": "WRK", "name": "W"})
    assert created.status_code == 201
    hook = await owner.post("/api/v1/projects/WRK/webhooks", json={"url": receiver.url})
    assert hook.status_code == 201, hook.text
    receiver.secrets.append(hook.json()["secret"])
    return owner, int(hook.json()["id"])


async def settled_delivery(owner: AuthedClient, hook_id: int) -> dict[str, Any]:
    """The webhook's one delivery once the worker recorded its outcome (after the answer)."""
    deadline = time.monotonic() + 30
    while True:
        log = (await owner.get(f"/api/v1/projects/WRK/webhooks/{hook_id}/deliveries")).json()
        (delivery,) = log["items"]
        if delivery["state"] != "pending" or time.monotonic() > deadline:
            return dict(delivery)
        await anyio.sleep(0.05)


def test_beat_schedules_the_deliverer_and_the_pruning_beside_the_jobs(settings: Settings) -> None:
    celery = make_celery(settings)
    tasks = {entry["task"]: entry for entry in celery.conf.beat_schedule.values()}
    assert tasks[DELIVER_WEBHOOKS]["schedule"] == settings.webhook_sweep_interval_seconds
    assert PRUNE_EVENTS in tasks
    assert {DELIVER_WEBHOOKS, PRUNE_EVENTS, "flyswatter.jobs.build_report"} <= set(celery.tasks)


def test_beat_keeps_no_schedule_file_and_runs_every_sweep_as_it_starts(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every beat on a host would share Celery's default shelve file, which has no lock.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    celery = make_celery(settings)
    scheduler = Service(celery, scheduler_cls=celery.conf.beat_scheduler).get_scheduler()
    assert {entry.name for entry in scheduler.schedule.values()} == set(celery.conf.beat_schedule)
    assert all(entry.is_due().is_due for entry in scheduler.schedule.values())
    scheduler.sync()
    scheduler.close()
    assert list(tmp_path.iterdir()) == []


async def test_the_in_process_worker_delivers_what_the_api_committed(
    api: Api, settings: Settings, receiver: WebhookReceiver
) -> None:
    owner, _ = await subscribed_project(api, receiver)
    with in_process_worker(settings, beat=True):
        await owner.post("/api/v1/projects/WRK/issues", json={"title": "Worked"})
        (delivery,) = receiver.wait_for(1, timeout=60)
    assert delivery.verified_with == [0]
    assert delivery.event["type"] == "issue.created"


async def test_a_worker_process_killed_mid_delivery_leaves_it_to_the_next_worker(
    api: Api, settings: Settings, broker: str, tmp_path: Path
) -> None:
    environment = serve_environment(
        database_url=settings.database_url,
        redis_url=broker,
        webhook_allow_http="true",
        webhook_allowed_networks='["127.0.0.1/32"]',
        webhook_timeout_seconds=str(settings.webhook_timeout_seconds),
        webhook_sweep_interval_seconds="0.5",
    )
    # The first request hangs past the timeout's reach of the test: its worker dies first.
    with running_receiver(hang_seconds=30, hang_requests=1) as receiver:
        owner, hook_id = await subscribed_project(api, receiver)
        await owner.post("/api/v1/projects/WRK/issues", json={"title": "Interrupted"})
        first_worker = WorkerProcess(environment, tmp_path / "first.log", "--beat")
        first_worker.start()
        try:
            receiver.wait_for(1, timeout=60)
        finally:
            first_worker.kill()
        # Killed with the request in flight: nothing was recorded, nothing is lost.
        log = (await owner.get(f"/api/v1/projects/WRK/webhooks/{hook_id}/deliveries")).json()
        assert log["items"][0]["state"] == "pending"
        assert log["items"][0]["attempt_log"] == []
        second_worker = WorkerProcess(environment, tmp_path / "second.log", "--beat")
        second_worker.start()
        try:
            first, second = receiver.wait_for(2, timeout=60 + 2 * lease_seconds(settings))
            delivery = await settled_delivery(owner, hook_id)
        finally:
            second_worker.stop()
    assert first.webhook_id == second.webhook_id
    assert second.verified_with == [0]
    assert delivery["state"] == "succeeded"
    assert delivery["attempts"] == 2
