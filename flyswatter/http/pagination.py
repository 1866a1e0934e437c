"""Keyset (cursor) pagination: the one helper every list pages with.

A cursor is the sort key of the last row of a page, so the next page is an index range
scan starting after it: cost does not grow with depth. Cursors are opaque to clients
(base64 of JSON) and carry the sort they were made for, so a cursor cannot be replayed
against another ordering.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from inspect import isawaitable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel, Field

from flyswatter.errors import BadRequest, problem_responses
from flyswatter.text import SingleLine

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


def encode_cursor(sort: str, values: list[Any]) -> str:
    raw = json.dumps([sort, *values], separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, types: tuple[type, ...]) -> list[Any]:
    """The sort-key values in a cursor, checked against the types the query expects."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest("invalid cursor") from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != len(types) + 1
        or decoded[0] != sort
        or not all(
            (isinstance(value, kind) and not isinstance(value, bool)) or value is None
            for value, kind in zip(decoded[1:], types, strict=True)
        )
        # Row ids and ranks are 32-bit columns: a forged larger number is a bad cursor.
        or any(isinstance(value, int) and not 0 <= value <= 2**31 - 1 for value in decoded[1:])
    ):
        raise BadRequest("invalid cursor, or made for another sort order")
    return decoded[1:]


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

    @property
    def fetch(self) -> int:
        # One row of look-ahead tells whether there is a next page, without a count.
        return self.limit + 1

    def after(self, sort: str, types: tuple[type, ...]) -> list[Any] | None:
        """The sort key the page starts after, or None for the first page."""
        return None if self.cursor is None else decode_cursor(self.cursor, sort, types)

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
        next_cursor = encode_cursor(sort, key(shown[-1])) if len(rows) > self.limit else None
        if next_cursor is not None:
            url = self.request.url.include_query_params(cursor=next_cursor)
            self.response.headers["Link"] = f'<{url}>; rel="next"'
        items = build(shown)
        if isawaitable(items):
            items = await items
        return Page(items=items, next_cursor=next_cursor, total=total)


async def keyset(
    request: Request,
    response: Response,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Keyset:
    return Keyset(request, response, cursor, limit)


KeysetDep = Annotated[Keyset, Depends(keyset)]
