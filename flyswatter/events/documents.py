"""What an event says: the issue as the transaction left it, the change, who made it and who
follows the issue, read on the transaction's connection in a fixed number of statements."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select

from flyswatter.comments.models import Comment, CommentPublic
from flyswatter.db import tables
from flyswatter.events.models import EventChange, EventData, EventType
from flyswatter.issues.models import (
    HIDDEN_ISSUE,
    RELATION_ACTIONS,
    Activity,
    ActivityAction,
    Issue,
    IssuePublic,
    UserSummary,
)
from flyswatter.issues.read_model import ISSUES_WITH_PEOPLE, PUBLIC_ISSUE_COLUMNS, public_issue
from flyswatter.labels.models import IssueLabel, Label, LabelPublic
from flyswatter.projects.models import Project
from flyswatter.users.models import User
from flyswatter.watchers.models import Watcher

_ISSUE, _PROJECT, _USER, _LABEL, _ISSUE_LABEL, _COMMENT, _WATCHER = tables(
    Issue, Project, User, Label, IssueLabel, Comment, Watcher
)

# Every statement takes the transaction's issues at once: a bulk change of a hundred issues
# writes its hundred events in as many statements as one issue's.
_ISSUE_SNAPSHOTS = (
    select(_PROJECT.c.key.label("project_key"), *PUBLIC_ISSUE_COLUMNS)
    .select_from(ISSUES_WITH_PEOPLE.join(_PROJECT, _PROJECT.c.id == _ISSUE.c.project_id))
    .where(_ISSUE.c.id.in_(bindparam("ids", expanding=True)))
)


_LABELS = (
    select(_ISSUE_LABEL.c.issue_id, _LABEL.c.name, _LABEL.c.color, _LABEL.c.description)
    .join(_ISSUE_LABEL, _ISSUE_LABEL.c.label_id == _LABEL.c.id)
    .where(_ISSUE_LABEL.c.issue_id.in_(bindparam("ids", expanding=True)))
    .order_by(_LABEL.c.name)
)


_PEOPLE = select(_USER.c.id, _USER.c.username, _USER.c.name, _USER.c.is_service_account).where(
    _USER.c.id.in_(bindparam("ids", expanding=True))
)


_WATCHERS = (
    select(
        _WATCHER.c.issue_id, _USER.c.id, _USER.c.username, _USER.c.name, _USER.c.is_service_account
    )
    .join(_WATCHER, _WATCHER.c.user_id == _USER.c.id)
    .where(
        _WATCHER.c.issue_id.in_(bindparam("ids", expanding=True)), _WATCHER.c.following.is_(True)
    )
    .order_by(_USER.c.id)
)


_COMMENT_BY_ID = select(_COMMENT).where(_COMMENT.c.id == bindparam("comment_id"))


_COMMENT_EVENTS = {
    ActivityAction.commented: EventType.comment_created,
    ActivityAction.comment_edited: EventType.comment_updated,
    ActivityAction.comment_deleted: EventType.comment_deleted,
}


_LABEL_ACTIONS = frozenset({ActivityAction.labeled, ActivityAction.unlabeled})


def event_type(actions: Sequence[ActivityAction]) -> EventType:
    """The one type that names what a transaction did to an issue."""
    kinds = set(actions)
    if ActivityAction.created in kinds:
        return EventType.issue_created
    for action, kind in _COMMENT_EVENTS.items():
        if action in kinds:
            return kind
    if ActivityAction.transitioned in kinds:
        return EventType.issue_transitioned
    if kinds == {ActivityAction.assigned}:
        return EventType.issue_assigned
    if kinds <= _LABEL_ACTIONS:
        return EventType.issue_labelled
    return EventType.issue_updated


def _loaded(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _shown(activity: Activity, stored: str | None, project_key: str) -> Any:
    """A change's value as the event tells it. An event reaches every member of the issue's
    project and its webhooks, whoever may see the other project, so a related issue of
    another project is never named (its history names it to those who may see it)."""
    value = _loaded(stored)
    related = activity.action in RELATION_ACTIONS and isinstance(value, str)
    if related and value.rpartition("-")[0].upper() != project_key:
        return HIDDEN_ISSUE
    return value


def _summary(row: Any) -> UserSummary:
    return UserSummary(
        id=row.id,
        username=row.username,
        name=row.name,
        is_service_account=bool(row.is_service_account),
    )


def people_by_id(connection: Connection, ids: set[str]) -> dict[str, UserSummary]:
    rows = connection.execute(_PEOPLE, {"ids": sorted(ids)})
    return {row.id: _summary(row) for row in rows}


def watchers_of(connection: Connection, issue_ids: list[int]) -> dict[int, list[UserSummary]]:
    """Who follows each issue, in one statement however many issues and people."""
    found: dict[int, list[UserSummary]] = {}
    for row in connection.execute(_WATCHERS, {"ids": issue_ids}):
        found.setdefault(row.issue_id, []).append(_summary(row))
    return found


def _comment(
    connection: Connection, comment_id: int, issue_key: str, authors: dict[str, UserSummary]
) -> CommentPublic | None:
    row = connection.execute(_COMMENT_BY_ID, {"comment_id": comment_id}).first()
    if row is None:
        return None
    author = authors.get(row.author_id) or people_by_id(connection, {row.author_id})[row.author_id]
    return CommentPublic(
        id=row.id,
        body=row.body,
        issue_key=issue_key,
        author_id=row.author_id,
        author=author,
        created_at=row.created_at,
        updated_at=row.updated_at,
        edited=row.edited_at is not None,
        edited_at=row.edited_at,
        version=row.version,
    )


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event to store: everything but its id."""

    sequence: int
    kind: EventType
    issue_id: int
    actor_id: str
    actor: UserSummary
    client_id: str | None
    data: EventData


