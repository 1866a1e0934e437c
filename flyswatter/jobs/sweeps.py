"""The periodic sweeps beat runs: jobs whose message was lost are published again (or failed,
with no attempt left), artifacts past their expiry are removed with their files, the
objects of deleted files that a removal after the commit did not reach are removed, and so
are orphans once old enough: objects whose write the database recorded (``storage_write``)
and whose row never came (the write failed, its process died, its commit failed), and writes
that never finished (temporary files, multipart uploads). Nothing is ever removed because no
row names it: a database that is not the storage's own would name nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

from celery import Celery
from sqlalchemy import and_, delete, or_, select, update
from sqlmodel import col

from flyswatter.db import utcnow
from flyswatter.jobs.models import Job, JobKind, JobState
from flyswatter.jobs.tasks import JobRuntime, fail_job
from flyswatter.jobs.worker import publish_job
from flyswatter.observability.metrics import JOBS_FINISHED
from flyswatter.storage.intents import claim_abandoned_writes, forget_claims
from flyswatter.storage.models import Artifact, StorageRemoval
from flyswatter.storage.service import StorageUnavailable

T = TypeVar("T")

logger = logging.getLogger("flyswatter.jobs")

REQUEUE_BATCH = 100
EXPIRE_BATCH = 500
REMOVAL_BATCH = 500
# The request removes the object right after its commit: a name younger than this is most
# likely one it is removing now (removing twice is harmless, only wasted).
REMOVAL_GRACE = timedelta(minutes=1)
# Where the service writes objects (attachments/{issue}/..., reports/{job}/...): no unfinished
# write outside them is touched, whatever else shares the bucket or the folder.
ORPHAN_PREFIXES = ("attachments/", "reports/")
# A write's intent is committed before its object is written, and its row after (a temporary
# file or multipart upload comes before the object is whole): one younger than this may be a
# write still on its way, a slow upload over a slow link. Far longer than any upload or
# report takes; a write that takes longer still fails cleanly (its row is refused) and is
# retried. A module constant, not a setting: no operator has a reason to tune it.
ORPHAN_GRACE = timedelta(hours=6)
# Intents claimed, and their objects removed, in one sweep at most (the next goes on).
ORPHAN_BATCH = 500


def requeue_stale_jobs(app: Celery, runtime: JobRuntime) -> int:
    """Publish again the jobs whose message is gone: queued ones it never reached, and
    running ones whose worker stopped renewing its lease. A job abandoned with no attempt
    left is failed here, since the run that would have failed it is gone too."""
    settings = runtime.settings
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.job_requeue_after_seconds)
    # Past its lease by a further requeue period: the broker's own redelivery (after the
    # same visibility timeout) had its chance first.
    abandoned = and_(col(Job.state) == JobState.running, col(Job.lease_expires_at) < cutoff)
    # Not published again within the period, so that a busy fleet is not sent twins.
    not_just_published = or_(col(Job.enqueued_at).is_(None), col(Job.enqueued_at) < cutoff)
    with runtime.engine.connect() as connection:
        stale = list(
            connection.execute(
                select(col(Job.public_id), col(Job.state), col(Job.attempts))
                .where(or_(col(Job.state) == JobState.queued, abandoned), not_just_published)
                .order_by(col(Job.created_at))
                .limit(REQUEUE_BATCH)
            )
        )
    exhausted = [
        (public_id, attempts)
        for public_id, state, attempts in stale
        if state == JobState.running and attempts > settings.job_max_retries
    ]
    for public_id, attempts in exhausted:
        reason = f"its worker stopped answering; gave up after {attempts} attempt(s)"
        # Only while the attempt read here still holds it, lease lapsed: a run that renewed
        # it meanwhile is alive, and finishes the job itself.
        if fail_job(
            runtime.engine, public_id, reason, attempt=attempts, lease_lapsed_before=cutoff
        ):
            JOBS_FINISHED.labels(JobKind.report.value, JobState.failed.value).inc()
            logger.error("job %s failed: %s", public_id, reason)
    given_up = {public_id for public_id, _ in exhausted}
    published = [
        public_id
        for public_id, _, _ in stale
        if public_id not in given_up and publish_job(app, public_id)
    ]
    if published:
        with runtime.engine.begin() as connection:
            connection.execute(
                update(Job)
                .where(
                    col(Job.public_id).in_(published),
                    col(Job.state).in_([JobState.queued, JobState.running]),
                )
                .values(enqueued_at=utcnow())
            )
        logger.info("republished %d job(s) whose message was lost", len(published))
    return len(published)


def expire_artifacts(runtime: JobRuntime) -> int:
    """Delete the files past their expiry, then their rows (jobs keep their history)."""
    now = utcnow()
    with runtime.engine.connect() as connection:
        expired = list(
            connection.execute(
                select(col(Artifact.id), col(Artifact.key))
                .where(col(Artifact.expires_at) < now)
                .order_by(col(Artifact.expires_at))
                .limit(EXPIRE_BATCH)
            )
        )
    removed = _remove_objects(runtime, [(id_, key) for id_, key in expired], "expired artifact")
    if removed:
        with runtime.engine.begin() as connection:
            connection.execute(
                update(Job).where(col(Job.artifact_id).in_(removed)).values(artifact_id=None)
            )
            connection.execute(delete(Artifact).where(col(Artifact.id).in_(removed)))
        logger.info("expired %d artifact(s)", len(removed))
    return len(removed)


def remove_deleted_objects(runtime: JobRuntime, *, grace: timedelta = REMOVAL_GRACE) -> int:
    """Remove the objects still named in ``storage_removal``, then their names: those the
    request removed already (removing again is a no-op on every backend), and those it could
    not reach (storage down, or the process gone between the commit and the removal)."""
    cutoff = utcnow() - grace
    with runtime.engine.connect() as connection:
        keys = list(
            connection.execute(
                select(col(StorageRemoval.key))
                .where(col(StorageRemoval.created_at) < cutoff)
                .order_by(col(StorageRemoval.created_at))
                .limit(REMOVAL_BATCH)
            ).scalars()
        )
    removed = _remove_objects(runtime, [(key, key) for key in keys], "deleted object")
    if removed:
        with runtime.engine.begin() as connection:
            connection.execute(delete(StorageRemoval).where(col(StorageRemoval.key).in_(removed)))
    return len(removed)


def remove_orphaned_objects(runtime: JobRuntime, *, grace: timedelta = ORPHAN_GRACE) -> int:
    """Remove the writes begun more than ``grace`` ago whose row never came: unfinished
    writes under the service's prefixes, and the objects of intents left in
    ``storage_write``; how many.

    The intents are claimed first, in a transaction of their own: once that commits, no row
    can be committed for their objects, which are then removed, then the intents. A claim
    the sweep cannot finish (storage down, an object refused) stays, for the next sweep."""
    cutoff = utcnow() - grace
    removed = 0
    try:
        for prefix in ORPHAN_PREFIXES:
            removed += runtime.storage.remove_unfinished_writes(prefix, cutoff)
    except StorageUnavailable as exc:
        logger.warning("unfinished writes left until the next sweep: %s", exc)
        return removed
    claimed = claim_abandoned_writes(runtime.engine, cutoff, ORPHAN_BATCH)
    objects = _remove_objects(runtime, [(key, key) for key in claimed], "orphaned object")
    forget_claims(runtime.engine, objects)
    removed += len(objects)
    if removed:
        logger.info("removed %d orphaned object(s) or unfinished write(s)", removed)
    return removed


def _remove_objects(runtime: JobRuntime, objects: Sequence[tuple[T, str]], what: str) -> list[T]:
    """Remove each ``(id, key)`` object from storage, oldest first; the ids of those removed.

    Storage down stops the sweep (the rest would fail alike; the next sweep goes on from
    there). Any other fault skips that object only, which stays to be tried again: one that
    always fails would otherwise hold up every other. Only its type is logged: the backend's
    text is its own.
    """
    removed: list[T] = []
    for index, (identity, key) in enumerate(objects):
        try:
            runtime.storage.delete(key)
        except StorageUnavailable as exc:
            left = len(objects) - index
            logger.warning("%d %s(s) left until the next sweep: %s", left, what, exc)
            break
        except Exception as exc:
            logger.warning("%s %s not removed: %s", what, key, type(exc).__name__)
            continue
        removed.append(identity)
    return removed
