"""The tasks workers run, and the idempotent job steps they are made of.

A task may run more than once for one job: a retry after a transient fault, a message
redelivered after its worker was killed (or after the visibility timeout, its first run still
working), a twin published by the sweep. Each run first *claims* the job with one conditional
UPDATE, which counts an attempt; a finished job, or one held under a live lease by any run
(the same message's included), is left alone. The run renews its lease while it works, and
records its outcome only while its attempt is still the job's latest: the attempt count is
the fencing token, so exactly one run finishes the job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy import ColumnElement, Connection, Engine, and_, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import col

from flyswatter.config import Settings
from flyswatter.db import create_sync_engine, utcnow
from flyswatter.jobs.faults import TransientFault, transient_reason
from flyswatter.jobs.leases import LeaseKeeper
from flyswatter.jobs.models import Job, JobKind, JobState
from flyswatter.jobs.report_files import (
    NotBuildable,
    build_report_file,
    record_report,
    store_report,
)
from flyswatter.jobs.worker import (
    BUILD_REPORT,
    EXPIRE_ARTIFACTS,
    REMOVE_DELETED_OBJECTS,
    REMOVE_ORPHANED_OBJECTS,
    REQUEUE_STALE_JOBS,
    JobsCelery,
)
from flyswatter.observability.errors import report_unhandled
from flyswatter.observability.metrics import (
    JOB_QUEUE_WAIT,
    JOB_RETRIES,
    JOB_RUN_TIME,
    JOBS_FINISHED,
    create_job_series,
)
from flyswatter.storage.service import Storage, storage_from_settings

logger = logging.getLogger("flyswatter.jobs")


class JobRuntime:
    """What tasks use, made on first use in the process that runs them (after a fork)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return create_sync_engine(self.settings)

    @cached_property
    def storage(self) -> Storage:
        return storage_from_settings(self.settings)


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: int
    kind: str
    project_id: int
    requested_by: str
    parameters: str
    created_at: datetime
    attempts: int


class OutOfAttempts(Exception):
    """The job was failed instead of claimed: it has had every attempt it may have. The
    message is the job's error."""


