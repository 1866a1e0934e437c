"""Jobs seen from the API: requesting one, finding those a caller may see, the public shape."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
from fastapi import Path
from pydantic import ValidationError
from sqlalchemy import Select, and_, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.config import Settings
from flyswatter.errors import NotFound, UnprocessableEntity
from flyswatter.http.headers import api_path, retry_after
from flyswatter.jobs.models import Job, JobKind, JobPublic, JobState, ReportParameters
from flyswatter.projects.models import Project, ProjectMember, Role
from flyswatter.projects.service import ProjectAccess, caller_membership
from flyswatter.storage.models import Artifact, ArtifactPublic

if TYPE_CHECKING:
    from flyswatter.jobs.worker import JobsCelery

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
JobIdPath = Annotated[
    str,
    Path(
        min_length=32,
        max_length=32,
        pattern=JOB_ID_PATTERN,
        description="The job's public id.",
        examples=["3f2b8c0e9d6a4b1c8e7f6a5b4c3d2e1f"],
    ),
]
# How long a client polling a job is asked to wait before asking again.
POLL_SECONDS = 2


class JobQueue:
    """The API's side of the job system: a Celery app that publishes, made on first use
    (Celery costs start-up time that a worker process of the API that never meets a report
    need not pay)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def celery(self) -> JobsCelery:
        from flyswatter.jobs.worker import make_celery

        return make_celery(self.settings)

    async def publish(self, public_id: str) -> bool:
        """Hand the job to the broker; False when it cannot now (the sweep retries later)."""
        from flyswatter.jobs.worker import publish_job

        return await anyio.to_thread.run_sync(publish_job, self.celery, public_id)


def check_period(parameters: ReportParameters, now: datetime, default_days: int) -> None:
    """422 for a period that, once its defaults are applied as the worker will apply them,
    cannot be reported on (only ``from`` can make it so)."""
    if (problem := parameters.period_problem(now, default_days)) is not None:
        raise UnprocessableEntity(problem, loc=("body", "from"))


def new_report_job(access: ProjectAccess, body: ReportParameters, request_id: str | None) -> Job:
    now_queued = Job(
        public_id=secrets.token_hex(16),
        kind=JobKind.report,
        project_id=access.project_id,
        requested_by=access.principal.subject,
        parameters=body.model_dump_json(by_alias=True, exclude_defaults=True),
        request_id=request_id,
    )
    # Published right after the commit; if that fails, the sweep sees an old enqueued_at.
    now_queued.enqueued_at = now_queued.created_at
    return now_queued


@dataclass(frozen=True, slots=True)
class JobAccess:
    """A job the caller may see, with its project and the caller's role there."""

    job: Job
    project_key: str
    role: Role
    artifact: Artifact | None

    def public(self) -> JobPublic:
        return public_job(self.job, self.project_key, self.artifact)


def visible_jobs(principal: Principal) -> Select[Any]:
    """Jobs with their project key, the caller's role and artifact, limited to what it may see:
    a deleted project's jobs (and their files) answer 404 as the project does, until it is
    restored."""
    statement = (
        select(Job, Project.key, ProjectMember.role, Artifact)
        .join(Project, and_(col(Project.id) == Job.project_id, col(Project.deleted_at).is_(None)))
        .outerjoin(ProjectMember, caller_membership(principal, Job.project_id))
        .outerjoin(Artifact, col(Artifact.id) == Job.artifact_id)
    )
    if not principal.is_admin:
        statement = statement.where(col(ProjectMember.role).is_not(None))
    return statement  # type: ignore[return-value]


def _access(principal: Principal, row: Any) -> JobAccess:
    job, project_key, role, artifact = row
    effective = Role.maintainer if principal.is_admin else Role(role)
    return JobAccess(job=job, project_key=project_key, role=effective, artifact=artifact)


async def load_job_access(
    session: AsyncSession, principal: Principal, public_id: str, *, for_update: bool = False
) -> JobAccess:
    statement = visible_jobs(principal).where(col(Job.public_id) == public_id)
    if for_update:
        statement = statement.with_for_update(of=Job)
    row = (await session.exec(statement)).first()  # type: ignore[call-overload]
    if row is None:
        raise NotFound(f"job {public_id} not found")
    return _access(principal, row)


def job_location(public_id: str) -> str:
    return api_path("jobs", public_id)


def shown_parameters(stored: str) -> ReportParameters:
    """The job's parameters as the API shows them. A job stored before a rule existed may
    hold a value refused today: the job is still shown (the worker fails it, its ``error``
    naming the rule), with every parameter that validates alone, and without those that do
    not (nor keys the model no longer has), so that the answer keeps to its schema."""
    try:
        return ReportParameters.model_validate_json(stored)
    except ValidationError:
        pass
    try:
        raw = json.loads(stored)
    except ValueError:
        raw = None
    shown: dict[str, Any] = {}
    for name, field in ReportParameters.model_fields.items():
        key = field.alias or name
        if not isinstance(raw, dict) or key not in raw:
            continue
        try:
            alone = ReportParameters.model_validate({key: raw[key]})
        except ValidationError:
            continue
        shown[name] = getattr(alone, name)
    return ReportParameters.model_construct(**shown)


def public_job(job: Job, project_key: str, artifact: Artifact | None) -> JobPublic:
    links = {"self": job_location(job.public_id)}
    if artifact is not None:
        links["artifact"] = api_path("jobs", job.public_id, "artifact")
    return JobPublic(
        id=job.public_id,
        kind=job.kind,
        state=job.state,
        attempts=job.attempts,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        project_key=project_key,
        requested_by=job.requested_by,
        parameters=shown_parameters(job.parameters),
        artifact=ArtifactPublic.model_validate(artifact, from_attributes=True)
        if artifact is not None
        else None,
        links=links,
    )


def job_filter(
    statement: Select[Any],
    *,
    states: list[JobState] | None,
    kinds: list[JobKind] | None,
    project_key: str | None,
) -> Select[Any]:
    if states:
        statement = statement.where(col(Job.state).in_(states))
    if kinds:
        statement = statement.where(col(Job.kind).in_(kinds))
    if project_key:
        statement = statement.where(col(Project.key) == project_key.upper())
    return statement


def after_cursor(statement: Select[Any], created_at: Any, job_id: int) -> Select[Any]:
    return statement.where(
        or_(
            col(Job.created_at) < created_at,
            and_(col(Job.created_at) == created_at, col(Job.id) < job_id),
        )
    )


def polling_headers(job: Job) -> dict[str, str]:
    """``Retry-After`` while the job is queued or running: when to look again."""
    return {} if JobState(job.state).finished else {"Retry-After": retry_after(POLL_SECONDS)}
