"""The intent log of storage writes (``storage_write``): what lets the orphan sweep remove the
objects whose row never came, and only those.

A writer (an upload, a report) commits its object's key here in a short transaction of its
own before it writes the object, and deletes it again in the very transaction that inserts
the file's row, requiring that it deleted exactly one unclaimed intent. The sweep claims the
intents older than its grace (``claimed_at``, committed), removes their objects, then deletes
the intents. Whichever of the two gets to an intent first wins and the other finds nothing:
a row never commits once its object is claimed, and a committed row has no intent left, so
the sweep never removes an object a row names. A claim is never taken back: one the sweep
could not finish (storage down, an object refused) stays claimed for the next sweep, so no
writer can settle it in between, and nothing is forgotten either. The database alone
decides: objects it never recorded (another database's, or written after the backup it was
restored from) are never touched.

A writer that fails before it attempts its commit removes its object and then its intent at
once. One whose commit itself fails leaves both: the commit may have landed (then the intent
is gone with it and the object is the row's), or not (then the intent is there and the sweep
removes the object once its grace is over).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.sql.dml import Delete, Insert
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.db import utcnow
from flyswatter.storage.models import StorageWrite
from flyswatter.storage.service import StorageUnavailable

logger = logging.getLogger("flyswatter.storage")


class WriteClaimed(StorageUnavailable):
    """The write's intent is claimed, or gone: the orphan sweep took it (the write outlasted
    the sweep's grace), and its object is removed or about to be. The write must fail; tried
    again, under a new key, it would succeed."""

    def __init__(self) -> None:
        super().__init__("the write took too long: its object was claimed by the orphan sweep")


def _intent(key: str) -> Insert:
    return insert(StorageWrite).values(key=key, created_at=utcnow())


def _settled(key: str) -> Delete:
    return delete(StorageWrite).where(
        col(StorageWrite.key) == key, col(StorageWrite.claimed_at).is_(None)
    )


def _require_one(deleted: int) -> None:
    if deleted != 1:
        raise WriteClaimed()


def intend_write(engine: Engine, key: str) -> None:
    """Record, committed before the object is written, that ``key`` is about to be."""
    with engine.begin() as connection:
        connection.execute(_intent(key))


async def intend_write_async(session: AsyncSession, key: str) -> None:
    """``intend_write`` on a request's session, which must hold no transaction of its own
    yet: this commits."""
    connection = await session.connection()
    await connection.execute(_intent(key))
    await session.commit()


def settle_write(connection: Connection, key: str) -> None:
    """In the transaction that inserts the file's row: delete the write's intent, or raise
    ``WriteClaimed`` when the sweep claimed it first (roll back: the object is going)."""
    _require_one(connection.execute(_settled(key)).rowcount)


async def settle_write_async(session: AsyncSession, key: str) -> None:
    """``settle_write`` in the session's transaction."""
    connection = await session.connection()
    _require_one((await connection.execute(_settled(key))).rowcount)


def drop_intent(engine: Engine, key: str) -> None:
    """Delete the intent of a write whose object is removed again (its row will never come),
    so that the sweep has nothing left to do for it. Never raises: a failure (or a claim
    the sweep took meanwhile) leaves the intent to the sweep, which removes a missing object
    harmlessly."""
    try:
        with engine.begin() as connection:
            connection.execute(_settled(key))
    except Exception as exc:
        logger.warning("storage intent %s left for the sweep: %s", key, type(exc).__name__)


async def drop_intent_async(session: AsyncSession, key: str) -> None:
    """``drop_intent`` on a request's session, whose failed transaction is rolled back first."""
    try:
        await session.rollback()
        connection = await session.connection()
        await connection.execute(_settled(key))
        await session.commit()
    except Exception as exc:
        logger.warning("storage intent %s left for the sweep: %s", key, type(exc).__name__)


def claim_abandoned_writes(engine: Engine, before: datetime, limit: int) -> list[str]:
    """Claim (committed) the oldest intents recorded before ``before``, at most ``limit``,
    those claimed by an earlier sweep included: from the commit on, no row may be committed
    for their objects. On PostgreSQL an intent its writer is settling right now is locked,
    and skipped: that writer decides it (its commit deletes the intent; its rollback leaves
    it for the next sweep). On SQLite the write lock taken at BEGIN puts the two one after
    the other. The keys, oldest first."""
    oldest = (
        select(col(StorageWrite.key))
        .where(col(StorageWrite.created_at) < before)
        .order_by(col(StorageWrite.created_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with engine.begin() as connection:
        claimed = connection.execute(
            update(StorageWrite)
            .where(col(StorageWrite.key).in_(oldest))
            .values(claimed_at=utcnow())
            .returning(col(StorageWrite.key), col(StorageWrite.created_at))
        ).all()
    return [str(key) for key, _ in sorted(claimed, key=lambda row: row[1])]


def forget_claims(engine: Engine, keys: Sequence[str]) -> None:
    """Delete the claimed intents whose objects are removed. A failure leaves them claimed,
    for the next sweep to remove their (missing) objects again and try once more."""
    if keys:
        with engine.begin() as connection:
            connection.execute(delete(StorageWrite).where(col(StorageWrite.key).in_(keys)))
