"""Turning a transaction's activity into outbox events, on the transaction's own connection.

Synchronous on purpose: it runs inside the session's ``before_commit`` hook, which SQLAlchemy
calls synchronously (under the async session's greenlet in the API, directly in workers).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from flyswatter.comments.models import Comment, CommentPublic
from flyswatter.db import utcnow
from flyswatter.events.models import (
    Event,
    EventChange,
    EventData,
    EventPublic,
    EventSequence,
    EventType,
)
from flyswatter.issues.models import (
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
from flyswatter.webhooks.models import DeliveryState, Webhook, WebhookDelivery

_ISSUE = Issue.__table__  # type: ignore[attr-defined]
_EVENT = Event.__table__  # type: ignore[attr-defined]
_SEQUENCE = EventSequence.__table__  # type: ignore[attr-defined]
_PROJECT = Project.__table__  # type: ignore[attr-defined]
_USER = User.__table__  # type: ignore[attr-defined]
_LABEL = Label.__table__  # type: ignore[attr-defined]
_ISSUE_LABEL = IssueLabel.__table__  # type: ignore[attr-defined]
_COMMENT = Comment.__table__  # type: ignore[attr-defined]
_WEBHOOK = Webhook.__table__  # type: ignore[attr-defined]
_DELIVERY = WebhookDelivery.__table__  # type: ignore[attr-defined]
_WATCHER = Watcher.__table__  # type: ignore[attr-defined]

# Every statement takes the transaction's issues at once: a bulk change of a hundred issues
# writes its hundred events in as many statements as one issue's.
_ISSUE_SNAPSHOTS = (
    select(_PROJECT.c.key.label("project_key"), *PUBLIC_ISSUE_COLUMNS)
    .select_from(ISSUES_WITH_PEOPLE.join(_PROJECT, _PROJECT.c.id == _ISSUE.c.project_id))
    .where(_ISSUE.c.id.in_(bindparam("ids", expanding=True)))
)
_ISSUE_PROJECTS = select(_ISSUE.c.id, _ISSUE.c.project_id).where(
    _ISSUE.c.id.in_(bindparam("ids", expanding=True))
)
_LABELS = (
    select(_ISSUE_LABEL.c.issue_id, _LABEL.c.name, _LABEL.c.color, _LABEL.c.description)
    .join(_ISSUE_LABEL, _ISSUE_LABEL.c.label_id == _LABEL.c.id)
    .where(_ISSUE_LABEL.c.issue_id.in_(bindparam("ids", expanding=True)))
    .order_by(_LABEL.c.name)
)
_EVENT_IDS = select(_EVENT.c.uid, _EVENT.c.id).where(
    _EVENT.c.uid.in_(bindparam("uids", expanding=True))
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
_SUBSCRIBERS = select(_WEBHOOK.c.id, _WEBHOOK.c.event_types).where(
    _WEBHOOK.c.project_id == bindparam("project_id"), _WEBHOOK.c.active.is_(True)
)

_COMMENT_EVENTS = {
    ActivityAction.commented: EventType.comment_created,
    ActivityAction.comment_edited: EventType.comment_updated,
    ActivityAction.comment_deleted: EventType.comment_deleted,
}
_LABEL_ACTIONS = frozenset({ActivityAction.labeled, ActivityAction.unlabeled})


@dataclass(frozen=True, slots=True)
class WrittenEvent:
    """What the announcement after the commit needs: where, which number, and the document."""

    project_id: int
    sequence: int
    type: str
    document: str


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


def _summary(row: Any) -> UserSummary:
    return UserSummary(
        id=row.id,
        username=row.username,
        name=row.name,
        is_service_account=bool(row.is_service_account),
    )


def _people(connection: Connection, ids: set[str]) -> dict[str, UserSummary]:
    rows = connection.execute(_PEOPLE, {"ids": sorted(ids)})
    return {row.id: _summary(row) for row in rows}


def _watchers(connection: Connection, issue_ids: list[int]) -> dict[int, list[UserSummary]]:
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
    author = authors.get(row.author_id) or _people(connection, {row.author_id})[row.author_id]
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


def _next_sequences(connection: Connection, project_id: int, count: int) -> list[int]:
    """The project's next ``count`` event numbers; the row stays locked until the transaction
    ends."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_SEQUENCE).values(project_id=project_id, last_sequence=count)
    statement = statement.on_conflict_do_update(
        index_elements=[_SEQUENCE.c.project_id],
        set_={"last_sequence": _SEQUENCE.c.last_sequence + count},
    ).returning(_SEQUENCE.c.last_sequence)
    last = int(connection.execute(statement).scalar_one())
    return list(range(last - count + 1, last + 1))


def _subscribed(event_types: Any, kind: EventType) -> bool:
    types = json.loads(event_types) if isinstance(event_types, str) else event_types
    return "*" in types or kind.value in types


@dataclass(frozen=True, slots=True)
class _Pending:
    """An event to store: everything but its id."""

    sequence: int
    kind: EventType
    issue_id: int
    actor_id: str
    actor: UserSummary
    client_id: str | None
    data: EventData


