"""The periodic sweeps, run by a real beat on a real worker: a job whose message is gone while
it was running is taken up again (or failed, with no attempt left), and artifacts expire; and
the sweep of orphans in a local folder, which goes by the intent log: the objects of writes
the database recorded and whose row never came (processes killed between the two), once
past the grace, and the temporary files of writes a crash cut short; never an object a
committed row names, nor one the database never recorded (it may be another database)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from flyswatter.config import Settings
from flyswatter.db import create_sync_engine, utcnow
from flyswatter.issues.models import Issue
from flyswatter.jobs import sweeps
from flyswatter.jobs.models import Job, JobState
from flyswatter.jobs.sweeps import ORPHAN_GRACE, remove_orphaned_objects, requeue_stale_jobs
from flyswatter.jobs.tasks import ClaimedRunFault, JobRuntime, fail_job, run_report_job
from flyswatter.jobs.worker import make_celery
from flyswatter.services import Flyswatter
from flyswatter.storage.intents import (
    WriteClaimed,
    claim_abandoned_writes,
    intend_write,
    settle_write,
)
from flyswatter.storage.models import Artifact, StorageWrite
from flyswatter.storage.service import (
    TEMPORARY_PREFIX,
    LocalStorage,
    StorageUnavailable,
)
from tests.support.api import Api, Team, make_team
from tests.support.jobs import SweptAfterEachWrite, in_process_worker, wait_for_job


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


async def test_a_run_that_renews_its_lease_as_the_sweep_gives_up_on_it_is_not_failed(
    api: Api, settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = await make_team(api)
    exhausted = settings.job_max_retries + 1
    location = await abandoned_job(team, settings, engine, attempts=exhausted)

    def renewed_first(*args: Any, **kwargs: Any) -> bool:
        # The sweep read the job as abandoned; its run was only slow, and renews the lease
        # just before the sweep's failure reaches the database.
        with engine.begin() as connection:
            connection.execute(update(Job).values(lease_expires_at=utcnow() + timedelta(minutes=5)))
        return fail_job(*args, **kwargs)

    monkeypatch.setattr(sweeps, "fail_job", renewed_first)
    runtime = JobRuntime(settings)
    try:
        assert requeue_stale_jobs(make_celery(settings), runtime) == 0
    finally:
        runtime.engine.dispose()
    job = (await team["viewer"].get(location)).json()
    assert (job["state"], job["attempts"], job["error"]) == ("running", exhausted, None)


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


def intents(engine: Engine) -> dict[str, bool]:
    """The intent log: each key, and whether the sweep has claimed it."""
    with engine.connect() as connection:
        rows = connection.execute(select(StorageWrite.key, StorageWrite.claimed_at))
        return {key: claimed is not None for key, claimed in rows}


def backdate_intents(engine: Engine, age: timedelta, *, keep: str | None = None) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(StorageWrite)
            .where(col(StorageWrite.key) != (keep or ""))
            .values(created_at=utcnow() - age)
        )


def killed_in_a_write(settings: Settings, root: Path, mid_stream: bool) -> str:
    """A process killed while it writes an object, as the service writes one (its intent
    committed first), and so before any row could name it: mid-stream, or with the object
    whole. The key it was writing."""
    write = (
        """
        key = "reports/killed/mid-stream.pdf"
        intend_write(runtime.engine, key)
        print(key, flush=True)

        def chunks():
            yield b"half a file"
            os._exit(9)

        runtime.storage.put_stream(key, chunks(), "application/pdf")
        """
        if mid_stream
        else """
        print(store_report(runtime, "killed", b"%PDF-1.7 whole").key, flush=True)
        os._exit(9)
        """
    )
    script = textwrap.dedent(
        f"""
        import os
        from flyswatter.config import Settings
        from flyswatter.jobs.report_files import store_report
        from flyswatter.jobs.tasks import JobRuntime
        from flyswatter.storage.intents import intend_write

        runtime = JobRuntime(
            Settings(database_url={settings.database_url!r}, storage_dir={str(root)!r})
        )
        """
    ) + textwrap.dedent(write)
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert done.returncode == 9, done.stderr
    return done.stdout.strip()


def files_under(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


async def test_the_orphan_sweep_removes_what_recorded_writes_left_once_past_the_grace_only(
    api: Api,
    settings: Settings,
    app: Flyswatter,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "files"
    local = settings.model_copy(update={"storage_dir": str(root)})
    runtime = JobRuntime(local)
    monkeypatch.setattr(app, "running", replace(app.services, storage=runtime.storage))
    team = await make_team(api)
    await team.issue()
    # A committed attachment and a committed report: their intents went with their rows.
    uploaded = await team["reporter"].post(
        "/api/v1/issues/FLY-1/attachments", files={"file": ("a.txt", b"kept", "text/plain")}
    )
    assert uploaded.status_code == 201, uploaded.text
    job_id = (await team["reporter"].post("/api/v1/projects/FLY/reports")).json()["id"]
    state = await anyio.to_thread.run_sync(run_report_job, runtime, job_id, "task-1")
    assert state == JobState.succeeded
    committed = files_under(root)
    assert len(committed) == 2
    assert intents(engine) == {}
    # Writes whose row never came: processes killed mid-stream and with the object whole,
    # and one simulated (its intent and object written, no row ever committed).
    killed_mid_stream = killed_in_a_write(local, root, mid_stream=True)
    killed_whole = killed_in_a_write(local, root, mid_stream=False)
    with Session(engine) as session:
        issue_id = session.exec(select(Issue.id)).one()
    simulated = f"attachments/{issue_id}/simulated"
    intend_write(engine, simulated)
    runtime.storage.put(simulated, b"never recorded as a row", "text/plain")
    # One the database never recorded, long ago (another database's, or one restored from
    # before it was written): nothing says it is an orphan, so it stays.
    unrecorded = f"attachments/{issue_id}/unrecorded"
    runtime.storage.put(unrecorded, b"not this database's", "text/plain")
    # A write still on its way: its intent is young.
    young = f"attachments/{issue_id}/young"
    intend_write(engine, young)
    runtime.storage.put(young, b"its row may be committing now", "text/plain")
    (temporary,) = (root / killed_mid_stream).parent.glob(f"{TEMPORARY_PREFIX}*")
    old = ORPHAN_GRACE + timedelta(minutes=5)
    for path in root.rglob("*"):
        if path.is_file():
            backdate(path, old)
    backdate_intents(engine, old, keep=young)
    assert set(intents(engine)) == {killed_mid_stream, killed_whole, simulated, young}

    # The temporary file, and the three intents (the mid-stream one has no object: removing
    # a missing object is harmless).
    assert remove_orphaned_objects(runtime) == 4
    assert files_under(root) == sorted([*committed, unrecorded, young])
    assert intents(engine) == {young: False}
    assert remove_orphaned_objects(runtime) == 0
    # With no grace at all the young write goes too; what rows name, or nothing recorded,
    # never does.
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == 1
    assert files_under(root) == sorted([*committed, unrecorded])
    assert intents(engine) == {}
    assert temporary.relative_to(root).as_posix() not in files_under(root)
    download = await team["viewer"].get(uploaded.headers["Location"])
    assert download.status_code == 200
    assert download.content == b"kept"
    runtime.engine.dispose()


async def test_a_database_that_recorded_no_writes_removes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """A worker pointed at the wrong database (or one restored from an older backup) but at
    the right folder: every object there is old and no row names it, and none is removed."""
    root = tmp_path / "files"
    runtime = JobRuntime(settings.model_copy(update={"storage_dir": str(root)}))
    for key in ("attachments/1/a", "attachments/7/b", "reports/j1/c.pdf", "reports/j2/d.pdf"):
        runtime.storage.put(key, b"real files of another database", "text/plain")
        backdate(root / key, ORPHAN_GRACE * 10)
    kept = files_under(root)
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == 0
    assert files_under(root) == kept
    runtime.engine.dispose()


class DownOrRefusing(LocalStorage):
    """Storage whose deletes fail: all of them (unreachable), or one key's (refused, for a
    reason of the backend's own)."""

    def __init__(self, root: Path, *, refused: str | None = None) -> None:
        super().__init__(root)
        self.refused = refused

    def delete(self, key: str) -> None:
        if self.refused is None:
            raise StorageUnavailable("object storage unreachable")
        if key == self.refused:
            raise PermissionError("the backend's own words")
        super().delete(key)


