"""Issue routes: create and list in a project; read, change, move and delete by key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import StringConstraints

from flyswatter.auth.dependencies import IssuesRead
from flyswatter.auth.scopes import Scope
from flyswatter.db import SessionDep
from flyswatter.errors import problem_responses
from flyswatter.http.conditional import CONDITIONAL_READ_RESPONSES, ConditionalReadDep
from flyswatter.http.created import creates
from flyswatter.http.idempotency import IdempotencyDep
from flyswatter.http.pagination import CountParam, KeysetDep, Page, lists
from flyswatter.issues import service
from flyswatter.issues.activity import activity_page
from flyswatter.issues.dependencies import (
    ISSUE_KEY_PATTERN,
    IssueForReading,
    IssueKeyPath,
    IssueKeysetDep,
    IssueWriteDep,
)
from flyswatter.issues.listing import (
    MAX_QUERY_LENGTH,
    IssueFilters,
    IssueQuery,
    IssueSort,
    issue_page,
)
from flyswatter.issues.models import (
    ActivityPublic,
    IssueCreate,
    IssuePublic,
    IssueStatus,
    IssueType,
    IssueUpdate,
    Priority,
    TransitionRequest,
)
from flyswatter.issues.read_model import public_issues_page, read_issue
from flyswatter.labels.models import LabelName, LabelNamePath
from flyswatter.moves.redirects import MOVED
from flyswatter.observability.metrics import ISSUES_CREATED
from flyswatter.projects.models import Role
from flyswatter.projects.service import PROJECT_ERRORS, ProjectAccess, project_access
from flyswatter.relations.service import parent_id as parent_filter
from flyswatter.services import ServicesDep
from flyswatter.text import SingleLine

router = APIRouter(tags=["issues"])

ProjectForReadingIssues = Annotated[
    ProjectAccess, Depends(project_access(Role.viewer, Scope.issues_read, "reading issues"))
]
# Holding the project row (shared): the reporter's and the assignee's memberships are read
# after it is locked, and no removal can land between those reads and the commit.
ProjectForReporting = Annotated[
    ProjectAccess,
    Depends(project_access(Role.reporter, Scope.issues_write, "reporting issues", lock="share")),
]
WRITE_ERRORS = problem_responses(409, 412) | PROJECT_ERRORS
ISSUE_LABEL = "/issues/{issue_key}/labels/{name}"


# People are never empty: an empty id names nobody, and the empty list it would answer reads
# as "no issues" to a client that meant no filter (a 422, as an empty q is).
PersonFilter = Annotated[SingleLine, StringConstraints(min_length=1, max_length=255)] | None


@router.post(
    "/projects/{key}/issues", **creates(IssuePublic, problem_responses(410) | PROJECT_ERRORS)
)
async def create_issue(
    body: IssueCreate, session: SessionDep, access: ProjectForReporting, idempotency: IdempotencyDep
) -> IssuePublic | JSONResponse:
    """Report an issue (reporters and up). Setting another assignee needs the developer role.
    A retry with the same `Idempotency-Key` replays the first answer, or is a 410 once the
    issue was deleted."""
    return await idempotency.create(
        lambda: service.create_issue(session, access, body), on_created=ISSUES_CREATED.inc
    )


@router.get("/projects/{key}/issues", **lists(IssuePublic, PROJECT_ERRORS))
async def list_issues(
    session: SessionDep,
    access: ProjectForReadingIssues,
    keyset: KeysetDep,
    status_: Annotated[
        list[IssueStatus] | None, Query(alias="status", description="Any of these statuses.")
    ] = None,
    assignee: Annotated[
        PersonFilter, Query(description="A user id, `me`, or `none` for unassigned issues.")
    ] = None,
    reporter: Annotated[PersonFilter, Query(description="A user id, or `me`.")] = None,
    label: Annotated[
        list[LabelName] | None,
        Query(max_length=10, description="Label name; repeat for issues with all of them."),
    ] = None,
    priority: Annotated[list[Priority] | None, Query(description="Any of these.")] = None,
    type_: Annotated[
        list[IssueType] | None, Query(alias="type", description="Any of these.")
    ] = None,
    q: Annotated[
        SingleLine | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            description="Full-text search over title and description.",
        ),
    ] = None,
    milestone: Annotated[
        SingleLine | None,
        Query(
            min_length=1,
            max_length=200,
            description="A milestone's title, or `none` for issues in no milestone.",
        ),
    ] = None,
    sort: Annotated[IssueSort, Query(description="Order; `-` for descending.")] = (
        IssueSort.updated_desc
    ),
    count: CountParam = False,
    blocked: Annotated[
        bool | None, Query(description="Has (`true`) or has no blocker open or in progress.")
    ] = None,
    parent: Annotated[
        str | None,
        Query(min_length=4, max_length=21, pattern=ISSUE_KEY_PATTERN, description="Sub-issues of."),
    ] = None,
    has_children: Annotated[bool | None, Query(description="Has sub-issues, or has none.")] = None,
) -> Page[IssuePublic]:
    me = access.principal.subject
    parent_id = await parent_filter(session, access.principal, parent) if parent else None
    filters = IssueFilters(
        statuses=tuple(status_ or ()),
        assignee=me if assignee == "me" else assignee,
        reporter=me if reporter == "me" else reporter,
        labels=tuple(dict.fromkeys(label or ())),
        priorities=tuple(priority or ()),
        types=tuple(type_ or ()),
        query=q.strip() or None if q else None,
        milestone=milestone,
        blocked=blocked,
        related_seen_by=None if access.principal.is_admin else me,
        parent_id=parent_id,
        has_children=has_children,
    )
    dialect = session.bind.dialect.name if session.bind else "postgresql"
    query = IssueQuery(access.project_id, filters, sort, dialect)
    return await issue_page(session, access.project.key, query, keyset, count=count)


@router.get(
    "/issues/{issue_key}",
    response_model=IssuePublic,
    responses=CONDITIONAL_READ_RESPONSES | PROJECT_ERRORS | MOVED,
)
async def get_issue(
    issue_key: IssueKeyPath,
    session: SessionDep,
    principal: IssuesRead,
    conditional: ConditionalReadDep,
) -> IssuePublic | Response:
    # The hottest read: access, issue and people in one statement, labels in a second.
    found = await read_issue(session, principal, issue_key)
    if (unchanged := conditional.answer(found.etag)) is not None:
        return unchanged
    (public,) = await public_issues_page(session, found.project_key, [found.row])
    return public


@router.patch("/issues/{issue_key}", response_model=IssuePublic, responses=WRITE_ERRORS)
async def update_issue(body: IssueUpdate, write: IssueWriteDep) -> IssuePublic:
    """Change fields; `labels` replaces the set. Reporters may edit the title and description
    of issues they reported; everything else needs the developer role."""
    return write.answer(await service.apply_update(write, body))


@router.delete("/issues/{issue_key}", status_code=204, responses=WRITE_ERRORS)
async def delete_issue(write: IssueWriteDep, services: ServicesDep) -> None:
    """Delete an issue with its comments, files and history (maintainers)."""
    await service.delete_issue(write, services.storage)


@router.post("/issues/{issue_key}/transitions", response_model=IssuePublic, responses=WRITE_ERRORS)
async def transition_issue(body: TransitionRequest, write: IssueWriteDep) -> IssuePublic:
    """Move the issue through the workflow (developers): open → in_progress → resolved →
    closed; back to open from in_progress, resolved or closed; open → closed."""
    return write.answer(await service.transition(write, body))


@router.post(
    "/issues/{issue_key}/labels/{name}", response_model=IssuePublic, responses=WRITE_ERRORS
)
async def attach_label(name: LabelNamePath, write: IssueWriteDep) -> IssuePublic:
    """Attach a project label to the issue (developers); attaching twice changes nothing."""
    return write.answer(await service.change_labels(write, add=name))


@router.delete(
    "/issues/{issue_key}/labels/{name}", response_model=IssuePublic, responses=WRITE_ERRORS
)
async def detach_label(name: LabelNamePath, write: IssueWriteDep) -> IssuePublic:
    """Detach a label from the issue (developers)."""
    return write.answer(await service.change_labels(write, remove=name))


@router.get("/issues/{issue_key}/activity", **lists(ActivityPublic, PROJECT_ERRORS | MOVED))
async def list_activity(
    session: SessionDep, access: IssueForReading, keyset: IssueKeysetDep
) -> Page[ActivityPublic]:
    """The issue's history, oldest first; a related issue in a project the caller may not
    see is named `(hidden)`."""
    return await activity_page(session, access, keyset)
