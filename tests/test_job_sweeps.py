"""The periodic sweeps, run by a real beat on a real worker: a job whose message is gone while
it was running is taken up again (or failed, with no attempt left), and artifacts expire; and
the sweep of orphans in a local folder: old objects no row names, and the temporary files of
writes a crash cut short, but never a young one (its row may be committing now)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from flyswatter.attachments.models import Attachment
from flyswatter.config import Settings
from flyswatter.db import create_sync_engine, utcnow
from flyswatter.issues.models import Issue
from flyswatter.jobs.models import Job, JobState
from flyswatter.jobs.sweeps import (
    ORPHAN_GRACE,
    remove_deleted_objects,
    remove_orphaned_objects,
    requeue_stale_jobs,
)
from flyswatter.jobs.tasks import JobRuntime
from flyswatter.jobs.worker import make_celery
from flyswatter.storage.models import Artifact
from flyswatter.storage.service import TEMPORARY_PREFIX
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


def backdate(path: Path, age: timedelta) -> None:
    when = (utcnow() - age).timestamp()
    os.utime(path, (when, when))


def crash_mid_write(root: Path, key: str) -> Path:
    """A process killed while it streams an object into the folder: what it leaves behind."""
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from flyswatter.storage.service import LocalStorage

        def chunks():
            yield b"half a file"
            os._exit(9)

        LocalStorage(Path({str(root)!r})).put_stream({key!r}, chunks(), "text/plain")
        """
    )
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 9
    (left,) = (root / key).parent.glob(f"{TEMPORARY_PREFIX}*")
    return left


def files_under(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


async def test_the_orphan_sweep_removes_old_unnamed_objects_and_crashed_writes_only(
    api: Api, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    team = await make_team(api)
    await team.issue()
    root = tmp_path / "files"
    runtime = JobRuntime(settings.model_copy(update={"storage_dir": str(root)}))
    with Session(engine) as session:
        issue_id = session.exec(select(Issue.id)).one()
    folder = f"attachments/{issue_id}"
    named = {f"{folder}/named": "attachment", "reports/j1/named.pdf": "artifact"}
    for key in [*named, f"{folder}/orphan", "reports/j2/orphan.pdf", f"{folder}/young"]:
        runtime.storage.put(key, b"bytes", "text/plain")
    runtime.storage.put("elsewhere/old", b"not the service's", "text/plain")
    with Session(engine) as session:
        file = {"filename": "f", "content_type": "text/plain", "size": 5, "checksum": "0" * 64}
        session.add(
            Attachment(
                issue_id=issue_id, key=f"{folder}/named", uploaded_by=team.ids["reporter"], **file
            )
        )
        session.add(
            Artifact(
                key="reports/j1/named.pdf",
                created_by=team.ids["reporter"],
                expires_at=utcnow() + timedelta(days=1),
                **file,
            )
        )
        session.commit()
    crash_mid_write(root, f"{folder}/crashed")
    crashing = crash_mid_write(root, "reports/j3/crashing.pdf")
    old = ORPHAN_GRACE + timedelta(minutes=5)
    for path in root.rglob("*"):
        if path.is_file() and path.name != "young" and path != crashing:
            backdate(path, old)
    assert remove_orphaned_objects(runtime) == 3
    young = crashing.relative_to(root).as_posix()
    assert files_under(root) == sorted([*named, f"{folder}/young", young, "elsewhere/old"])
    assert remove_orphaned_objects(runtime) == 0
    # The scheduled sweep of deleted files' objects sweeps the orphans too.
    backdate(root / folder / "young", old)
    backdate(crashing, old)
    assert remove_deleted_objects(runtime) == 0
    assert files_under(root) == sorted([*named, "elsewhere/old"])
    runtime.engine.dispose()
