"""Job routes: request a report, follow the job, download its file, cancel it while queued,
delete it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlmodel import col

from flyswatter.auth.dependencies import IssuesRead
from flyswatter.auth.scopes import Scope
from flyswatter.auth.tokens import Principal
from flyswatter.db import SessionDep
from flyswatter.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    problem_responses,
)
from flyswatter.http.context import request_context
from flyswatter.http.idempotency import ReadIdempotencyDep
from flyswatter.http.pagination import KeysetDep, Page
from flyswatter.jobs.models import Job, JobKind, JobPublic, JobState, ReportRequest
from flyswatter.jobs.service import (
    JobAccess,
    JobIdPath,
    after_cursor,
    check_period,
    job_filter,
    job_location,
    load_job_access,
    new_report_job,
    polling_headers,
    public_job,
    visible_jobs,
)
from flyswatter.observability.metrics import JOBS_FINISHED, JOBS_REQUESTED, create_job_series
from flyswatter.projects.models import Role
from flyswatter.projects.service import ProjectAccess, project_access
from flyswatter.services import ServicesDep
from flyswatter.storage.downloads import stored_file_response

router = APIRouter(tags=["jobs"])

# A report only reads issues: `issues:read` (a read-only integration may ask for one); the
# project role (reporter and up) decides who may make the service do that work.
ProjectForReports = Annotated[
    ProjectAccess,
    Depends(project_access(Role.reporter, Scope.issues_read, "requesting reports")),
]
AUTH_ERRORS = problem_responses(401, 403, 404, 422, 429)
LIST_SORT = "-created_at"
# The API's job series exist from start-up (zeros), as the worker's do.
create_job_series(kind.value for kind in JobKind)


@router.post(
    "/projects/{key}/reports",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=problem_responses(409) | AUTH_ERRORS,
)
async def request_report(
    request: Request,
    response: Response,
    session: SessionDep,
    access: ProjectForReports,
    idempotency: ReadIdempotencyDep,
    services: ServicesDep,
    body: Annotated[ReportRequest | None, Body()] = None,
) -> JobPublic | JSONResponse:
    """Ask for a PDF report of the project (reporters and up): its period (`from`/`to`,
    default the last 30 days) and the issue list's filters. Answers 202 with the job; poll
    `Location` until it has succeeded, then download `links.artifact`."""
    if (replayed := await idempotency.replay(session)) is not None:
        return replayed
    # A report reads the project (a read-only token may ask for one): an archived project,
    # which stays readable, is reported on too.
    parameters = body or ReportRequest()
    job = new_report_job(access, parameters, request_context(request.scope).request_id)
    # Checked at the job's own time, which its build resolves the period's defaults with.
    check_period(parameters, job.created_at, services.settings.report_default_days)
    session.add(job)
    await session.flush()
    public = public_job(job, access.project.key, None)
    location = job_location(job.public_id)
    await idempotency.record(session, 202, public, location=location)
    # Before the commit: a replay answers with its own response, and nothing here can fail.
    response.headers["Location"] = location
    response.headers.update(polling_headers(job))
    if (replayed := await idempotency.commit(session)) is not None:
        return replayed
    JOBS_REQUESTED.labels(JobKind.report.value).inc()
    # After the commit, and never failing the request: a broker that is down leaves the
    # job queued in the database, and the worker's sweep publishes it again later.
    await services.jobs.publish(job.public_id)
    return public


@router.get("/jobs", response_model=Page[JobPublic], responses=problem_responses(400) | AUTH_ERRORS)
async def list_jobs(
    session: SessionDep,
    principal: IssuesRead,
    keyset: KeysetDep,
    state: Annotated[list[JobState] | None, Query(description="Any of these states.")] = None,
    kind: Annotated[list[JobKind] | None, Query(description="Any of these kinds.")] = None,
    project: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z][A-Za-z0-9]{1,9}$", description="A project key."),
    ] = None,
) -> Page[JobPublic]:
    """Jobs of the projects the caller may see, newest first, failed ones included."""
    statement = job_filter(visible_jobs(principal), states=state, kinds=kind, project_key=project)
    if (after := keyset.after(LIST_SORT, (str, int))) is not None:
        try:
            created_at = datetime.fromisoformat(after[0])
        except ValueError:
            raise BadRequest("invalid cursor") from None
        if created_at.tzinfo is None:
            raise BadRequest("invalid cursor")
        statement = after_cursor(statement, created_at, after[1])
    statement = statement.order_by(col(Job.created_at).desc(), col(Job.id).desc())
    rows = list((await session.exec(statement.limit(keyset.fetch))).all())  # type: ignore[call-overload]
    return await keyset.page(
        rows,
        sort=LIST_SORT,
        key=lambda row: [row[0].created_at.isoformat(), row[0].id],
        build=lambda page: [public_job(job, key, artifact) for job, key, _, artifact in page],
    )


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=AUTH_ERRORS)
async def get_job(
    job_id: JobIdPath, response: Response, session: SessionDep, principal: IssuesRead
) -> JobPublic:
    """The job's state; `Retry-After` says when to look again while it is queued or running."""
    access = await load_job_access(session, principal, job_id)
    response.headers.update(polling_headers(access.job))
    return access.public()


