"""One client's live stream of a project's events, as Server-Sent Events.

Each event goes out with its project number as ``id:``, so a client that reconnects sends it
back as ``Last-Event-ID`` and gets what it missed from the outbox, then the live events.
Because a project's numbers have no gaps, the stream sends them strictly in order: a live
event that skips ahead sends the stream to the outbox for the ones between.

A ``resync`` event (no ``id:``) tells the client that it must reload what it shows rather than
rely on the stream: when it fell behind by more than the buffer (the stream then ends; it may
reconnect with its Last-Event-ID), or when the events after its Last-Event-ID were pruned or
never existed (the stream then goes on from now), or when the caller may no longer see the
project (removed from it, or the project deleted; the stream then ends). Access is checked
again before each batch of events is sent, and the stream ends when the caller's token
expires: a stream outlives the request that checked both.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy import Row, Select, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sse_starlette import ServerSentEvent

from flyswatter.auth.tokens import Principal
from flyswatter.config import Settings
from flyswatter.db import tables
from flyswatter.events.broker import EventBroker, StreamSlots, Subscription
from flyswatter.events.models import Event, EventSequence
from flyswatter.observability.metrics import EVENT_STREAMS_OPEN
from flyswatter.projects.models import Project, ProjectMember

_EVENT, _SEQUENCE, _PROJECT, _MEMBER = tables(Event, EventSequence, Project, ProjectMember)
PAGE = 100
# Tells EventSource clients how soon to reconnect when a stream ends (milliseconds).
RECONNECT_MS = 1000

_AFTER = (
    select(_EVENT.c.sequence, _EVENT.c.type, _EVENT.c.payload)
    .where(_EVENT.c.project_id == bindparam("project_id"))
    .where(_EVENT.c.sequence > bindparam("after"))
    .order_by(_EVENT.c.sequence)
    .limit(PAGE)
)
_LAST = select(_SEQUENCE.c.last_sequence).where(_SEQUENCE.c.project_id == bindparam("project_id"))
# The project, while it is not deleted, with the caller's role in it (null: no member).
_ACCESS = (
    select(_PROJECT.c.id, _MEMBER.c.role)
    .outerjoin(
        _MEMBER,
        and_(_MEMBER.c.project_id == _PROJECT.c.id, _MEMBER.c.user_id == bindparam("subject")),
    )
    .where(_PROJECT.c.id == bindparam("project_id"), _PROJECT.c.deleted_at.is_(None))
)


def parse_last_event_id(value: str | None) -> int | None:
    """The number a reconnecting client last saw; None for a fresh (or unusable) one."""
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if value is None or not (digits := value.strip()).isascii() or not digits.isdigit():
        return None
    return int(digits)


def resync(reason: str, last_event_id: int, detail: str) -> ServerSentEvent:
    body = {"reason": reason, "last_event_id": last_event_id, "detail": detail}
    return ServerSentEvent(data=json.dumps(body), event="resync", retry=RECONNECT_MS)


def withdrawn(last_event_id: int) -> ServerSentEvent:
    return resync("access_withdrawn", last_event_id, "the caller may no longer see this project")


@dataclass
class ProjectStream:
    engine: AsyncEngine
    broker: EventBroker
    slots: StreamSlots
    settings: Settings
    project_id: int
    principal: Principal
    slot: str
    last_event_id_header: str | None

    async def _rows(self, statement: Select[Any], **parameters: Any) -> Sequence[Row[Any]]:
        # Shielded: a client that goes away cancels its stream, and a statement cut short
        # costs its pooled connection (SQLAlchemy discards one it cannot reset). A read here
        # is short and bounded by the statement timeout; the cancellation lands right after.
        with anyio.CancelScope(shield=True):
            async with self.engine.connect() as connection:
                rows = (await connection.execute(statement, parameters)).all()
        return rows

    async def _may_follow(self) -> bool:
        """Whether the caller may still see the project, as the route checked at the start."""
        rows = await self._rows(_ACCESS, project_id=self.project_id, subject=self.principal.subject)
        return bool(rows) and (rows[0].role is not None or self.principal.is_admin)

    async def _last_sequence(self) -> int:
        rows = await self._rows(_LAST, project_id=self.project_id)
        return int(rows[0].last_sequence) if rows else 0

    async def _read_after(self, after: int) -> list[tuple[int, str, str]]:
        rows = await self._rows(_AFTER, project_id=self.project_id, after=after)
        return [(row.sequence, row.type, row.payload) for row in rows]

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        # Subscribed before anything is read: whatever commits from here on is either read
        # below or arrives through the subscription (twice at worst; numbers dedupe).
        async with self.broker.subscribe(self.project_id) as subscription:
            EVENT_STREAMS_OPEN.inc()
            try:
                async for event in self._stream(subscription):
                    yield event
            finally:
                EVENT_STREAMS_OPEN.dec()
                await self.slots.release(self.principal.key, self.slot)

    async def _stream(self, subscription: Subscription) -> AsyncIterator[ServerSentEvent]:
        await self.broker.ready()
        current = await self._last_sequence()
        asked = parse_last_event_id(self.last_event_id_header)
        last = current
        if self.last_event_id_header is not None:
            if asked is None or asked > current:
                yield resync(
                    "unknown_event_id", current, "Last-Event-ID names no event of this project"
                )
            else:
                last = asked
        lifetime = min(
            float(self.settings.events_stream_max_seconds),
            self.principal.expires_at - time.time(),
        )
        deadline = time.monotonic() + lifetime
        yield ServerSentEvent(comment="stream open", retry=RECONNECT_MS)
        while time.monotonic() < deadline:
            if subscription.overflowed:
                yield resync(
                    "too_slow", last, "the stream fell behind; reconnect with Last-Event-ID"
                )
                return
            if not await self._may_follow():
                yield withdrawn(last)
                return
            # Catch up from the outbox: after a resume, a gap, or a quiet heartbeat.
            while True:
                rows = await self._read_after(last)
                if rows and rows[0][0] != last + 1:
                    yield resync(
                        "history_pruned",
                        last,
                        "events after Last-Event-ID are no longer kept; reload and follow on",
                    )
                for sequence, kind, document in rows:
                    yield ServerSentEvent(data=document, event=kind, id=str(sequence))
                    last = sequence
                if len(rows) < PAGE:
                    break
                # A long catch-up to a slow client can take minutes: between pages it is
                # bound by the token's expiry, access and the slot as the live part is.
                if time.monotonic() >= deadline:
                    return
                if not await self._may_follow():
                    yield withdrawn(last)
                    return
                await self.slots.refresh(self.principal.key, self.slot)
            # Live: events as they commit, until a gap, a heartbeat or the end.
            heartbeat_at = time.monotonic() + self.settings.events_heartbeat_seconds
            # Whether access was checked since the stream last waited: events that arrive
            # together share one check.
            checked = True
            while True:
                if subscription.overflowed:
                    break
                # Checked before the queue, not only when it runs dry: events that keep
                # coming must not carry a stream past its token's expiry, or its slot past
                # the slot's expiry.
                timeout = min(heartbeat_at, deadline) - time.monotonic()
                if timeout <= 0:
                    await self.slots.refresh(self.principal.key, self.slot)
                    break
                if subscription.queue.empty():
                    checked = False
                    subscription.wake.clear()
                    try:
                        await asyncio.wait_for(subscription.wake.wait(), timeout)
                    except TimeoutError:
                        continue
                    continue
                event = subscription.queue.get_nowait()
                if event.sequence <= last:
                    continue
                if event.sequence != last + 1:
                    break
                if not checked:
                    if not await self._may_follow():
                        yield withdrawn(last)
                        return
                    checked = True
                yield ServerSentEvent(data=event.document, event=event.type, id=str(event.sequence))
                last = event.sequence