def _issue_event(
    connection: Connection,
    sequence: int,
    issue: IssuePublic,
    activities: list[Activity],
    people: dict[str, UserSummary],
    watchers: dict[int, list[UserSummary]],
) -> _Pending:
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
            old=_loaded(activity.old_value),
            new=_loaded(activity.new_value),
        )
        for activity in activities
    ]
    return _Pending(
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


def _store(connection: Connection, project_id: int, events: list[_Pending]) -> list[WrittenEvent]:
    """Insert a project's events and one pending delivery for every active webhook subscribed
    to each, in one statement each, however many events."""
    occurred_at = utcnow()
    rows: list[dict[str, Any]] = []
    uids: list[str] = []
    written = []
    for event in events:
        uid = f"evt_{uuid.uuid4().hex}"
        uids.append(uid)
        document = EventPublic(
            id=uid,
            type=event.kind,
            timestamp=occurred_at,
            project_key=event.data.issue.project_key,
            sequence=event.sequence,
            actor=event.actor,
            client_id=event.client_id,
            data=event.data,
        ).model_dump_json()
        rows.append(
            {
                "uid": uid,
                "project_id": project_id,
                "sequence": event.sequence,
                "type": event.kind.value,
                "issue_id": event.issue_id,
                "actor_id": event.actor_id,
                "occurred_at": occurred_at,
                "payload": document,
            }
        )
        written.append(
            WrittenEvent(
                project_id=project_id,
                sequence=event.sequence,
                type=event.kind.value,
                document=document,
            )
        )
    connection.execute(insert(_EVENT), rows)
    webhooks = list(connection.execute(_SUBSCRIBERS, {"project_id": project_id}))
    wanted = [
        (webhook.id, uid)
        for uid, event in zip(uids, events, strict=True)
        for webhook in webhooks
        if _subscribed(webhook.event_types, event.kind)
    ]
    if wanted:
        subscribed = sorted({uid for _webhook, uid in wanted})
        ids: dict[str, int] = dict(connection.execute(_EVENT_IDS, {"uids": subscribed}).all())
        deliveries = [
            {
                "webhook_id": webhook_id,
                "event_id": ids[uid],
                "state": DeliveryState.pending.value,
                "attempts": 0,
                "next_attempt_at": occurred_at,
                "created_at": occurred_at,
                "updated_at": occurred_at,
            }
            for webhook_id, uid in wanted
        ]
        connection.execute(insert(_DELIVERY), deliveries)
    return written


def _public_issues(connection: Connection, issue_ids: list[int]) -> dict[int, IssuePublic]:
    snapshots = list(connection.execute(_ISSUE_SNAPSHOTS, {"ids": issue_ids}))
    labels: dict[int, list[Any]] = {}
    for row in connection.execute(_LABELS, {"ids": issue_ids}):
        labels.setdefault(row.issue_id, []).append(
            LabelPublic(name=row.name, color=row.color, description=row.description)
        )
    return {row.id: public_issue(row, row.project_key, labels) for row in snapshots}


def write_issue_deleted(
    connection: Connection, issue_id: int, actor_id: str, client_id: str | None
) -> WrittenEvent:
    """The ``issue.deleted`` event, with the issue as it was: written before the delete, in
    its transaction (the rows it is read from go with the issue)."""
    ((_, project_id),) = connection.execute(_ISSUE_PROJECTS, {"ids": [issue_id]})
    (sequence,) = _next_sequences(connection, project_id, 1)
    issue = _public_issues(connection, [issue_id])[issue_id]
    event = _Pending(
        sequence=sequence,
        kind=EventType.issue_deleted,
        issue_id=issue_id,
        actor_id=actor_id,
        actor=_people(connection, {actor_id})[actor_id],
        client_id=client_id,
        data=EventData(
            issue=issue, changes=[], watchers=_watchers(connection, [issue_id]).get(issue_id, [])
        ),
    )
    (written,) = _store(connection, project_id, [event])
    return written


def write_events(connection: Connection, activities: Sequence[Activity]) -> list[WrittenEvent]:
    """One event per issue that the activities changed, numbered in the order the issues were
    changed, in a fixed number of statements whatever the number of issues."""
    by_issue: dict[int, list[Activity]] = {}
    for activity in activities:
        by_issue.setdefault(activity.issue_id, []).append(activity)
    projects: dict[int, int] = dict(
        connection.execute(_ISSUE_PROJECTS, {"ids": list(by_issue)}).all()
    )
    # An issue deleted in the same transaction leaves nothing to tell about.
    by_project: dict[int, list[int]] = {}
    for issue_id in by_issue:
        if issue_id in projects:
            by_project.setdefault(projects[issue_id], []).append(issue_id)
    if not by_project:
        return []
    # The numbers first: once their lock is ours, every earlier event of the project is
    # committed, so what is read next is at least as new as what those events showed.
    sequences = {
        project_id: _next_sequences(connection, project_id, len(ids))
        for project_id, ids in by_project.items()
    }
    issues = _public_issues(connection, [i for ids in by_project.values() for i in ids])
    people = _people(connection, {changes[0].actor_id for changes in by_issue.values()})
    watchers = _watchers(connection, list(issues))
    written = []
    for project_id, ids in by_project.items():
        events = [
            _issue_event(
                connection, sequence, issues[issue_id], by_issue[issue_id], people, watchers
            )
            for sequence, issue_id in zip(sequences[project_id], ids, strict=True)
        ]
        written.extend(_store(connection, project_id, events))
    return written
