"""The periodic sweeps, run by a real beat on a real worker: a job whose message is gone while
it was running is taken up again (or failed, with no attempt left), and artifacts expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update
from sqlmodel import col

from flyswatter.config import Settings
from flyswatter.db import create_sync_engine, utcnow
from flyswatter.jobs.models import Job, JobState
from flyswatter.jobs.sweeps import requeue_stale_jobs
from flyswatter.jobs.tasks import JobRuntime
from flyswatter.jobs.worker import make_celery
from flyswatter.storage.models import Artifact
from tests.support.api import Api, Team, make_team
from tests.support.jobs import in_process_worker, wait_for_job


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_sync_engine(settings)
    yield engine
    engine.dispose()


async def abandoned_job(team: Team, settings: Settings, engine: Engine, attempts: int) -> str:
    """A report job left ``running`` by a worker that died, its message gone from the broker
    (no redelivery will come): what a crash while the database was also down leaves."""
    response = await team["reporter"].post("/api/v1/projects/FLY/reports")
    assert response.status_code == 202, response.text
    make_celery(settings).control.purge()
    long_ago = utcnow() - timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(
            update(Job)
            .where(col(Job.public_id) == response.json()["id"])
            .values(
                state=JobState.running,
                attempts=attempts,
                task_id="a-worker-that-died",
                started_at=long_ago,
                lease_expires_at=long_ago,
                enqueued_at=long_ago,
            )
        )
    return str(response.headers["Location"])


async def test_an_abandoned_job_with_no_attempt_left_is_failed_with_a_reason(
    api: Api, settings: Settings, engine: Engine
) -> None:
    team = await make_team(api)
    exhausted = settings.job_max_retries + 1
    location = await abandoned_job(team, settings, engine, attempts=exhausted)
    assert requeue_stale_jobs(make_celery(settings), JobRuntime(settings)) == 0
    job = (await team["viewer"].get(location)).json()
    assert job["state"] == "failed"
    assert job["error"] == (f"its worker stopped answering; gave up after {exhausted} attempt(s)")
    assert job["finished_at"] is not None


async def test_beat_takes_up_an_abandoned_job_then_expires_its_artifact(
    api: Api, settings: Settings, engine: Engine
) -> None:
    team = await make_team(api)
    location = await abandoned_job(team, settings, engine, attempts=1)
    # The shortest periods the settings allow, so that beat fires within seconds.
    quick = settings.model_copy(
        update={"job_requeue_after_seconds": 5, "artifact_sweep_interval_seconds": 5}
    )
    with in_process_worker(quick, beat=True):
        job = await wait_for_job(team["viewer"], location, seconds=60)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 2
        assert job["artifact"] is not None
        with engine.begin() as connection:
            connection.execute(update(Artifact).values(expires_at=utcnow() - timedelta(seconds=1)))
        deadline = time.monotonic() + 30
        while (await team["viewer"].get(location)).json()["artifact"] is not None:
            assert time.monotonic() < deadline, "beat did not expire the artifact"
            await asyncio.sleep(0.2)
    gone = await team["viewer"].get(f"{location}/artifact")
    assert gone.status_code == 404
