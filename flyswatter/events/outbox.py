"""The outbox hook: every transaction that records activity writes it and its events at commit.

Writers only call ``note_activity`` (``record_activity`` does, for every change to an
issue). Just before the session commits, the activities it noted are inserted as the issues'
history, in one statement, and turned into events, one
per issue changed (not one per field), in the same transaction: a rolled-back change leaves
no event, a committed one always has exactly one. Nothing can be forgotten by a new route,
as the hook sits on the session, not on the routes.

Once committed, the events are announced to this process' live streams and to the others'
through Redis (``EventBroker``); announcing is best effort, as the outbox itself is what
streams and webhook deliveries read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from flyswatter.observability.metrics import EVENTS_WRITTEN

logger = logging.getLogger("flyswatter.events")

_NOTED = "flyswatter.noted_activity"
_WRITTEN = "flyswatter.written_events"


class HasInfo(Protocol):
    @property
    def info(self) -> dict[Any, Any]: ...


def note_activity(session: HasInfo, activity: Any) -> None:
    """Remember an ``Activity`` added to ``session``; its event is written at commit."""
    session.info.setdefault(_NOTED, []).append(activity)


def write_deletion_event(
    session: Session, issue_id: int, actor_id: str, client_id: str | None
) -> None:
    """Write ``issue.deleted`` now, in the session's transaction, while the issue is there
    to be read; it is announced after the commit like every other event."""
    from flyswatter.events.writer import write_issue_deleted

    written = write_issue_deleted(session.connection(), issue_id, actor_id, client_id)
    session.info.setdefault(_WRITTEN, []).append(written)


# Who announces the events committed through an engine: the app of that engine, in this
# process. A weak mapping, so an engine that is disposed and dropped takes its entry along.
Announcer = Callable[[list[Any]], None]
_ANNOUNCERS: WeakKeyDictionary[Engine, tuple[asyncio.AbstractEventLoop, Announcer]] = (
    WeakKeyDictionary()
)


def register_announcer(
    engine: Engine, loop: asyncio.AbstractEventLoop, announce: Announcer
) -> None:
    _ANNOUNCERS[engine] = (loop, announce)


def unregister_announcer(engine: Engine) -> None:
    _ANNOUNCERS.pop(engine, None)


@event.listens_for(Session, "before_commit")
def _write_noted_events(session: Session) -> None:
    noted = session.info.pop(_NOTED, None)
    if not noted:
        return
    # Imported here: the writer builds issues' public shapes with issues.read_model, whose
    # package imports this module (issues.activity) for ``note_activity``.
    from flyswatter.events.writer import write_events
    from flyswatter.issues.activity import insert_history

    session.flush()
    connection = session.connection()
    insert_history(connection, noted)
    written = write_events(connection, noted)
    session.info.setdefault(_WRITTEN, []).extend(written)


@event.listens_for(Session, "after_commit")
def _announce_written_events(session: Session) -> None:
    written = session.info.pop(_WRITTEN, None)
    if not written:
        return
    for item in written:
        EVENTS_WRITTEN.labels(type=item.type).inc()
    bind = session.bind
    engine = bind.engine if bind is not None else None
    target = _ANNOUNCERS.get(engine) if isinstance(engine, Engine) else None
    if target is None:
        return
    loop, announce = target
    # After the commit nothing may fail the request: the announcement runs on its own.
    loop.call_soon_threadsafe(announce, written)


@event.listens_for(Session, "after_rollback")
def _forget_noted_events(session: Session) -> None:
    session.info.pop(_NOTED, None)
    session.info.pop(_WRITTEN, None)
