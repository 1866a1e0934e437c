"""Issue writes: create, update, transition, label, delete; each checks who may do it,
records its history and bumps the issue's version in the request's transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, tuple_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.attachments.service import delete_issue_files
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
from flyswatter.milestones.models import UNDATED_RANK, Milestone, due_rank
from flyswatter.observability.metrics import ISSUE_TRANSITIONS
from flyswatter.projects.models import Project, ProjectMember, Role
from flyswatter.projects.service import ProjectAccess
from flyswatter.storage.service import Storage
from flyswatter.watchers.service import auto_follow

# The fields PATCH sets as they are, each recorded as an update of that field.
_PLAIN_FIELDS = ("title", "description", "type", "priority")
# What a reporter may change on an issue they reported; everything else needs a developer.
_OWN_ISSUE_FIELDS = frozenset({"title", "description", "milestone"})


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


async def require_member(
    session: AsyncSession, project_id: int, user_id: str, *, loc: tuple[str, ...] = ("body",)
) -> None:
    member = await session.get(ProjectMember, (project_id, user_id))
    if member is None:
        raise UnprocessableEntity(
            "the assignee must be a member of the project", loc=(*loc, "assignee_id")
        )


async def labels_by_name(
    session: AsyncSession, project_id: int, names: Sequence[str], *, loc: Sequence[str] = ()
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
            f"unknown label(s) in this project: {', '.join(missing)}",
            loc=tuple(loc) or ("body", "labels"),
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


async def issue_labels(
    session: AsyncSession, issue_ids: Sequence[int]
) -> dict[int, dict[str, int]]:
    """Each issue's labels (name to id), in one statement however many issues."""
    rows = await session.exec(
        select(IssueLabel.issue_id, Label.name, IssueLabel.label_id)
        .join(Label, col(Label.id) == IssueLabel.label_id)
        .where(col(IssueLabel.issue_id).in_(issue_ids))
        .order_by(col(Label.name))
    )
    found: dict[int, dict[str, int]] = {issue_id: {} for issue_id in issue_ids}
    for issue_id, name, id_ in rows:
        found[issue_id][name] = id_
    return found


async def milestone_by_title(
    session: AsyncSession, project_id: int, title: str, *, loc: tuple[str, ...] = ("body",)
) -> Milestone:
    """The project's milestone of that title; a 422 for any other (another project's too)."""
    milestone = (
        await session.exec(
            select(Milestone).where(Milestone.project_id == project_id, Milestone.title == title)
        )
    ).first()
    if milestone is None:
        raise UnprocessableEntity(
            f"unknown milestone in this project: {title}", loc=(*loc, "milestone")
        )
    return milestone


async def milestone_titles(session: AsyncSession, ids: Iterable[int | None]) -> dict[int, str]:
    """Milestones' titles by id, in one statement (what history records of them)."""
    wanted = sorted({id_ for id_ in ids if id_ is not None})
    if not wanted:
        return {}
    rows = await session.exec(
        select(Milestone.id, Milestone.title).where(col(Milestone.id).in_(wanted))
    )
    return {id_: title for id_, title in rows if id_ is not None}


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
    milestone = None
    if body.milestone is not None:
        milestone = await milestone_by_title(session, access.project_id, body.milestone)

    number = await allocate_issue_number(session, access.project_id)
    issue = Issue.model_validate(
        body.model_dump(exclude={"labels", "milestone"}),
        update={
            "project_id": access.project_id,
            "number": number,
            "reporter_id": principal.subject,
            "priority_rank": body.priority.rank,
            "milestone_id": milestone.id if milestone else None,
            "milestone_due_rank": due_rank(milestone.due_on if milestone else None),
        },
    )
    session.add(issue)
    await session.flush()
    assert issue.id is not None
    for label in labels:
        session.add(IssueLabel(issue_id=issue.id, label_id=label_id(label)))
    key = f"{access.project.key}-{number}"
    record_activity(session, principal, issue.id, ActivityAction.created, field="key", new=key)
    await auto_follow(session, [issue.id], [principal.subject, body.assignee_id])
    await session.flush()
    (public,) = await build_public_issues(session, access.project, [issue])
    return Created(public, api_path("issues", key), etag_of("issue", issue.id, issue.version))


def require_edit(access: IssueAccess, fields: Iterable[str]) -> None:
    """Reporters may edit the title, description and milestone of issues they reported;
    everything else needs the developer role."""
    own = set(fields) <= _OWN_ISSUE_FIELDS and access.issue.reporter_id == (
        access.principal.subject
    )
    # Having reported an issue grants nothing beyond one's role: a reporter since demoted
    # to viewer may no longer edit it.
    if own:
        access.project_access.require(Role.reporter, "editing issues")
    else:
        access.project_access.require(Role.developer, "editing this issue")