async def _load_for_change(
    session: SessionDep, principal: Principal, job_id: str, doing: str
) -> JobAccess:
    """The job, locked, if the caller may change it: whoever requested it, or a maintainer."""
    access = await load_job_access(session, principal, job_id, for_update=True)
    own = access.job.requested_by == principal.subject and access.role.includes(Role.reporter)
    if not own and not access.role.includes(Role.maintainer):
        raise Forbidden(f"{doing} others' jobs needs the maintainer role in {access.project_key}")
    return access


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobPublic,
    responses=problem_responses(409) | AUTH_ERRORS,
)
async def cancel_job(job_id: JobIdPath, session: SessionDep, principal: IssuesRead) -> JobPublic:
    """Cancel a queued job (whoever requested it, or a maintainer) and keep it, in state
    `cancelled`; a job that started cannot be cancelled (409)."""
    access = await _load_for_change(session, principal, job_id, "cancelling")
    job = access.job
    if job.state != JobState.queued:
        raise Conflict(f"job {job_id} is {job.state}; only a queued job can be cancelled")
    job.state = JobState.cancelled
    job.finished_at = datetime.now(job.created_at.tzinfo)
    session.add(job)
    public = access.public()
    await session.commit()
    JOBS_FINISHED.labels(job.kind, JobState.cancelled.value).inc()
    return public


@router.delete(
    "/jobs/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(409) | AUTH_ERRORS,
)
async def delete_job(job_id: JobIdPath, session: SessionDep, principal: IssuesRead) -> None:
    """Delete a job (whoever requested it, or a maintainer): a queued one is cancelled first, a
    running one cannot be deleted until it ends (409). Afterwards the job and its file answer
    404; the file is removed from the storage by the worker's expiry sweep."""
    access = await _load_for_change(session, principal, job_id, "deleting")
    job = access.job
    if job.state == JobState.running:
        raise Conflict(f"job {job_id} is running; delete it once it has finished")
    cancelled = job.state == JobState.queued
    if access.artifact is not None:
        # The sweep deletes the stored object, then the row: never a file without its row.
        access.artifact.expires_at = datetime.now(job.created_at.tzinfo)
        session.add(access.artifact)
    await session.delete(job)
    await session.commit()
    if cancelled:
        JOBS_FINISHED.labels(job.kind, JobState.cancelled.value).inc()


@router.get(
    "/jobs/{job_id}/artifact",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "The file"},
        307: {"description": "Redirect to a short-lived download URL (S3 storage)"},
        **problem_responses(409, 503),
        **AUTH_ERRORS,
    },
)
async def download_artifact(
    job_id: JobIdPath,
    request: Request,
    session: SessionDep,
    principal: IssuesRead,
    services: ServicesDep,
) -> Response:
    """The job's file: streamed, or a redirect to a presigned URL when the storage is S3
    and `FLYSWATTER_S3_PRESIGNED_DOWNLOADS` is on."""
    access = await load_job_access(session, principal, job_id)
    artifact = access.artifact
    if artifact is None:
        if access.job.state == JobState.succeeded:
            raise NotFound(f"the file of job {job_id} has expired; request the report again")
        raise Conflict(f"job {job_id} is {access.job.state}; it has no file")
    return await stored_file_response(
        services,
        session,
        artifact,
        artifact.key,
        gone=f"the file of job {job_id} is gone; request the report again",
    )
