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

from flyswatter.db import tables, utcnow
from flyswatter.events.documents import (
    PendingEvent,
    issue_event,
    people_by_id,
    public_issues,
    watchers_of,
)
from flyswatter.events.models import Event, EventData, EventPublic, EventSequence, EventType
from flyswatter.issues.models import Activity, Issue
from flyswatter.webhooks.models import DeliveryState, Webhook, WebhookDelivery

_ISSUE, _EVENT, _SEQUENCE, _WEBHOOK, _DELIVERY = tables(
    Issue, Event, EventSequence, Webhook, WebhookDelivery
)

_ISSUE_PROJECTS = select(_ISSUE.c.id, _ISSUE.c.project_id).where(
    _ISSUE.c.id.in_(bindparam("ids", expanding=True))
)
_EVENT_IDS = select(_EVENT.c.uid, _EVENT.c.id).where(
    _EVENT.c.uid.in_(bindparam("uids", expanding=True))
)
_SUBSCRIBERS = select(_WEBHOOK.c.id, _WEBHOOK.c.event_types).where(
    _WEBHOOK.c.project_id == bindparam("project_id"), _WEBHOOK.c.active.is_(True)
)


@dataclass(frozen=True, slots=True)
class WrittenEvent:
    """What the announcement after the commit needs: where, which number, and the document."""

    project_id: int
    sequence: int
    type: str
    document: str


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


def _store(
    connection: Connection, project_id: int, events: list[PendingEvent]
) -> list[WrittenEvent]:
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


def write_issue_deleted(
    connection: Connection, issue_id: int, actor_id: str, client_id: str | None
) -> WrittenEvent:
    """The ``issue.deleted`` event, with the issue as it was: written before the delete, in
    its transaction (the rows it is read from go with the issue)."""
    ((_, project_id),) = connection.execute(_ISSUE_PROJECTS, {"ids": [issue_id]})
    (sequence,) = _next_sequences(connection, project_id, 1)
    issue = public_issues(connection, [issue_id])[issue_id]
    event = PendingEvent(
        sequence=sequence,
        kind=EventType.issue_deleted,
        issue_id=issue_id,
        actor_id=actor_id,
        actor=people_by_id(connection, {actor_id})[actor_id],
        client_id=client_id,
        data=EventData(
            issue=issue, changes=[], watchers=watchers_of(connection, [issue_id]).get(issue_id, [])
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
    issues = public_issues(connection, [i for ids in by_project.values() for i in ids])
    people = people_by_id(connection, {changes[0].actor_id for changes in by_issue.values()})
    watchers = watchers_of(connection, list(issues))
    written = []
    for project_id, ids in by_project.items():
        events = [
            issue_event(
                connection, sequence, issues[issue_id], by_issue[issue_id], people, watchers
            )
            for sequence, issue_id in zip(sequences[project_id], ids, strict=True)
        ]
        written.extend(_store(connection, project_id, events))
    return written
