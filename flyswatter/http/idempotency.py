"""``Idempotency-Key`` for POSTs that create things, so a retried request creates nothing new.

The key's record is inserted in the same transaction as what the request creates, holding
the response it produced. A retry within the window replays that response; the same key
with another body (or on another route) is a 422. Two concurrent requests with one key
race on the record's primary key: the loser's whole transaction rolls back and it replays
the winner's response, so exactly one thing is created.

The record's owner is the principal the route authenticated, taken as a dependency of its
own with the route's scope: FastAPI solves ``authenticate`` once per scope set and request,
so the scope check and the key's owner are one object, whatever order parameters come in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Text, delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.dependencies import require_scopes
from flyswatter.auth.scopes import Scope
from flyswatter.auth.tokens import Principal
from flyswatter.db import SessionDep, UTCDateTime, utcnow
from flyswatter.errors import Gone, UnprocessableEntity
from flyswatter.http.created import Body, Created
from flyswatter.services import settings_of

REPLAYED_HEADER = "Idempotent-Replayed"


class IdempotentRequest(SQLModel):
    """What a key stands for: a retry must be this very request (route and body) again."""

    method: str = Field(max_length=10)
    path: str = Field(max_length=500)
    request_hash: str = Field(max_length=64)

    def same_as(self, other: IdempotentRequest) -> bool:
        return (self.method, self.path, self.request_hash) == (
            other.method,
            other.path,
            other.request_hash,
        )


class IdempotencyRecord(IdempotentRequest, table=True):
    __tablename__ = "idempotency_record"

    principal_key: str = Field(primary_key=True, max_length=300)
    key: str = Field(primary_key=True, max_length=255)
    status_code: int
    response_body: str = Field(sa_type=Text)
    # Indexed: a deletion finds the records of what it deletes (``restate_created``).
    location: str | None = Field(default=None, max_length=500, index=True)
    etag: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=True
    )


def canonical_body(body: bytes) -> bytes:
    """A JSON body in one canonical spelling, so a retry that re-serialises still matches.

    A body that is not JSON, or nests too deep for the parser, is hashed as sent: the route
    refuses it with a 4xx of its own, and the key must not turn that into a 500."""
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        return body


class Idempotency:
    """The request's idempotency context; inert when the client sent no key."""

    def __init__(
        self,
        request: Request,
        principal: Principal,
        key: str | None,
        body: bytes,
        session: AsyncSession,
        response: Response,
    ) -> None:
        self.key = key
        self.session = session
        self.response = response
        self.principal = principal
        self.principal_key = principal.key
        self.request = IdempotentRequest(
            method=request.method,
            path=request.url.path,
            request_hash=hashlib.sha256(canonical_body(body)).hexdigest(),
        )
        window = settings_of(request.app).idempotency_window_seconds
        self.cutoff = utcnow() - timedelta(seconds=window)

    async def replay(self, session: AsyncSession) -> JSONResponse | None:
        """The stored response for a retry, or None when this request is the first."""
        if self.key is None:
            return None
        record = (
            await session.exec(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.principal_key == self.principal_key,
                    IdempotencyRecord.key == self.key,
                    col(IdempotencyRecord.created_at) >= self.cutoff,
                )
            )
        ).first()
        if record is None:
            return None
        if not self.request.same_as(record):
            raise UnprocessableEntity(
                "this Idempotency-Key was used for a different request; use a new key",
                loc=("header", "Idempotency-Key"),
            )
        if record.status_code == Gone.status:
            raise Gone(
                f"what this request created ({record.location}) was deleted since;"
                " nothing was made again"
            )
        headers = {REPLAYED_HEADER: "true"}
        if record.location:
            headers["Location"] = record.location
        if record.etag:
            headers["ETag"] = record.etag
        return JSONResponse(
            json.loads(record.response_body), status_code=record.status_code, headers=headers
        )

    async def record(
        self,
        session: AsyncSession,
        status_code: int,
        body: BaseModel,
        *,
        location: str | None = None,
        etag: str | None = None,
    ) -> None:
        """Stage the response in the request's transaction (before its commit)."""
        if self.key is None:
            return
        # An expired record under the same key makes way for the new one.
        await session.exec(
            delete(IdempotencyRecord).where(
                col(IdempotencyRecord.principal_key) == self.principal_key,
                col(IdempotencyRecord.key) == self.key,
                col(IdempotencyRecord.created_at) < self.cutoff,
            )
        )
        record = {
            "principal_key": self.principal_key,
            "key": self.key,
            "status_code": status_code,
            # As FastAPI answers the first time: by alias (a report's ``from``).
            "response_body": body.model_dump_json(by_alias=True),
            "location": location,
            "etag": etag,
        }
        session.add(IdempotencyRecord.model_validate(self.request, update=record))

    async def create(
        self, make: Callable[[], Awaitable[Created[Body]]], *, on_created: Callable[[], None]
    ) -> Body | JSONResponse:
        """Replay a retry; else make the resource, commit it with its record, and answer 201's
        ``Location`` and ``ETag``. ``on_created`` runs once the new resource is committed."""
        session = self.session
        if (replayed := await self.replay(session)) is not None:
            return replayed
        created = await make()
        await self.record(session, 201, created.body, location=created.location, etag=created.etag)
        # Before the commit: a replay answers with its own response instead.
        self.response.headers["Location"] = created.location
        self.response.headers["ETag"] = created.etag
        if (replayed := await self.commit(session)) is not None:
            return replayed
        on_created()
        return created.body

    async def commit(self, session: AsyncSession) -> JSONResponse | None:
        """Commit; when a concurrent twin won the race, roll back and return its response."""
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            if self.key is None:
                raise
            replayed = await self.replay(session)
            if replayed is None:
                raise
            return replayed
        return None


async def restate_created(
    session: AsyncSession,
    locations: Sequence[str],
    now: BaseModel | None = None,
    etag: str | None = None,
) -> None:
    """Stage new answers for the retries of the requests that created the resources at
    ``locations``, whose stored answers show a text that is gone (a deleted comment or
    issue, a text removed from a comment's history): the resource as it is ``now`` (with its
    ``etag``), or, when it was deleted, a 410. A retry still creates nothing again."""
    if not locations:
        return
    if now is None:
        values = {"status_code": Gone.status, "response_body": "{}", "etag": None}
    else:
        values = {"response_body": now.model_dump_json(by_alias=True), "etag": etag}
    located = col(IdempotencyRecord.location).in_(locations)
    await session.exec(update(IdempotencyRecord).where(located).values(**values))


IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes a retried POST safe: the same key within the window replays "
        "the first response and creates nothing new.",
    ),
]


def idempotent(scope: Scope) -> Callable[..., Awaitable[Idempotency]]:
    """Dependency: the idempotency context of a route whose caller needs ``scope``, owned by
    the very principal the route's ``require_scopes(scope)`` authenticated."""

    async def dependency(
        request: Request,
        session: SessionDep,
        response: Response,
        # A default rather than Annotated: the scope is a closure variable, which string
        # annotations (PEP 563) could not resolve.
        principal: Principal = require_scopes(scope),
        idempotency_key: IdempotencyKey = None,
    ) -> Idempotency:
        body = await request.body() if idempotency_key is not None else b""
        return Idempotency(request, principal, idempotency_key, body, session, response)

    return dependency


# The routes that create issues and comments need issues:write; a report, issues:read.
IdempotencyDep = Annotated[Idempotency, Depends(idempotent(Scope.issues_write))]
ReadIdempotencyDep = Annotated[Idempotency, Depends(idempotent(Scope.issues_read))]