@dataclass(slots=True)
class IssueChange:
    """One change to make to one issue or many, its references (people, labels, milestone)
    resolved once, however many issues it goes to."""

    # Title, description, type, priority: set as they are.
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: IssueStatus | None = None
    set_assignee: bool = False
    assignee_id: str | None = None
    labels: dict[str, int] | None = None  # the new set (name to id)
    add_labels: dict[str, int] = dataclasses.field(default_factory=dict)
    remove_labels: frozenset[str] = frozenset()
    set_milestone: bool = False
    milestone: Milestone | None = None

    @property
    def names(self) -> set[str]:
        """The fields it changes, as ``require_edit`` weighs them."""
        names = set(self.fields)
        if self.status is not None:
            names.add("status")
        if self.set_assignee:
            names.add("assignee_id")
        if self.touches_labels:
            names.add("labels")
        if self.set_milestone:
            names.add("milestone")
        return names

    @property
    def touches_labels(self) -> bool:
        return self.labels is not None or bool(self.add_labels or self.remove_labels)

    def wanted_labels(self, current: Mapping[str, int]) -> dict[str, int]:
        if self.labels is not None:
            return self.labels
        kept = {name: id_ for name, id_ in current.items() if name not in self.remove_labels}
        return kept | {name: id_ for name, id_ in self.add_labels.items() if name not in kept}


async def resolve_change(
    session: AsyncSession,
    project_id: int,
    changes: Mapping[str, Any],
    *,
    loc: tuple[str, ...] = ("body",),
) -> IssueChange:
    """The change a body asks for, its references checked against the project (422s)."""
    change = IssueChange(
        fields={name: changes[name] for name in _PLAIN_FIELDS if changes.get(name) is not None},
        status=changes.get("status"),
    )
    if "assignee_id" in changes:
        change.set_assignee, change.assignee_id = True, changes["assignee_id"]
        if change.assignee_id is not None:
            await require_member(session, project_id, change.assignee_id, loc=loc)
    if changes.get("labels") is not None:
        found = await labels_by_name(session, project_id, changes["labels"])
        change.labels = {label.name: label_id(label) for label in found}
    adding, removing = changes.get("add_labels") or [], changes.get("remove_labels") or []
    if adding or removing:
        found = await labels_by_name(
            session, project_id, [*adding, *removing], loc=(*loc, "labels")
        )
        ids = {label.name: label_id(label) for label in found}
        change.add_labels = {name: ids[name] for name in adding}
        change.remove_labels = frozenset(removing)
    if "milestone" in changes:
        change.set_milestone = True
        if (title := changes["milestone"]) is not None:
            change.milestone = await milestone_by_title(session, project_id, title, loc=loc)
    return change


def check_change(access: IssueAccess, change: IssueChange) -> None:
    """Whether the caller may make the change to this issue, and the workflow allows it."""
    if change.status is not None:
        access.project_access.require(Role.developer, "moving issues through the workflow")
        check_transition(access.issue, change.status)
    require_edit(access, change.names - {"status"})


def stage_change(
    session: AsyncSession,
    access: IssueAccess,
    change: IssueChange,
    current_labels: Mapping[str, int],
    milestone_titles: Mapping[int, str],
) -> tuple[bool, list[tuple[int, int]]]:
    """Stage a checked change with its history and new version: whether the issue changed,
    and the label links to delete (in one statement for every issue changed)."""
    issue = access.issue
    changed = False
    if change.status is not None:
        record_transition(session, access, change.status)
        changed = True
    changed |= set_plain_fields(session, access, change.fields)
    if change.set_assignee and change.assignee_id != issue.assignee_id:
        record_assignment(session, access, change.assignee_id)
        changed = True
    unlinked: list[tuple[int, int]] = []
    if change.touches_labels:
        wanted = change.wanted_labels(current_labels)
        unlinked = stage_labels(session, access, current_labels, wanted)
        changed |= bool(unlinked) or wanted.keys() != current_labels.keys()
    new_milestone = change.milestone.id if change.milestone else None
    if change.set_milestone and new_milestone != issue.milestone_id:
        set_milestone(session, access, change.milestone, milestone_titles)
        changed = True
    if changed:
        bump_version(session, access)
    return changed, unlinked


async def apply_update(write: IssueWrite, body: IssueUpdate) -> IssuePublic:
    """Change fields; ``labels`` replaces the set, ``milestone: null`` detaches."""
    session, access = write.session, write.access
    check_if_match(write.if_match, access.etag)
    changes = body.model_dump(exclude_unset=True)
    require_edit(access, changes)
    change = await resolve_change(session, access.project_access.project_id, changes)
    current = (await issue_labels(session, [access.issue_id])) if change.touches_labels else {}
    milestone = [access.issue.milestone_id] if change.set_milestone else []
    titles = await milestone_titles(session, milestone)
    changed, unlinked = stage_change(
        session, access, change, current.get(access.issue_id, {}), titles
    )
    await delete_issue_labels(session, unlinked)
    if change.set_assignee:
        await auto_follow(session, [access.issue_id], [change.assignee_id])
    if changed:
        await session.commit()
    return await build_public_issue(session, access)