def test_a_claim_the_sweep_cannot_finish_stays_and_its_writer_can_never_settle_it(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    runtime = JobRuntime(settings.model_copy(update={"storage_dir": str(root)}))
    keys = ["attachments/1/first", "attachments/1/second"]
    for key in keys:
        intend_write(engine, key)
        runtime.storage.put(key, b"bytes", "text/plain")
    healthy = runtime.storage
    # Storage down: the claims are kept (nothing forgotten) and stay claimed.
    runtime.storage = DownOrRefusing(root)
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == 0
    assert intents(engine) == dict.fromkeys(keys, True)
    assert files_under(root) == keys
    # A writer that comes back now finds its object claimed, and may not commit its row.
    with engine.connect() as connection, pytest.raises(WriteClaimed):
        settle_write(connection, keys[1])
    assert intents(engine) == dict.fromkeys(keys, True)
    # One object refused: the other is removed, the refused one stays claimed for the next.
    runtime.storage = DownOrRefusing(root, refused=keys[0])
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == 1
    assert intents(engine) == {keys[0]: True}
    assert files_under(root) == keys[:1]
    runtime.storage = healthy
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == 1
    assert intents(engine) == {}
    assert files_under(root) == []
    runtime.engine.dispose()


@pytest.mark.postgres_only
def test_the_sweep_skips_an_intent_its_writer_is_settling_without_waiting(
    settings: Settings, engine: Engine
) -> None:
    intend_write(engine, "attachments/1/settling")
    later = utcnow() + timedelta(seconds=1)
    with engine.connect() as writer:
        # The writer's row transaction has settled the intent, not yet committed.
        settle_write(writer, "attachments/1/settling")
        started = time.monotonic()
        assert claim_abandoned_writes(engine, later, 10) == []
        assert time.monotonic() - started < 5, "the claim waited for the writer's lock"
        writer.rollback()
    # Rolled back: the intent is there again, and the next sweep claims it.
    assert claim_abandoned_writes(engine, later, 10) == ["attachments/1/settling"]
    with engine.connect() as writer, pytest.raises(WriteClaimed):
        settle_write(writer, "attachments/1/settling")


async def test_a_report_whose_write_the_sweep_claimed_is_not_recorded_and_its_retry_is(
    api: Api, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    team = await make_team(api)
    root = tmp_path / "files"
    local = settings.model_copy(update={"storage_dir": str(root)})
    location = (await team["reporter"].post("/api/v1/projects/FLY/reports")).headers["Location"]
    job_id = location.rsplit("/", 1)[-1]
    runtime, sweeper = JobRuntime(local), JobRuntime(local)
    runtime.storage = swept = SweptAfterEachWrite(root, sweeper)
    # A storage fault as far as the task is concerned: it retries.
    with pytest.raises(ClaimedRunFault) as raised:
        await anyio.to_thread.run_sync(run_report_job, runtime, job_id, "task-1")
    assert isinstance(raised.value.fault, WriteClaimed)
    assert swept.swept == 1
    job = (await team["viewer"].get(location)).json()
    assert job["state"] == "running"
    assert job["artifact"] is None
    assert files_under(root) == []
    assert intents(engine) == {}
    runtime.storage = LocalStorage(root)
    state = await anyio.to_thread.run_sync(run_report_job, runtime, job_id, "task-1")
    assert state == JobState.succeeded
    assert len(files_under(root)) == 1
    assert intents(engine) == {}
    for used in (runtime, sweeper):
        used.engine.dispose()
