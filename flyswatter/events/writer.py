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

_ISSUE_SNAPSHOT = (
    select(_PROJECT.c.key.label("project_key"), *PUBLIC_ISSUE_COLUMNS)
    .select_from(ISSUES_WITH_PEOPLE.join(_PROJECT, _PROJECT.c.id == _ISSUE.c.project_id))
    .where(_ISSUE.c.id == bindparam("issue_id"))
)
_ISSUE_PROJECT = select(_ISSUE.c.project_id).where(_ISSUE.c.id == bindparam("issue_id"))
_LABELS = (
    select(_LABEL.c.name, _LABEL.c.color, _LABEL.c.description)
    .join(_ISSUE_LABEL, _ISSUE_LABEL.c.label_id == _LABEL.c.id)
    .where(_ISSUE_LABEL.c.issue_id == bindparam("issue_id"))
    .order_by(_LABEL.c.name)
)
_PEOPLE = select(_USER.c.id, _USER.c.username, _USER.c.name, _USER.c.is_service_account).where(
    _USER.c.id.in_(bindparam("ids", expanding=True))
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


def _people(connection: Connection, ids: set[str]) -> dict[str, UserSummary]:
    rows = connection.execute(_PEOPLE, {"ids": sorted(ids)})
    return {
        row.id: UserSummary(
            id=row.id,
            username=row.username,
            name=row.name,
            is_service_account=bool(row.is_service_account),
        )
        for row in rows
    }


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


def _next_sequence(connection: Connection, project_id: int) -> int:
    """The project's next event number; the row stays locked until the transaction ends."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_SEQUENCE).values(project_id=project_id, last_sequence=1)
    statement = statement.on_conflict_do_update(
        index_elements=[_SEQUENCE.c.project_id],
        set_={"last_sequence": _SEQUENCE.c.last_sequence + 1},
    ).returning(_SEQUENCE.c.last_sequence)
    return int(connection.execute(statement).scalar_one())


def _subscribed(event_types: Any, kind: EventType) -> bool:
    types = json.loads(event_types) if isinstance(event_types, str) else event_types
    return "*" in types or kind.value in types


def _write_issue_event(
    connection: Connection, issue_id: int, activities: list[Activity]
) -> WrittenEvent | None:
    actions = [ActivityAction(activity.action) for activity in activities]
    kind = event_type(actions)
    first = activities[0]
    project_id = connection.execute(_ISSUE_PROJECT, {"issue_id": issue_id}).scalar_one_or_none()
    if project_id is None:
        # The issue was deleted in the same transaction: nothing is left to tell about.
        return None
    # The number first: once its lock is ours, every earlier event of the project is
    # committed, so what is read next is at least as new as what those events showed.
    sequence = _next_sequence(connection, project_id)
    issue = _public_issue(connection, issue_id)
    people = _people(connection, {first.actor_id})
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
    return _store(
        connection,
        project_id=project_id,
        sequence=sequence,
        kind=kind,
        issue_id=issue_id,
        actor_id=first.actor_id,
        actor=people[first.actor_id],
        client_id=first.client_id,
        data=EventData(issue=issue, changes=changes, comment=comment, comment_id=comment_id),
    )


def _store(
    connection: Connection,
    *,
    project_id: int,
    sequence: int,
    kind: EventType,
    issue_id: int,
    actor_id: str,
    actor: UserSummary,
    client_id: str | None,
    data: EventData,
) -> WrittenEvent:
    """Insert the event and one pending delivery for every active webhook subscribed to it."""
    occurred_at = utcnow()
    uid = f"evt_{uuid.uuid4().hex}"
    document = EventPublic(
        id=uid,
        type=kind,
        timestamp=occurred_at,
        project_key=data.issue.project_key,
        sequence=sequence,
        actor=actor,
        client_id=client_id,
        data=data,
    ).model_dump_json()
    event_id = connection.execute(
        insert(_EVENT)
        .values(
            uid=uid,
            project_id=project_id,
            sequence=sequence,
            type=kind.value,
            issue_id=issue_id,
            actor_id=actor_id,
            occurred_at=occurred_at,
            payload=document,
        )
        .returning(_EVENT.c.id)
    ).scalar_one()
    deliveries = [
        {
            "webhook_id": webhook.id,
            "event_id": event_id,
            "state": DeliveryState.pending.value,
            "attempts": 0,
            "next_attempt_at": occurred_at,
            "created_at": occurred_at,
            "updated_at": occurred_at,
        }
        for webhook in connection.execute(_SUBSCRIBERS, {"project_id": project_id})
        if _subscribed(webhook.event_types, kind)
    ]
    if deliveries:
        connection.execute(insert(_DELIVERY), deliveries)
    return WrittenEvent(
        project_id=project_id, sequence=sequence, type=kind.value, document=document
    )


def _public_issue(connection: Connection, issue_id: int) -> IssuePublic:
    snapshot = connection.execute(_ISSUE_SNAPSHOT, {"issue_id": issue_id}).one()
    labels = [
        LabelPublic(name=row.name, color=row.color, description=row.description)
        for row in connection.execute(_LABELS, {"issue_id": issue_id})
    ]
    return public_issue(snapshot, snapshot.project_key, {snapshot.id: labels})


def write_issue_deleted(
    connection: Connection, issue_id: int, actor_id: str, client_id: str | None
) -> WrittenEvent:
    """The ``issue.deleted`` event, with the issue as it was: written before the delete, in
    its transaction (the rows it is read from go with the issue)."""
    project_id = connection.execute(_ISSUE_PROJECT, {"issue_id": issue_id}).scalar_one()
    sequence = _next_sequence(connection, project_id)
    issue = _public_issue(connection, issue_id)
    return _store(
        connection,
        project_id=project_id,
        sequence=sequence,
        kind=EventType.issue_deleted,
        issue_id=issue_id,
        actor_id=actor_id,
        actor=_people(connection, {actor_id})[actor_id],
        client_id=client_id,
        data=EventData(issue=issue, changes=[]),
    )


def write_events(connection: Connection, activities: Sequence[Activity]) -> list[WrittenEvent]:
    """One event per issue that the activities changed, in the order the issues were changed."""
    by_issue: dict[int, list[Activity]] = {}
    for activity in activities:
        by_issue.setdefault(activity.issue_id, []).append(activity)
    written = []
    for issue_id, changes in by_issue.items():
        item = _write_issue_event(connection, issue_id, changes)
        if item is not None:
            written.append(item)
    return written
