"""One change to one issue or to many: resolved against the project once, checked against
the caller's role and the workflow, then staged with its history and the issue's new version."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, tuple_
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.db import utcnow
from flyswatter.errors import Conflict
from flyswatter.issues.activity import record_activity
from flyswatter.issues.dependencies import IssueAccess
from flyswatter.issues.models import TRANSITIONS, ActivityAction, Issue, IssueStatus, Priority
from flyswatter.issues.references import labels_by_name, milestone_by_title, require_member
from flyswatter.labels.models import IssueLabel, label_id
from flyswatter.milestones.models import UNDATED_RANK, Milestone, due_rank
from flyswatter.projects.models import Role

# The fields PATCH sets as they are, each recorded as an update of that field.
_PLAIN_FIELDS = ("title", "description", "type", "priority")
# What a reporter may change on an issue they reported; everything else needs a developer.
_OWN_ISSUE_FIELDS = frozenset({"title", "description", "milestone"})


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


def changed_fields(
    issue: Issue, changes: Mapping[str, Any], labels: Iterable[str] = ()
) -> set[str]:
    """The fields of a PATCH body that differ from the issue (``labels``: its label names).

    What ``require_edit`` weighs: an edit form sends the whole issue back, and a field sent
    as it is changes nothing, so it needs no role (nor would it be recorded or bump the
    version)."""
    names: set[str] = set()
    for name, value in changes.items():
        if name in (*_PLAIN_FIELDS, "assignee_id") and value == getattr(issue, name):
            continue
        if name == "labels" and value is not None and set(value) == set(labels):
            continue
        names.add(name)
    return names


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


@dataclass(frozen=True, slots=True)
class Holding:
    """What the one issue a change goes to has already, its row locked by the caller: its
    labels (name to id) and its milestone's title. A change naming them again is not made
    to look them up, nor to lock them: their deletion in flight, which locks them and then
    the issues that have them, would come to wait for this issue while this write waited
    for it (a deadlock). The issue keeps them until it commits, and the deletion, after it,
    takes them off."""

    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)
    milestone: str | None = None


async def _label_ids(
    session: AsyncSession,
    project_id: int,
    names: Sequence[str],
    held: Mapping[str, int],
    *,
    loc: Sequence[str] = (),
) -> dict[str, int]:
    """Names to ids: those the issue has already from ``held``, the others looked up, each
    locked until the write commits (``labels_by_name(lock=True)``)."""
    new = [name for name in names if name not in held]
    found = await labels_by_name(session, project_id, new, loc=loc, lock=True)
    ids = {**held, **{label.name: label_id(label) for label in found}}
    return {name: ids[name] for name in dict.fromkeys(names)}


async def resolve_change(
    session: AsyncSession,
    project_id: int,
    changes: Mapping[str, Any],
    *,
    loc: tuple[str, ...] = ("body",),
    holding: Holding = Holding(),
) -> IssueChange:
    """The change a body asks for, its references checked against the project (422s).

    The labels and the milestone it links are locked KEY SHARE until the write commits,
    before (for a change to many issues) any issue is: every writer takes a reference, then
    issues, as their deletion takes the reference, then issues. For a change to one issue,
    already locked, ``holding`` is what it has, which is not taken again."""
    change = IssueChange(
        fields={name: changes[name] for name in _PLAIN_FIELDS if changes.get(name) is not None},
        status=changes.get("status"),
    )
    if "assignee_id" in changes:
        change.set_assignee, change.assignee_id = True, changes["assignee_id"]
        if change.assignee_id is not None:
            await require_member(session, project_id, change.assignee_id, loc=loc)
    if changes.get("labels") is not None:
        change.labels = await _label_ids(session, project_id, changes["labels"], holding.labels)
    adding, removing = changes.get("add_labels") or [], changes.get("remove_labels") or []
    if adding or removing:
        # Those removed are checked (and locked) too: no issue is held yet, and an unknown
        # name is a 422 whichever list it is in.
        ids = await _label_ids(
            session, project_id, [*adding, *removing], holding.labels, loc=(*loc, "labels")
        )
        change.add_labels = {name: ids[name] for name in adding}
        change.remove_labels = frozenset(removing)
    title = changes.get("milestone")
    # The issue's own milestone sent back (an edit form sends the whole issue) is no change.
    if "milestone" in changes and (title is None or title != holding.milestone):
        change.set_milestone = True
        if title is not None:
            change.milestone = await milestone_by_title(session, project_id, title, loc=loc)
    return change


def check_change(access: IssueAccess, change: IssueChange) -> None:
    """Whether the caller may make the change to this issue, and the workflow allows it."""
    if change.status is not None:
        access.project_access.require(Role.developer, "moving issues through the workflow")
        check_transition(access.issue, change.status)
    # Weighed, as a PATCH is (``changed_fields``), by the fields this issue would change.
    issue = access.issue
    unchanged = {name for name, value in change.fields.items() if value == getattr(issue, name)}
    if change.set_assignee and change.assignee_id == issue.assignee_id:
        unchanged.add("assignee_id")
    require_edit(access, change.names - unchanged - {"status"})


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
