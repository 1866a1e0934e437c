"""Conditional requests (RFC 9110): ETags, ``If-Match`` for writes, ``If-None-Match`` for reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Response, status

from flyswatter.errors import PreconditionFailed
from flyswatter.http.headers import entity_tag
from flyswatter.text import SingleLine

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (the ETag in If-None-Match still holds)"}
}
IfMatch = Annotated[
    SingleLine | None,
    Header(
        max_length=200,
        description="Apply only if the resource still has this ETag (else 412).",
    ),
]
IfNoneMatch = Annotated[
    SingleLine | None,
    Header(max_length=200, description="Answer 304 if the resource still has this ETag."),
]


def etag_of(kind: str, row_id: int | None, version: int) -> str:
    return entity_tag(kind, str(row_id), f"v{version}")


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [part.strip() for part in header.split(",")]
    # Weak comparison, as RFC 9110 asks for If-None-Match; our tags are strong anyway.
    return "*" in candidates or etag in candidates or f"W/{etag}" in candidates


def check_if_match(if_match: str | None, etag: str) -> None:
    if if_match is not None and not _etag_matches(if_match, etag):
        raise PreconditionFailed(
            "the resource changed since you read it; fetch it again and retry",
            # The current tag in the header too, where clients read ETags from (RFC 9110).
            headers={"ETag": etag},
            extra={"current_etag": etag},
        )


def not_modified(if_none_match: str | None, etag: str) -> Response | None:
    """The 304 answer when the client's copy is current, else None."""
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return None
