"""Issue routes: create and list in a project; read, change, move and delete by key."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import delete as sql_delete
from sqlalchemy import func
from sqlmodel import col, select

from flyswatter.auth.dependencies import IssuesRead
from flyswatter.auth.scopes import Scope
from flyswatter.db import SessionDep, utcnow
from flyswatter.errors import Conflict, NotFound, problem_responses
from flyswatter.http.conditional import (
    NOT_MODIFIED,
    IfMatch,
    IfNoneMatch,
    check_if_match,
    etag_of,
    not_modified,
)
from flyswatter.http.idempotency import IdempotencyDep
from flyswatter.http.pagination import CountParam, KeysetDep, Page
from flyswatter.issues.listing import (
    MAX_QUERY_LENGTH,
    IssueFilters,
    IssueSort,
    list_statement,
    page_statement,
)
from flyswatter.issues.models import (
    TRANSITIONS,
    Activity,
    ActivityAction,
    ActivityPublic,
    Issue,
    IssueCreate,
    IssuePublic,
    IssueStatus,
    IssueType,
    IssueUpdate,
    Priority,
    TransitionRequest,
)
from flyswatter.issues.service import (
    ISSUES_WITH_PEOPLE,
    PUBLIC_ISSUE_COLUMNS,
    IssueAccess,
    IssueForReading,
    IssueForWriting,
    IssueKeyPath,
    allocate_issue_number,
    build_public_issue,
    build_public_issues,
    issue_label_names,
    labels_by_name,
    public_issues_page,
    read_issue,
    record_activity,
    require_member,
    users_by_id,
)
from flyswatter.labels.models import IssueLabel, LabelName, label_id
from flyswatter.observability.metrics import ISSUE_TRANSITIONS, ISSUES_CREATED
from flyswatter.projects.models import Role
from flyswatter.projects.service import ProjectAccess, project_access

router = APIRouter(tags=["issues"])

ProjectForReadingIssues = Annotated[
    ProjectAccess, Depends(project_access(Role.viewer, Scope.issues_read, "reading issues"))
]
ProjectForReporting = Annotated[
    ProjectAccess, Depends(project_access(Role.reporter, Scope.issues_write, "reporting issues"))
]
AUTH_ERRORS = problem_responses(401, 403, 404, 422, 429)


@router.post(
    "/projects/{key}/issues",
    status_code=status.HTTP_201_CREATED,
    response_model=IssuePublic,
    responses=problem_responses(409) | AUTH_ERRORS,
)
async def create_issue(
    body: IssueCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    access: ProjectForReporting,
    idempotency: IdempotencyDep,
) -> IssuePublic | JSONResponse:
    """Report an issue (reporters and up). Setting another assignee needs the developer role."""
    if (replayed := await idempotency.replay(session)) is not None:
        return replayed
    access.require_active()
    principal = access.principal
    if body.assignee_id is not None:
        if body.assignee_id != principal.subject:
            access.require(Role.developer, "assigning issues to others")
        await require_member(session, access.project_id, body.assignee_id)
    labels = await labels_by_name(session, access.project_id, body.labels)

    number = await allocate_issue_number(session, access.project_id)
    issue = Issue.model_validate(
        body.model_dump(exclude={"labels"}),
        update={
            "project_id": access.project_id,
            "number": number,
            "reporter_id": principal.subject,
            "priority_rank": body.priority.rank,
        },
    )
    session.add(issue)
    await session.flush()
    assert issue.id is not None
    for label in labels:
        session.add(IssueLabel(issue_id=issue.id, label_id=label_id(label)))
    key = f"{access.project.key}-{number}"
    record_activity(session, request, principal, issue.id, ActivityAction.created, new=key)
    await session.flush()
    public = (await build_public_issues(session, access.project, [issue]))[0]
    location = f"/api/v1/issues/{key}"
    etag = etag_of("issue", issue.id, issue.version)
    await idempotency.record(session, 201, public, location=location, etag=etag)
    if (replayed := await idempotency.commit(session)) is not None:
        return replayed
    ISSUES_CREATED.inc()
    response.headers["Location"] = location
    response.headers["ETag"] = etag
    return public


@router.get(
    "/projects/{key}/issues",
    response_model=Page[IssuePublic],
    responses=problem_responses(400) | AUTH_ERRORS,
)
async def list_issues(
    session: SessionDep,
    access: ProjectForReadingIssues,
    keyset: KeysetDep,
    status_: Annotated[
        list[IssueStatus] | None, Query(alias="status", description="Any of these statuses.")
    ] = None,
    assignee: Annotated[
        str | None,
        Query(max_length=255, description="A user id, `me`, or `none` for unassigned issues."),
    ] = None,
    reporter: Annotated[
        str | None, Query(max_length=255, description="A user id, or `me`.")
    ] = None,
    label: Annotated[
        list[LabelName] | None,
        Query(max_length=10, description="Label name; repeat for issues with all of them."),
    ] = None,
    priority: Annotated[list[Priority] | None, Query(description="Any of these.")] = None,
    type_: Annotated[
        list[IssueType] | None, Query(alias="type", description="Any of these.")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            description="Full-text search over title and description.",
        ),
    ] = None,
    sort: Annotated[IssueSort, Query(description="Order; `-` for descending.")] = (
        IssueSort.updated_desc
    ),
    count: CountParam = False,
) -> Page[IssuePublic]:
    me = access.principal.subject
    filters = IssueFilters(
        statuses=tuple(status_ or ()),
        assignee=me if assignee == "me" else assignee,
        reporter=me if reporter == "me" else reporter,
        labels=tuple(dict.fromkeys(label or ())),
        priorities=tuple(priority or ()),
        types=tuple(type_ or ()),
        query=q.strip() or None if q else None,
    )
    dialect = session.bind.dialect.name if session.bind else "postgresql"
    matching = list_statement(access.project_id, filters, sort, dialect)
    total = None
    if count:
        total = (await session.exec(select(func.count()).select_from(matching.subquery()))).one()
    # The page with its people in one statement of Core rows, then its labels in one more.
    paged = page_statement(
        matching, sort, keyset.after(sort.value, sort.cursor_types), keyset.fetch
    )
    connection = await session.connection()
    rows = list(
        await connection.execute(
            paged.with_only_columns(*PUBLIC_ISSUE_COLUMNS).select_from(ISSUES_WITH_PEOPLE)
        )
    )
    return await keyset.page(
        rows,
        sort=sort.value,
        key=sort.cursor_values,
        build=lambda page: public_issues_page(session, access.project.key, page),
        total=total,
    )


@router.get(
    "/issues/{issue_key}",
    response_model=IssuePublic,
    responses=NOT_MODIFIED | AUTH_ERRORS,
)
async def get_issue(
    issue_key: IssueKeyPath,
    response: Response,
    session: SessionDep,
    principal: IssuesRead,
    if_none_match: IfNoneMatch = None,
) -> IssuePublic | Response:
    # The hottest read: access, issue and people in one statement, labels in a second.
    found = await read_issue(session, principal, issue_key)
    if (unchanged := not_modified(if_none_match, found.etag)) is not None:
        return unchanged
    response.headers["ETag"] = found.etag
    (public,) = await public_issues_page(session, found.project_key, [found.row])
    return public


def _touch(access: IssueAccess) -> None:
    access.issue.version += 1
    access.issue.updated_at = utcnow()


@router.patch(
    "/issues/{issue_key}",
    response_model=IssuePublic,
    responses=problem_responses(409, 412) | AUTH_ERRORS,
)
async def update_issue(
    body: IssueUpdate,
    request: Request,
    response: Response,
    session: SessionDep,
    access: IssueForWriting,
    if_match: IfMatch = None,
) -> IssuePublic:
    """Change fields; `labels` replaces the set. Reporters may edit the title and description
    of issues they reported; everything else needs the developer role."""
    check_if_match(if_match, access.etag)
    issue, principal = access.issue, access.project_access.principal
    changes = body.model_dump(exclude_unset=True)
    own_text_only = set(changes) <= {"title", "description"} and issue.reporter_id == (
        principal.subject
    )
    # Having reported an issue grants nothing beyond one's role: a reporter since demoted
    # to viewer may no longer edit it.
    if own_text_only:
        access.project_access.require(Role.reporter, "editing issues")
    else:
        access.project_access.require(Role.developer, "editing this issue")
    assert issue.id is not None
    changed = False

    for field in ("title", "description", "type", "priority"):
        if (
            field in changes
            and changes[field] is not None
            and changes[field] != getattr(issue, field)
        ):
            old = getattr(issue, field)
            setattr(issue, field, changes[field])
            if field == "priority":
                issue.priority_rank = Priority(changes[field]).rank
            record_activity(
                session,
                request,
                principal,
                issue.id,
                ActivityAction.updated,
                field=field,
                old=old,
                new=changes[field],
            )
            changed = True

    if "assignee_id" in changes and changes["assignee_id"] != issue.assignee_id:
        new_assignee = changes["assignee_id"]
        if new_assignee is not None:
            await require_member(session, access.project_access.project_id, new_assignee)
        record_activity(
            session,
            request,
            principal,
            issue.id,
            ActivityAction.assigned,
            field="assignee_id",
            old=issue.assignee_id,
            new=new_assignee,
        )
        issue.assignee_id = new_assignee
        changed = True

    if changes.get("labels") is not None:
        changed |= await _replace_labels(
            session, request, access, list(dict.fromkeys(changes["labels"]))
        )

    if changed:
        _touch(access)
        session.add(issue)
        await session.commit()
    response.headers["ETag"] = access.etag
    return await build_public_issue(session, access)


async def _replace_labels(
    session: SessionDep, request: Request, access: IssueAccess, names: list[str]
) -> bool:
    issue, principal = access.issue, access.project_access.principal
    assert issue.id is not None
    wanted = await labels_by_name(session, access.project_access.project_id, names)
    current = set(await issue_label_names(session, issue.id))
    added = [label for label in wanted if label.name not in current]
    removed = current - {label.name for label in wanted}
    for label in added:
        session.add(IssueLabel(issue_id=issue.id, label_id=label_id(label)))
        record_activity(
            session,
            request,
            principal,
            issue.id,
            ActivityAction.labeled,
            field="labels",
            new=label.name,
        )
    if removed:
        removed_labels = await labels_by_name(
            session, access.project_access.project_id, sorted(removed)
        )
        await session.exec(
            sql_delete(IssueLabel).where(
                col(IssueLabel.issue_id) == issue.id,
                col(IssueLabel.label_id).in_([label.id for label in removed_labels]),
            )
        )
        for name in sorted(removed):
            record_activity(
                session,
                request,
                principal,
                issue.id,
                ActivityAction.unlabeled,
                field="labels",
                old=name,
            )
    return bool(added or removed)


@router.delete(
    "/issues/{issue_key}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(409, 412) | AUTH_ERRORS,
)
async def delete_issue(
    session: SessionDep, access: IssueForWriting, if_match: IfMatch = None
) -> None:
    """Delete an issue with its comments and history (maintainers)."""
    access.project_access.require(Role.maintainer, "deleting issues")
    check_if_match(if_match, access.etag)
    await session.delete(access.issue)
    await session.commit()


@router.post(
    "/issues/{issue_key}/transitions",
    response_model=IssuePublic,
    responses=problem_responses(409, 412) | AUTH_ERRORS,
)
async def transition_issue(
    body: TransitionRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    access: IssueForWriting,
    if_match: IfMatch = None,
) -> IssuePublic:
    """Move the issue through the workflow (developers): open → in_progress → resolved →
    closed; back to open from in_progress, resolved or closed; open → closed."""
    access.project_access.require(Role.developer, "moving issues through the workflow")
    check_if_match(if_match, access.etag)
    issue = access.issue
    current = IssueStatus(issue.status)
    allowed = TRANSITIONS[current]
    if body.to not in allowed:
        names = ", ".join(status.value for status in allowed)
        raise Conflict(
            f"an issue in {current.value} can move to: {names}",
            extra={"from": current.value, "allowed": [s.value for s in allowed]},
        )
    assert issue.id is not None
    record_activity(
        session,
        request,
        access.project_access.principal,
        issue.id,
        ActivityAction.transitioned,
        field="status",
        old=current.value,
        new=body.to.value,
    )
    issue.status = body.to
    issue.closed_at = utcnow() if body.to == IssueStatus.closed else None
    _touch(access)
    session.add(issue)
    await session.commit()
    ISSUE_TRANSITIONS.labels(to=body.to.value).inc()
    response.headers["ETag"] = access.etag
    return await build_public_issue(session, access)


LabelNamePath = Annotated[str, Path(min_length=1, max_length=50, description="Label name.")]


@router.post(
    "/issues/{issue_key}/labels/{name}",
    response_model=IssuePublic,
    responses=problem_responses(409, 412) | AUTH_ERRORS,
)
async def attach_label(
    name: LabelNamePath,
    request: Request,
    response: Response,
    session: SessionDep,
    access: IssueForWriting,
    if_match: IfMatch = None,
) -> IssuePublic:
    """Attach a project label to the issue (developers); attaching twice changes nothing."""
    return await _change_labels(request, response, session, access, if_match, add=name)


@router.delete(
    "/issues/{issue_key}/labels/{name}",
    response_model=IssuePublic,
    responses=problem_responses(409, 412) | AUTH_ERRORS,
)
async def detach_label(
    name: LabelNamePath,
    request: Request,
    response: Response,
    session: SessionDep,
    access: IssueForWriting,
    if_match: IfMatch = None,
) -> IssuePublic:
    """Detach a label from the issue (developers)."""
    return await _change_labels(request, response, session, access, if_match, remove=name)


async def _change_labels(
    request: Request,
    response: Response,
    session: SessionDep,
    access: IssueAccess,
    if_match: str | None,
    *,
    add: str | None = None,
    remove: str | None = None,
) -> IssuePublic:
    access.project_access.require(Role.developer, "labelling issues")
    check_if_match(if_match, access.etag)
    assert access.issue.id is not None
    current = await issue_label_names(session, access.issue.id)
    if remove is not None and remove not in current:
        raise NotFound(f"issue {access.key} has no label {remove}")
    wanted = [*current, add] if add is not None else [n for n in current if n != remove]
    if await _replace_labels(session, request, access, wanted):
        _touch(access)
        session.add(access.issue)
        await session.commit()
    response.headers["ETag"] = access.etag
    return await build_public_issue(session, access)


@router.get(
    "/issues/{issue_key}/activity",
    response_model=Page[ActivityPublic],
    responses=problem_responses(400) | AUTH_ERRORS,
)
async def list_activity(
    session: SessionDep, access: IssueForReading, keyset: KeysetDep
) -> Page[ActivityPublic]:
    """The issue's history, oldest first."""
    statement = select(Activity).where(Activity.issue_id == access.issue.id)
    if (after := keyset.after("id", (int,))) is not None:
        statement = statement.where(col(Activity.id) > after[0])
    rows = (await session.exec(statement.order_by(col(Activity.id)).limit(keyset.fetch))).all()
    return await keyset.page(
        rows,
        sort="id",
        key=lambda row: [row.id],
        build=lambda page: _public_activity(session, page),
    )


async def _public_activity(session: SessionDep, page: list[Activity]) -> list[ActivityPublic]:
    actors = await users_by_id(session, [row.actor_id for row in page])
    return [
        ActivityPublic(
            id=row.id or 0,
            action=row.action,
            field=row.field,
            old_value=None if row.old_value is None else json.loads(row.old_value),
            new_value=None if row.new_value is None else json.loads(row.new_value),
            actor=actors[row.actor_id],
            client_id=row.client_id,
            request_id=row.request_id,
            created_at=row.created_at,
        )
        for row in page
    ]