def set_plain_fields(session: AsyncSession, access: IssueAccess, changes: dict[str, Any]) -> bool:
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


def set_milestone(
    session: AsyncSession,
    access: IssueAccess,
    milestone: Milestone | None,
    titles: Mapping[int, str],
) -> None:
    """Put the issue in ``milestone`` (or in none), recorded by title (``titles`` holds the
    current milestone's)."""
    issue = access.issue
    old = titles.get(issue.milestone_id) if issue.milestone_id is not None else None
    record_activity(
        session,
        access.principal,
        access.issue_id,
        ActivityAction.updated,
        field="milestone",
        old=old,
        new=milestone.title if milestone else None,
    )
    issue.milestone_id = milestone.id if milestone else None
    issue.milestone_due_rank = due_rank(milestone.due_on) if milestone else UNDATED_RANK


def record_assignment(session: AsyncSession, access: IssueAccess, assignee_id: str | None) -> None:
    """Assign the issue to a member already checked to be one (or to nobody)."""
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
    wanted = {
        label.name: label_id(label) for label in await labels_by_name(session, project_id, names)
    }
    current = (await issue_labels(session, [issue_id]))[issue_id]
    removed = stage_labels(session, access, current, wanted)
    await delete_issue_labels(session, removed)
    return bool(removed) or wanted.keys() != current.keys()


def stage_labels(
    session: AsyncSession,
    access: IssueAccess,
    current: Mapping[str, int],
    wanted: Mapping[str, int],
) -> list[tuple[int, int]]:
    """Stage the issue's new label set (names to ids) and its history; returns the
    (issue, label) links to delete, so that several issues' go in one statement."""
    issue_id = access.issue_id
    for name, id_ in wanted.items():
        if name not in current:
            session.add(IssueLabel(issue_id=issue_id, label_id=id_))
            _record_labels(session, access, ActivityAction.labeled, new=name)
    removed = sorted(name for name in current if name not in wanted)
    for name in removed:
        _record_labels(session, access, ActivityAction.unlabeled, old=name)
    return [(issue_id, current[name]) for name in removed]


async def delete_issue_labels(session: AsyncSession, links: Sequence[tuple[int, int]]) -> None:
    if links:
        pair = tuple_(col(IssueLabel.issue_id), col(IssueLabel.label_id))
        await session.exec(delete(IssueLabel).where(pair.in_(links)))


def _record_labels(
    session: AsyncSession, access: IssueAccess, action: ActivityAction, **change: str
) -> None:
    # One label's name per entry: the field is the label, not the issue's list of labels.
    record_activity(session, access.principal, access.issue_id, action, field="label", **change)


def bump_version(session: AsyncSession, access: IssueAccess) -> None:
    """A new version of the issue, staged with everything changed in it."""
    access.issue.version += 1
    access.issue.updated_at = utcnow()
    session.add(access.issue)


async def _commit_change(session: AsyncSession, access: IssueAccess) -> None:
    bump_version(session, access)
    await session.commit()


async def transition(write: IssueWrite, body: TransitionRequest) -> IssuePublic:
    """Move the issue through the workflow (developers)."""
    session, access = write.session, write.access
    access.project_access.require(Role.developer, "moving issues through the workflow")
    check_if_match(write.if_match, access.etag)
    check_transition(access.issue, body.to)
    record_transition(session, access, body.to)
    await _commit_change(session, access)
    ISSUE_TRANSITIONS.labels(to=body.to.value).inc()
    return await build_public_issue(session, access)


def check_transition(issue: Issue, to: IssueStatus) -> None:
    """A 409 naming the allowed moves when the workflow has no move to ``to``."""
    current = IssueStatus(issue.status)
    allowed = TRANSITIONS[current]
    if to not in allowed:
        names = ", ".join(status.value for status in allowed)
        raise Conflict(
            f"an issue in {current.value} can move to: {names}",
            extra={"from": current.value, "allowed": [s.value for s in allowed]},
        )


def record_transition(session: AsyncSession, access: IssueAccess, to: IssueStatus) -> None:
    """Stage a move ``check_transition`` allowed, with its history."""
    issue = access.issue
    record_activity(
        session,
        access.principal,
        access.issue_id,
        ActivityAction.transitioned,
        field="status",
        old=IssueStatus(issue.status).value,
        new=to.value,
    )
    issue.status = to
    issue.closed_at = utcnow() if to == IssueStatus.closed else None


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


async def delete_issue(write: IssueWrite, storage: Storage) -> None:
    """Delete an issue with its comments, files and history (maintainers)."""
    write.access.project_access.require(Role.maintainer, "deleting issues")
    check_if_match(write.if_match, write.access.etag)
    await delete_issue_files(write.session, write.access.issue_id, storage)
    await record_deletion(write.session, write.access.principal, write.access.issue_id)
    await write.session.delete(write.access.issue)
    await write.session.commit()