def claim_job(
    engine: Engine, public_id: str, task_id: str, lease_seconds: int, max_attempts: int
) -> Claim | None:
    """Mark the job running for this task; None when it is finished or held under a live
    lease. A live lease refuses its own task id too: Redis redelivers a message, id and all,
    whose first run is still working past the visibility timeout. A run that ended releases
    its lease (``LeaseKeeper``), so the task's own retry takes the job at once. Raises
    ``OutOfAttempts``, once the job is failed, when this would start more than
    ``max_attempts``."""
    now = utcnow()
    claimable = or_(
        col(Job.state) == JobState.queued,
        and_(
            col(Job.state) == JobState.running,
            or_(col(Job.lease_expires_at).is_(None), col(Job.lease_expires_at) <= now),
        ),
    )
    with engine.begin() as connection:
        claimed = connection.execute(
            update(Job)
            .where(col(Job.public_id) == public_id, claimable, col(Job.attempts) < max_attempts)
            .values(
                state=JobState.running,
                attempts=col(Job.attempts) + 1,
                started_at=now,
                task_id=task_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
        )
        refusal = row = None
        if claimed.rowcount != 1:
            refusal = _fail_exhausted(connection, public_id, claimable, max_attempts)
        else:
            row = connection.execute(
                select(
                    col(Job.id),
                    col(Job.kind),
                    col(Job.project_id),
                    col(Job.requested_by),
                    col(Job.parameters),
                    col(Job.created_at),
                    col(Job.attempts),
                ).where(col(Job.public_id) == public_id)
            ).one()
    if row is None:
        # Raised once the failure is committed.
        if refusal is not None:
            raise OutOfAttempts(refusal)
        return None
    job_id, kind, project_id, requested_by, parameters, created_at, attempts = row
    assert job_id is not None
    return Claim(job_id, kind, project_id, requested_by, parameters, created_at, attempts)


def _fail_exhausted(
    connection: Connection, public_id: str, claimable: ColumnElement[bool], max_attempts: int
) -> str | None:
    """Fail a claimable job that has had its attempts, and say why; None for any other job.

    A run that kills its worker (out of memory, a crash) ends with no retry and no failure:
    acks_late with reject_on_worker_lost has the broker redeliver its message, task id and
    all, which would take the job back and kill the next worker, forever. The Celery retries
    of a transient fault count the same attempts, and stop at as many."""
    attempts = connection.execute(
        select(col(Job.attempts)).where(col(Job.public_id) == public_id, claimable)
    ).scalar()
    if attempts is None or attempts < max_attempts:
        return None
    reason = (
        "no attempt finished the report (its worker stopped while building it: killed, or"
        f" out of memory); gave up after {attempts} attempt(s)"
    )
    failed = connection.execute(
        update(Job)
        .where(col(Job.public_id) == public_id, claimable, col(Job.attempts) == attempts)
        .values(state=JobState.failed, error=reason, finished_at=utcnow(), lease_expires_at=None)
    )
    return reason if failed.rowcount == 1 else None


def job_request_id(engine: Engine, public_id: str) -> str | None:
    """The id of the request that asked for the job, for error reports (None if unknown)."""
    try:
        with engine.connect() as connection:
            return connection.execute(
                select(col(Job.request_id)).where(col(Job.public_id) == public_id)
            ).scalar()
    except DBAPIError:
        return None


def fail_job(
    engine: Engine,
    public_id: str,
    reason: str,
    *,
    attempt: int | None = None,
    lease_lapsed_before: datetime | None = None,
) -> bool:
    """Fail the unfinished job, and say whether it was.

    With ``attempt``, only while that attempt still holds it: a newer attempt, or the job's
    end, fences it out; with ``lease_lapsed_before`` too, only while its lease has lapsed
    since then (a run that renewed it is alive). Without ``attempt`` (a task that gave up
    before it could claim the job), only while no run holds it under a live lease: queued,
    or running with its lease released (an earlier attempt of the task that ended) or
    lapsed. A job a live run holds is that run's to fail."""
    if attempt is None:
        held = or_(
            col(Job.state) == JobState.queued,
            and_(
                col(Job.state) == JobState.running,
                or_(col(Job.lease_expires_at).is_(None), col(Job.lease_expires_at) <= utcnow()),
            ),
        )
    else:
        held = and_(col(Job.state) == JobState.running, col(Job.attempts) == attempt)
        if lease_lapsed_before is not None:
            held = and_(held, col(Job.lease_expires_at) < lease_lapsed_before)
    with engine.begin() as connection:
        result = connection.execute(
            update(Job)
            .where(col(Job.public_id) == public_id, held)
            .values(
                state=JobState.failed,
                error=reason[:1000],
                finished_at=utcnow(),
                lease_expires_at=None,
            )
        )
    return result.rowcount == 1


class ClaimedRunFault(Exception):
    """A fault of a run after its claim, carrying the claim's attempt: what fences the
    failure its task records on giving up, so that a stale run (its lease lapsed, a
    redelivery took the job) cannot fail the job a newer attempt holds. The fault itself is
    ``fault``, and the ``__cause__``."""

    def __init__(self, attempt: int, fault: Exception) -> None:
        super().__init__(attempt)
        self.attempt = attempt
        self.fault = fault


def run_report_job(runtime: JobRuntime, public_id: str, task_id: str) -> JobState | None:
    """One attempt at a report job; None when there was nothing to do. A fault once the job
    is claimed is raised as ``ClaimedRunFault``; one before, as it is."""
    settings = runtime.settings
    engine = runtime.engine
    try:
        claim = claim_job(
            engine,
            public_id,
            task_id,
            settings.job_lease_seconds,
            # The first attempt and its retries, as the task's own retries count them.
            max_attempts=settings.job_max_retries + 1,
        )
    except OutOfAttempts as refusal:
        # The run ends here, so that the redelivered message is acknowledged and dropped.
        JOBS_FINISHED.labels(JobKind.report.value, JobState.failed.value).inc()
        logger.error("job %s failed: %s", public_id, refusal)
        return JobState.failed
    if claim is None:
        logger.info("job %s: finished or taken by another worker; nothing to do", public_id)
        return None
    try:
        return _run_claimed(runtime, public_id, claim)
    except Exception as fault:
        raise ClaimedRunFault(claim.attempts, fault) from fault


def _run_claimed(runtime: JobRuntime, public_id: str, claim: Claim) -> JobState | None:
    engine = runtime.engine
    started = utcnow()
    if claim.attempts == 1:
        JOB_QUEUE_WAIT.labels(claim.kind).observe((started - claim.created_at).total_seconds())
    clock = time.perf_counter()
    with LeaseKeeper(engine, public_id, claim, runtime.settings.job_lease_seconds) as lease:
        try:
            pdf, filename = build_report_file(runtime, claim, started)
        except NotBuildable as refusal:
            # Failed, not cancelled: this run has claimed it (it is running, an attempt
            # counted), and only a queued job is cancelled, by a person. The error says why
            # (for a deleted project, for when it is restored: the API hides its jobs
            # meanwhile). Nothing to retry and nothing went wrong inside: no error report.
            reason = str(refusal)
            if fail_job(engine, public_id, reason, attempt=claim.attempts):
                JOBS_FINISHED.labels(claim.kind, JobState.failed.value).inc()
            logger.info("job %s: %s; not built", public_id, reason)
            return JobState.failed
        if lease.lost.is_set():
            logger.info("job %s: another run took it over; this one stops", public_id)
            return None
        stored = store_report(runtime, public_id, pdf)
        if not record_report(runtime, claim, stored, filename):
            logger.info("job %s: another run took it over or finished it", public_id)
            return None
    JOB_RUN_TIME.labels(claim.kind).observe(time.perf_counter() - clock)
    JOBS_FINISHED.labels(claim.kind, JobState.succeeded.value).inc()
    logger.info("job %s: report built (%d bytes)", public_id, stored.size)
    return JobState.succeeded


def register_tasks(app: JobsCelery, runtime: JobRuntime) -> None:
    # The sweeps build on this module's steps (claims, failing a job): imported here, once
    # both modules are loaded.
    from flyswatter.jobs.sweeps import (
        expire_artifacts,
        remove_deleted_objects,
        remove_orphaned_objects,
        requeue_stale_jobs,
    )

    settings = app.flyswatter_settings
    create_job_series(kind.value for kind in JobKind)

    @app.task(
        name=BUILD_REPORT,
        bind=True,
        shared=False,
        lazy=False,
        acks_late=True,
        max_retries=settings.job_max_retries,
    )
    def build_report(self: Task[Any, Any], public_id: str) -> str:
        task_id = str(self.request.id)
        try:
            state = run_report_job(runtime, public_id, task_id)
        except Exception as raised:
            # The claim's attempt, when there was one, fences the failure below.
            attempt, exc = (
                (raised.attempt, raised.fault)
                if isinstance(raised, ClaimedRunFault)
                else (None, raised)
            )
            reason = transient_reason(exc)
            tries = self.request.retries + 1
            if reason is not None and self.request.retries < (self.max_retries or 0):
                countdown = get_exponential_backoff_interval(
                    factor=int(settings.job_retry_backoff_seconds),
                    retries=self.request.retries,
                    maximum=int(settings.job_retry_backoff_max_seconds),
                    full_jitter=True,
                )
                logger.warning(
                    "job %s: attempt %d failed (%s); retrying in %d s",
                    public_id,
                    tries,
                    reason,
                    countdown,
                )
                JOB_RETRIES.labels(JobKind.report.value).inc()
                raise self.retry(exc=TransientFault(reason), countdown=countdown) from None
            message = (
                f"{reason}; gave up after {tries} attempt(s)"
                if reason is not None
                else "the report could not be built because of an internal error"
            )
            try:
                failed = fail_job(runtime.engine, public_id, message, attempt=attempt)
                outcome = (
                    "failed"
                    if failed
                    else "not marked failed (another run holds it, or it is finished)"
                )
            except Exception as failure:
                # Most likely the database that failed the attempt: the job stays as it is,
                # for the sweep to take up. Not the driver's error, which would reach
                # Celery's log with its SQL and values.
                why = transient_reason(failure) or type(failure).__name__
                failed, outcome = False, f"not marked failed ({why}); the sweep takes it up"
            if failed:
                JOBS_FINISHED.labels(JobKind.report.value, JobState.failed.value).inc()
            if reason is None:
                # The traceback for the logs and one error report, and the task ends here:
                # the job's outcome is in the database, nothing is left for Celery to retry.
                logger.exception("job %s %s: %s", public_id, outcome, message, exc_info=exc)
                report_unhandled(
                    exc, request_id=job_request_id(runtime.engine, public_id), job_id=public_id
                )
            else:
                logger.error("job %s %s: %s", public_id, outcome, message)
            return JobState.failed.value if failed else "skipped"
        return state.value if state is not None else "skipped"

    @app.task(name=REQUEUE_STALE_JOBS, shared=False, lazy=False, acks_late=True)
    def requeue_stale() -> int:
        return requeue_stale_jobs(app, runtime)

    @app.task(name=EXPIRE_ARTIFACTS, shared=False, lazy=False, acks_late=True)
    def expire() -> int:
        return expire_artifacts(runtime)

    @app.task(name=REMOVE_DELETED_OBJECTS, shared=False, lazy=False, acks_late=True)
    def remove_objects() -> int:
        return remove_deleted_objects(runtime)

    @app.task(name=REMOVE_ORPHANED_OBJECTS, shared=False, lazy=False, acks_late=True)
    def remove_orphans() -> int:
        return remove_orphaned_objects(runtime)