def issue_event(
    connection: Connection,
    sequence: int,
    issue: IssuePublic,
    activities: list[Activity],
    people: dict[str, UserSummary],
    watchers: dict[int, list[UserSummary]],
) -> PendingEvent:
    actions = [ActivityAction(activity.action) for activity in activities]
    kind = event_type(actions)
    first = activities[0]
    comment_id: int | None = None
    comment = None
    if kind in _COMMENT_EVENTS.values():
        noted = next(a for a in activities if ActivityAction(a.action) in _COMMENT_EVENTS)
        comment_id = _loaded(noted.new_value) or _loaded(noted.old_value)
        if kind != EventType.comment_deleted and comment_id is not None:
            comment = _comment(connection, comment_id, issue.key, people)
    changes = [
        EventChange(
            action=ActivityAction(activity.action),
            field=activity.field,
            old=_shown(activity, activity.old_value, issue.project_key),
            new=_shown(activity, activity.new_value, issue.project_key),
        )
        for activity in activities
    ]
    return PendingEvent(
        sequence=sequence,
        kind=kind,
        issue_id=first.issue_id,
        actor_id=first.actor_id,
        actor=people[first.actor_id],
        client_id=first.client_id,
        data=EventData(
            issue=issue,
            changes=changes,
            comment=comment,
            comment_id=comment_id,
            watchers=watchers.get(first.issue_id, []),
        ),
    )


def public_issues(connection: Connection, issue_ids: list[int]) -> dict[int, IssuePublic]:
    snapshots = list(connection.execute(_ISSUE_SNAPSHOTS, {"ids": issue_ids}))
    labels: dict[int, list[Any]] = {}
    for row in connection.execute(_LABELS, {"ids": issue_ids}):
        labels.setdefault(row.issue_id, []).append(
            LabelPublic(name=row.name, color=row.color, description=row.description)
        )
    return {row.id: public_issue(row, row.project_key, labels) for row in snapshots}
