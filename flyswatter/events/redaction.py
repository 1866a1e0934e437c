"""A deleted comment's text leaves the events that carried it.

Events are kept for days after the change they tell about (``event_retention_days``): a
stream client resuming with an old Last-Event-ID is sent them again, and a webhook delivery
still pending or retried sends the event as stored then. A comment deleted because it should
never have been written (a pasted password, a customer's data) must not come back that way:
in the deleting transaction, the ``comment.created`` and ``comment.updated`` events of the
comment lose their ``comment``, keeping its id, as ``comment.deleted`` has it. What was
already delivered or streamed is out of reach, as it is on every tracker.
"""

from __future__ import annotations

import json

from sqlalchemy import bindparam, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.db import tables
from flyswatter.events.models import Event, EventType

(_EVENT,) = tables(Event)

_CARRY_TEXT = (EventType.comment_created.value, EventType.comment_updated.value)

_REWRITE = (
    update(_EVENT).where(_EVENT.c.id == bindparam("event_id")).values(payload=bindparam("redacted"))
)


async def forget_comment_text(
    session: AsyncSession,
    issue_id: int,
    comment_id: int | None = None,
    *,
    text: str | None = None,
) -> int:
    """Stage the removal of the comment's text from the issue's stored events (of every
    comment of the issue, without ``comment_id``; only where it was ``text``, for a text
    removed from its history); how many events lost it.

    The events are found by issue and type, and the comment by the id in their document:
    an issue's comment events within the retention are few, and the document is text, which
    each database would search differently."""
    connection = await session.connection()
    rows = await connection.execute(
        select(_EVENT.c.id, _EVENT.c.payload).where(
            _EVENT.c.issue_id == issue_id, _EVENT.c.type.in_(_CARRY_TEXT)
        )
    )
    rewritten = []
    for event_id, payload in rows:
        document = json.loads(payload)
        data = document["data"]
        if data.get("comment") is None:
            continue
        if comment_id is not None and data.get("comment_id") != comment_id:
            continue
        if text is not None and data["comment"].get("body") != text:
            continue
        data["comment"] = None
        # Compact, as the document was written (pydantic's JSON).
        redacted = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        rewritten.append({"event_id": event_id, "redacted": redacted})
    if rewritten:
        await connection.execute(_REWRITE, rewritten)
    return len(rewritten)
