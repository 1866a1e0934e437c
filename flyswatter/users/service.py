"""The user mirror: kept in step with the identities tokens present, and read as summaries."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.comments.models import Comment
from flyswatter.db import table, utcnow
from flyswatter.issues.models import Issue
from flyswatter.users.models import User, UserSummary

_USER = table(User)
SUMMARY_FIELDS = tuple(UserSummary.model_fields)
# What a user's work shows of them (``UserSummary`` less the id), before an upsert.
_SHOWN = select(_USER.c.username, _USER.c.name, _USER.c.is_service_account).where(
    _USER.c.id == bindparam("id")
)
# Built once, with an expanding bind parameter: every list of issues, comments or history runs it.
_SUMMARIES = select(*(_USER.c[name] for name in SUMMARY_FIELDS)).where(
    _USER.c.id.in_(bindparam("ids", expanding=True))
)


async def user_summaries(
    session: AsyncSession, ids: Iterable[str | None]
) -> dict[str, UserSummary]:
    """The summaries of the users with these ids (``None`` skipped), in one statement."""
    wanted = {user_id for user_id in ids if user_id}
    if not wanted:
        return {}
    connection = await session.connection()
    rows = await connection.execute(_SUMMARIES, {"ids": sorted(wanted)})
    return {row.id: UserSummary.model_validate(dict(row._mapping)) for row in rows}


class UserMirror:
    """Upserts a ``User`` row the first time a process sees an identity or its claims change.

    The token verifier calls it for each token it verifies afresh (``on_verified``), so a
    token it has cached costs nothing here, and remembering what was written keeps even a
    new token of a known caller with unchanged claims free of writes. Each upsert is its own
    short transaction on its own connection, committed before the request's work starts and
    never part of it: the mirror must not vanish if the request's change rolls back, and the
    request's session is the request's to commit.
    """

    def __init__(self, engine: AsyncEngine, capacity: int = 10_000) -> None:
        self._engine = engine
        self._seen: OrderedDict[str, tuple[str, str | None, str | None, bool, str | None]] = (
            OrderedDict()
        )
        self._capacity = capacity

    async def ensure(self, principal: Principal) -> None:
        fingerprint = (
            principal.username,
            principal.email,
            principal.name,
            principal.is_service_account,
            principal.client_id if principal.is_service_account else None,
        )
        if self._seen.get(principal.subject) == fingerprint:
            self._seen.move_to_end(principal.subject)
            return
        username, email, name, is_service_account, client_id = fingerprint
        values = {
            "id": principal.subject,
            "username": username[:255],
            "email": email[:320] if email else None,
            "name": name[:255] if name else None,
            "is_service_account": is_service_account,
            "client_id": client_id[:255] if client_id else None,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(User).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[table(User).c.id],
            set_={
                key: statement.excluded[key] for key in values if key not in ("id", "created_at")
            },
        )
        async with self._engine.begin() as connection:
            shown = (await connection.execute(_SHOWN, {"id": principal.subject})).first()
            await connection.execute(statement)
            # What issues and comments show of the user changed: their ETags must too.
            if shown is not None and tuple(shown) != (
                username[:255],
                values["name"],
                is_service_account,
            ):
                await person_changed(connection, principal.subject)
        self._seen[principal.subject] = fingerprint
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)


async def person_changed(connection: AsyncConnection, user_id: str) -> None:
    """A user's summary (username, display name) changed: the issues they reported or are
    assigned and the comments they wrote show it, so they get new versions (and ETags)."""
    shows = or_(col(Issue.reporter_id) == user_id, col(Issue.assignee_id) == user_id)
    # Locked in id order first, as every writer of many issues or comments locks them
    # (``lock_issues``), then those locked are changed (not the rows that match by then).
    for model, which in ((Issue, shows), (Comment, col(Comment.author_id) == user_id)):
        key = col(model.id)
        locked = select(key).where(which).order_by(key).with_for_update(key_share=True)
        ids = list((await connection.execute(locked)).scalars())
        await connection.execute(
            update(model).where(key.in_(ids)).values(version=col(model.version) + 1)
        )
