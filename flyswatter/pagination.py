"""Keyset (cursor) pagination shared by every list.

A cursor is the sort key of the last row of a page, so the next page is an index range
scan starting after it: cost does not grow with depth. Cursors are opaque to clients
(base64 of JSON) and carry the sort they were made for, so a cursor cannot be replayed
against another ordering.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query, Request, Response
from pydantic import BaseModel, Field

from flyswatter.errors import BadRequest

T = TypeVar("T")

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


LimitParam = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, at most {MAX_LIMIT}.")
]
CursorParam = Annotated[
    str | None,
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


def set_next_link(request: Request, response: Response, next_cursor: str | None) -> None:
    """RFC 8288 ``Link: <...>; rel="next"`` keeping every other query parameter."""
    if next_cursor is None:
        return
    url = request.url.include_query_params(cursor=next_cursor)
    response.headers["Link"] = f'<{url}>; rel="next"'
