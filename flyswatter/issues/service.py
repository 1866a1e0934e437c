"""Issue writes: create, update, transition, label, delete; each checks who may do it,
records its history and bumps the issue's version in the request's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.db import utcnow
from flyswatter.errors import Conflict, NotFound, UnprocessableEntity
from flyswatter.http.conditional import check_if_match, etag_of
from flyswatter.http.created import Created
from flyswatter.http.headers import api_path
from flyswatter.issues.activity import record_activity, record_deletion
from flyswatter.issues.dependencies import IssueAccess, IssueWrite
from flyswatter.issues.models import (
    TRANSITIONS,
    ActivityAction,
    Issue,
    IssueCreate,
    IssuePublic,
    IssueStatus,
    IssueUpdate,
    Priority,
    TransitionRequest,
)
from flyswatter.issues.read_model import build_public_issue, build_public_issues
from flyswatter.labels.models import IssueLabel, Label, label_id
from flyswatter.observability.metrics import ISSUE_TRANSITIONS
from flyswatter.projects.models import Project, ProjectMember, Role
from flyswatter.projects.service import ProjectAccess

# The fields PATCH sets as they are, each recorded as an update of that field.
_PLAIN_FIELDS = ("title", "description", "type", "priority")


async def allocate_issue_number(session: AsyncSession, project_id: int) -> int:
    """The next number in the project, race-free: the UPDATE locks the project row until
    the creating transaction ends, so concurrent creates queue instead of colliding."""
    result = await session.exec(
        update(Project)
        .where(col(Project.id) == project_id)
        .values(last_issue_number=Project.last_issue_number + 1)
        .returning(col(Project.last_issue_number))
    )
    return int(result.scalar_one())


async def require_member(session: AsyncSession, project_id: int, user_id: str) -> None:
    member = await session.get(ProjectMember, (project_id, user_id))
    if member is None:
        raise UnprocessableEntity(
            "the assignee must be a member of the project", loc=("body", "assignee_id")
        )


async def labels_by_name(
    session: AsyncSession, project_id: int, names: Sequence[str]
) -> list[Label]:
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found = (
        await session.exec(
            select(Label).where(Label.project_id == project_id, col(Label.name).in_(wanted))
        )
    ).all()
    missing = sorted(set(wanted) - {label.name for label in found})
    if missing:
        raise UnprocessableEntity(
            f"unknown label(s) in this project: {', '.join(missing)}", loc=("body", "labels")
        )
    by_name = {label.name: label for label in found}
    return [by_name[name] for name in wanted]


async def issue_label_names(session: AsyncSession, issue_id: int) -> list[str]:
    rows = await session.exec(
        select(Label.name)
        .join(IssueLabel, col(IssueLabel.label_id) == Label.id)
        .where(IssueLabel.issue_id == issue_id)
        .order_by(col(Label.name))
    )
    return list(rows.all())


async def create_issue(
    session: AsyncSession, access: ProjectAccess, body: IssueCreate
) -> Created[IssuePublic]:
    """Report an issue, staged in the transaction for the caller to commit."""
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
    record_activity(session, principal, issue.id, ActivityAction.created, field="key", new=key)
    await session.flush()
    (public,) = await build_public_issues(session, access.project, [issue])
    return Created(public, api_path("issues", key), etag_of("issue", issue.id, issue.version))


async def apply_update(write: IssueWrite, body: IssueUpdate) -> IssuePublic:
    """Change fields; ``labels`` replaces the set. Reporters may edit the title and
    description of issues they reported; everything else needs the developer role."""
    session, access = write.session, write.access
    check_if_match(write.if_match, access.etag)
    issue, principal = access.issue, access.principal
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
    changed = _set_plain_fields(session, access, changes)
    if "assignee_id" in changes and changes["assignee_id"] != issue.assignee_id:
        await _assign(session, access, changes["assignee_id"])
        changed = True
    if changes.get("labels") is not None:
        wanted = list(dict.fromkeys(changes["labels"]))
        changed |= await _replace_labels(session, access, wanted)
    if changed:
        await _commit_change(session, access)
    return await build_public_issue(session, access)


def _set_plain_fields(session: AsyncSession, access: IssueAccess, changes: dict[str, Any]) -> bool:
    issue = access.issue
    changed = False
    for field in _PLAIN_FIELDS:
        new = changes.get(field)
        if new is None or new == getattr(issue, field):
            continue
        old = getattr(issue, field)
        setattr(issue, field, new)
        if field == "priority":
            issue.priority_rank = Priority(new).rank
        record_activity(
            session,
            access.principal,
            access.issue_id,
            ActivityAction.updated,
            field=field,
            old=old,
            new=new,
        )
        changed = True
    return changed


async def _assign(session: AsyncSession, access: IssueAccess, assignee_id: str | None) -> None:
    if assignee_id is not None:
        await require_member(session, access.project_access.project_id, assignee_id)
    record_activity(
        session,
        access.principal,
        access.issue_id,
        ActivityAction.assigned,
        field="assignee_id",
        old=access.issue.assignee_id,
        new=assignee_id,
    )
    access.issue.assignee_id = assignee_id


async def _replace_labels(session: AsyncSession, access: IssueAccess, names: list[str]) -> bool:
    issue_id, project_id = access.issue_id, access.project_access.project_id
    wanted = await labels_by_name(session, project_id, names)
    current = set(await issue_label_names(session, issue_id))
    added = [label for label in wanted if label.name not in current]
    removed = sorted(current - {label.name for label in wanted})
    for label in added:
        session.add(IssueLabel(issue_id=issue_id, label_id=label_id(label)))
        _record_labels(session, access, ActivityAction.labeled, new=label.name)
    if removed:
        removed_labels = await labels_by_name(session, project_id, removed)
        await session.exec(
            delete(IssueLabel).where(
                col(IssueLabel.issue_id) == issue_id,
                col(IssueLabel.label_id).in_([label.id for label in removed_labels]),
            )
        )
        for name in removed:
            _record_labels(session, access, ActivityAction.unlabeled, old=name)
    return bool(added or removed)


def _record_labels(
    session: AsyncSession, access: IssueAccess, action: ActivityAction, **change: str
) -> None:
    # One label's name per entry: the field is the label, not the issue's list of labels.
    record_activity(session, access.principal, access.issue_id, action, field="label", **change)


async def _commit_change(session: AsyncSession, access: IssueAccess) -> None:
    """A new version of the issue, committed with everything staged for it."""
    access.issue.version += 1
    access.issue.updated_at = utcnow()
    session.add(access.issue)
    await session.commit()


async def transition(write: IssueWrite, body: TransitionRequest) -> IssuePublic:
    """Move the issue through the workflow (developers)."""
    session, access = write.session, write.access
    access.project_access.require(Role.developer, "moving issues through the workflow")
    check_if_match(write.if_match, access.etag)
    issue = access.issue
    current = IssueStatus(issue.status)
    allowed = TRANSITIONS[current]
    if body.to not in allowed:
        names = ", ".join(status.value for status in allowed)
        raise Conflict(
            f"an issue in {current.value} can move to: {names}",
            extra={"from": current.value, "allowed": [s.value for s in allowed]},
        )
    record_activity(
        session,
        access.principal,
        access.issue_id,
        ActivityAction.transitioned,
        field="status",
        old=current.value,
        new=body.to.value,
    )
    issue.status = body.to
    issue.closed_at = utcnow() if body.to == IssueStatus.closed else None
    await _commit_change(session, access)
    ISSUE_TRANSITIONS.labels(to=body.to.value).inc()
    return await build_public_issue(session, access)


async def change_labels(
    write: IssueWrite, *, add: str | None = None, remove: str | None = None
) -> IssuePublic:
    """Attach or detach one label (developers); attaching twice changes nothing."""
    session, access = write.session, write.access
    access.project_access.require(Role.developer, "labelling issues")
    check_if_match(write.if_match, access.etag)
    current = await issue_label_names(session, access.issue_id)
    if remove is not None and remove not in current:
        raise NotFound(f"issue {access.key} has no label {remove}")
    if add is not None:
        try:
            await labels_by_name(session, access.project_access.project_id, [add])
        except UnprocessableEntity:
            # The same refusal as for a body's unknown label, pointing at where the name was.
            raise UnprocessableEntity(
                f"unknown label in this project: {add}", loc=("path", "name")
            ) from None
    wanted = [*current, add] if add is not None else [n for n in current if n != remove]
    if await _replace_labels(session, access, wanted):
        await _commit_change(session, access)
    return await build_public_issue(session, access)


async def delete_issue(write: IssueWrite) -> None:
    """Delete an issue with its comments and history (maintainers)."""
    write.access.project_access.require(Role.maintainer, "deleting issues")
    check_if_match(write.if_match, write.access.etag)
    await record_deletion(write.session, write.access.principal, write.access.issue_id)
    await write.session.delete(write.access.issue)
    await write.session.commit()
