"""Keeping the user mirror in step with the identities tokens present."""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.db import utcnow
from flyswatter.users.models import User


class UserMirror:
    """Upserts a ``User`` row the first time a process sees an identity or its claims change.

    Remembering what was written keeps the hot path free of writes: a known caller with
    unchanged claims costs nothing here.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._seen: OrderedDict[str, tuple[str, str | None, str | None, bool, str | None]] = (
            OrderedDict()
        )
        self._capacity = capacity

    async def ensure(self, session: AsyncSession, principal: Principal) -> None:
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
        dialect = session.bind.dialect.name if session.bind else "postgresql"
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(User).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[User.__table__.c.id],  # type: ignore[attr-defined]
            set_={
                key: statement.excluded[key] for key in values if key not in ("id", "created_at")
            },
        )
        # Its own transaction: the mirror must not vanish if the request's change rolls back.
        await session.exec(statement)
        await session.commit()
        self._seen[principal.subject] = fingerprint
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def forget(self) -> None:
        self._seen.clear()
