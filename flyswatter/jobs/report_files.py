"""A report job's file: built from one snapshot, stored under a key of its own attempt, and
recorded on the job only while the attempt's run still holds the job's claim.

Every attempt stores its own object (``reports/{job}/{random}.pdf``): a run that lost its
claim while rendering (its lease ran out, another run took the job over and finished it)
must not replace the winner's file, which the winner's row describes (size, checksum). Its
intent to write is committed before the object is stored (``flyswatter.storage.intents``)
and settled in the transaction that records the artifact; an attempt that does not commit
deletes its object, then its intent, and one whose commit fails leaves both for the orphan
sweep, which the intent, if still there, leads to the object. Everything that reads or removes
a report's bytes later (downloads, the expiry sweep, deleting a job) goes by the key stored
on the artifact's row.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import ValidationError
from sqlalchemy import Connection, insert, select, update
from sqlmodel import col

from flyswatter.db import utcnow
from flyswatter.jobs.models import Job, JobState, ReportParameters, ReportRequest
from flyswatter.projects.models import Project
from flyswatter.storage.intents import drop_intent, intend_write, settle_write
from flyswatter.storage.models import Artifact
from flyswatter.storage.service import StorageUnavailable, StoredObject

if TYPE_CHECKING:
    from flyswatter.jobs.tasks import Claim, JobRuntime

logger = logging.getLogger("flyswatter.jobs")

PDF = "application/pdf"


PROJECT_DELETED = "its project was deleted before the report was built"


class NotBuildable(Exception):
    """The job can never be built; the message says why, on the job, to whoever asked."""


def buildable_parameters(stored: str, now: datetime, default_days: int) -> ReportParameters:
    """The job's parameters, held to the rules a request is held to today. A job stored
    before a rule existed (a period of centuries, or one reaching past what a date holds)
    fails with the rule's words, instead of overflowing or rendering for hours."""
    try:
        parameters = ReportRequest.model_validate_json(stored)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "parameters"
        raise NotBuildable(
            f"its parameters are no longer accepted: {where}: {error['msg']}"
        ) from None
    if (problem := parameters.period_problem(now, default_days)) is not None:
        raise NotBuildable(f"its parameters are no longer accepted: {problem}")
    return parameters


def report_key(public_id: str) -> str:
    """Where one attempt at the job stores its file: a key no other attempt uses."""
    return f"reports/{public_id}/{secrets.token_hex(16)}.pdf"


def store_report(runtime: JobRuntime, public_id: str, pdf: bytes) -> StoredObject:
    """Store one attempt's file, its intent committed first: an object is only ever left
    behind with its intent, which is what lets the orphan sweep remove it. A write that
    fails takes its object back (a store that failed mid-write may have kept it) and then
    its intent."""
    key = report_key(public_id)
    intend_write(runtime.engine, key)
    try:
        return runtime.storage.put(key, pdf, PDF)
    except BaseException:
        _discard(runtime, key)
        raise


def build_report_file(runtime: JobRuntime, claim: Claim, now: datetime) -> tuple[bytes, str]:
    """The PDF and its file name, read from one snapshot of the database."""
    # Imported on first use: the API process builds this Celery app to publish, never to
    # render, and need not load the PDF library and its fonts.
    from flyswatter.reports.data import collect_report
    from flyswatter.reports.pdf import render_report

    settings = runtime.settings
    # Held to the period the request was accepted with: its defaults end when it was made,
    # not when a worker gets to it (a period at the longest would have grown past the rule).
    parameters = buildable_parameters(
        claim.parameters, claim.created_at, settings.report_default_days
    )
    engine = runtime.engine
    # One snapshot for every section on PostgreSQL. SQLite reads in autocommit: a transaction
    # there takes the write lock (see db.py), which a report must not hold for seconds.
    isolation = "AUTOCOMMIT" if engine.dialect.name == "sqlite" else "REPEATABLE READ"
    with engine.connect().execution_options(isolation_level=isolation) as connection:
        project = connection.execute(
            select(Project).where(col(Project.id) == claim.project_id)
        ).one()
        project_row = Project.model_validate(project._mapping)
        if project_row.deleted_at is not None:
            raise NotBuildable(PROJECT_DELETED)
        data, table = collect_report(
            connection,
            project_row,
            parameters,
            claim.requested_by,
            asked_at=claim.created_at,
            now=now,
            default_days=settings.report_default_days,
            table_limit=settings.report_table_limit,
        )
        pdf = render_report(data, table)
    filename = f"{project_row.key}-report-{data.period.start:%Y%m%d}-{data.period.end:%Y%m%d}.pdf"
    return pdf, filename


def _finish(
    connection: Connection,
    runtime: JobRuntime,
    claim: Claim,
    stored: StoredObject,
    filename: str,
) -> bool:
    """Insert the artifact and mark the job succeeded if this run's attempt still holds it.
    The attempt, not the task id, tells the runs apart: a redelivered message keeps its id."""
    ttl = timedelta(seconds=runtime.settings.artifact_ttl_seconds)
    artifact_id = connection.execute(
        insert(Artifact)
        .values(
            key=stored.key,
            filename=filename,
            content_type=PDF,
            size=stored.size,
            checksum=stored.checksum,
            created_by=claim.requested_by,
            created_at=utcnow(),
            expires_at=utcnow() + ttl,
        )
        .returning(col(Artifact.id))
    ).scalar_one()
    finished = connection.execute(
        update(Job)
        .where(
            col(Job.id) == claim.job_id,
            col(Job.state) == JobState.running,
            col(Job.attempts) == claim.attempts,
        )
        .values(
            state=JobState.succeeded,
            artifact_id=artifact_id,
            error=None,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
    )
    return finished.rowcount == 1


def record_report(runtime: JobRuntime, claim: Claim, stored: StoredObject, filename: str) -> bool:
    """Record the stored file, settle its intent and finish the job, in one transaction, if
    this run still holds the claim: True when it did. Otherwise (another run finished the
    job), or when a statement fails before the commit, the transaction is rolled back and
    the attempt's object deleted, then its intent: no row names it. ``WriteClaimed`` (a
    ``StorageUnavailable``, retried) when the orphan sweep claimed the object first. A
    commit that fails leaves the object and its intent, since it may have committed after
    all: the intent, if it is still there, leads the sweep to the object."""
    committing = won = False
    try:
        with runtime.engine.connect() as connection:
            won = _finish(connection, runtime, claim, stored, filename)
            if won:
                settle_write(connection, stored.key)
                committing = True
                connection.commit()
            # Otherwise closing the connection rolls the insert back.
    finally:
        if not committing:
            _discard(runtime, stored.key)
    return won


def _discard(runtime: JobRuntime, key: str) -> None:
    """Delete an attempt's object that no row names, then (only then) its intent; a failure
    is logged, never raised (the job's outcome, or the exception on its way, matters more),
    and leaves the intent for the orphan sweep."""
    try:
        runtime.storage.delete(key)
    except Exception as exc:
        # Our own message for a transient fault; only the type for anything else.
        why = str(exc) if isinstance(exc, StorageUnavailable) else type(exc).__name__
        logger.warning("report object %s left for the sweep, no row names it: %s", key, why)
        return
    drop_intent(runtime.engine, key)
