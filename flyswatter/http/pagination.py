"""Keyset (cursor) pagination: the one helper every list pages with.

A cursor is the sort key of the last row of a page, so the next page is an index range
scan starting after it: cost does not grow with depth. Cursors are opaque and URL-safe:
``base64url(JSON [sort, *values]) "." base64url(HMAC)``. The HMAC (SHA-256, keyed from the
settings) covers the list's path as well, so a cursor the service did not issue, or issued
for another list, project or sort order, is refused with a 400 before any of its values is
read; the values of a genuine one are still checked against the types the query expects. An
issue's lists sign the issue's id in place of the path (``Keyset.within``): a move changes its
key, and the old key's next link redirects to the new one with its cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from inspect import isawaitable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from flyswatter.config import Settings
from flyswatter.db import MAX_ROW_ID
from flyswatter.errors import BadRequest, problem_responses
from flyswatter.http.headers import next_link
from flyswatter.services import settings_of
from flyswatter.text import SingleLine, first_unsafe_character

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_LENGTH = 512


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )
    total: int | None = Field(
        default=None, description="Number of matching items; only when asked with `count=true`."
    )


def lists(model: type[BaseModel], errors: dict[int | str, dict[str, Any]]) -> dict[str, Any]:
    """The route options of a list of ``model``: a ``Page`` of them, or 400 for a bad cursor."""
    return {"response_model": Page[model], "responses": problem_responses(400) | errors}  # type: ignore[valid-type]


LimitParam = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, at most {MAX_LIMIT}.")
]
CursorParam = Annotated[
    SingleLine | None,
    Query(max_length=MAX_CURSOR_LENGTH, description="Opaque cursor from a previous page."),
]
CountParam = Annotated[bool, Query(description="Also return `total`; costs a count query.")]


# A signature of 128 bits: forging one is out of reach, and cursors stay short.
_SIGNATURE_BYTES = 16
# The longest text a cursor value holds (a user id, a label name, a timestamp).
_MAX_TEXT_VALUE = 255


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Without FLYSWATTER_CURSOR_SECRET (``dev``, an app built in-process) cursors are signed with
# a key of this process alone: they do not outlive a restart, and nobody can derive it.
# ``serve`` refuses to start without the setting, so that its replicas sign alike.
_PROCESS_KEY = secrets.token_bytes(32)


@lru_cache(maxsize=8)
def _signing_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"flyswatter cursor signing key", hashlib.sha256).digest()


def cursor_key(settings: Settings) -> bytes:
    if settings.cursor_secret is None:
        return _PROCESS_KEY
    return _signing_key(settings.cursor_secret.get_secret_value())


def _signature(key: bytes, list_path: str, payload: str) -> bytes:
    message = f"{list_path}\n{payload}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def signed_cursor(key: bytes, list_path: str, document: Any) -> str:
    """``document`` (JSON) as a cursor of ``list_path``, signed."""
    payload = _b64(json.dumps(document, separators=(",", ":"), default=str).encode())
    return f"{payload}.{_b64(_signature(key, list_path, payload))}"


def encode_cursor(key: bytes, list_path: str, sort: str, values: list[Any]) -> str:
    """A cursor for the page of ``list_path`` in ``sort`` order after ``values``."""
    return signed_cursor(key, list_path, [sort, *values])


def _checked(value: Any, kind: type) -> Any:
    """A cursor value of the type the query expects, or a 400."""
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ROW_ID:
            return value
    elif kind is str:
        if (
            isinstance(value, str)
            and len(value) <= _MAX_TEXT_VALUE
            and first_unsafe_character(value) is None
        ):
            return value
    elif kind is datetime and isinstance(value, str) and len(value) <= _MAX_TEXT_VALUE:
        try:
            parsed = datetime.fromisoformat(value)
            # Far ends of the calendar with an offset do not exist in UTC.
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    raise BadRequest("invalid cursor")


def decode_cursor(
    key: bytes, list_path: str, cursor: str, sort: str, types: tuple[type, ...]
) -> list[Any]:
    """The sort-key values of a cursor this service issued for this list and sort order."""
    payload, dot, signature = cursor.partition(".")
    try:
        genuine = dot and hmac.compare_digest(
            _unb64(signature), _signature(key, list_path, payload)
        )
    except (binascii.Error, ValueError):
        genuine = False
    if not genuine:
        raise BadRequest("invalid cursor, or made for another list")
    try:
        decoded = json.loads(_unb64(payload))
    except (binascii.Error, ValueError, RecursionError):
        raise BadRequest("invalid cursor") from None
    if not isinstance(decoded, list) or len(decoded) != len(types) + 1 or decoded[0] != sort:
        raise BadRequest("invalid cursor, or made for another sort order")
    return [_checked(value, kind) for value, kind in zip(decoded[1:], types, strict=True)]


@dataclass(slots=True)
class Keyset:
    """The page a list request asks for (``cursor``, ``limit``) and the answer's ``Link``.

    A list fetches ``fetch`` rows after ``after(...)`` in its order; ``page`` keeps
    ``limit`` of them, turns the look-ahead row into the next cursor and its
    RFC 8288 ``Link: <...>; rel="next"`` header (every other query parameter kept).
    """

    request: Request
    response: Response
    cursor: str | None
    limit: int
    # What the cursors are signed over besides the route, in place of the path (``within``).
    owner: str | None = None

    def within(self, owner: str) -> Keyset:
        """The same page, its cursors signed over the route and ``owner`` (a stable id of
        what the list belongs to) instead of the path: for lists under a name that can
        change, such as an issue's key, whose old name redirects to the new one, cursor
        included."""
        return Keyset(self.request, self.response, self.cursor, self.limit, owner)

    @property
    def _list(self) -> str:
        if self.owner is None:
            return self.request.url.path
        route = getattr(self.request.scope.get("route"), "path", self.request.url.path)
        return f"{route}#{self.owner}"

    @property
    def fetch(self) -> int:
        # One row of look-ahead tells whether there is a next page, without a count.
        return self.limit + 1

    @property
    def _key(self) -> bytes:
        return cursor_key(settings_of(self.request.app))

    def after(self, sort: str, types: tuple[type, ...]) -> list[Any] | None:
        """The sort key the page starts after, or None for the first page.

        ``types`` are ``int`` (ids, ranks: 32-bit), ``str`` (one-line text) or ``datetime``
        (ISO 8601 with an offset, returned in UTC).
        """
        if self.cursor is None:
            return None
        return decode_cursor(self._key, self._list, self.cursor, sort, types)

    async def page(
        self,
        rows: Sequence[R],
        *,
        sort: str,
        key: Callable[[R], list[Any]],
        build: Callable[[list[R]], list[T] | Awaitable[list[T]]],
        total: int | None = None,
    ) -> Page[T]:
        shown = list(rows[: self.limit])
        next_cursor = (
            encode_cursor(self._key, self._list, sort, key(shown[-1]))
            if len(rows) > self.limit
            else None
        )
        if next_cursor is not None:
            url = self.request.url.include_query_params(cursor=next_cursor)
            self.response.headers["Link"] = next_link(url)
        items = build(shown)
        if isawaitable(items):
            items = await items
        return Page(items=items, next_cursor=next_cursor, total=total)

    async def page_in_order_of(
        self,
        session: AsyncSession,
        statement: SelectOfScalar[R],
        column: Any,
        kind: type,
        build: Callable[[list[R]], list[T] | Awaitable[list[T]]],
    ) -> Page[T]:
        """The page of ``statement``'s rows in the order of one unique column, ascending;
        the sort the cursor names is the column's name."""
        sort = column.key
        if (after := self.after(sort, (kind,))) is not None:
            statement = statement.where(column > after[0])
        rows = (await session.exec(statement.order_by(column).limit(self.fetch))).all()
        return await self.page(rows, sort=sort, key=lambda row: [getattr(row, sort)], build=build)


async def keyset(
    request: Request,
    response: Response,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Keyset:
    return Keyset(request, response, cursor, limit)


KeysetDep = Annotated[Keyset, Depends(keyset)]
