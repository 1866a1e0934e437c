"""Conditional requests (RFC 9110): ETags, ``If-Match`` and ``If-None-Match`` for any method."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Response, status
from pydantic import AfterValidator, WithJsonSchema

from flyswatter.errors import PreconditionFailed, problem_responses
from flyswatter.http.headers import entity_tag
from flyswatter.text import ONE_LINE_PATTERN, SingleLine

# What a conditional read answers besides its success.
CONDITIONAL_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (the ETag in If-None-Match still holds)"},
    **problem_responses(412),
}
# A list of tags is legitimate (a client holding several versions, RFC 9110 13.1.1), and about
# a hundred issue tags fit; the cap bounds the parse every conditional request pays for.
MAX_TAG_LIST_LENGTH = 2048


def _joined(lines: list[str]) -> str:
    """The field value of all its lines (RFC 9110 5.3)."""
    return ", ".join(lines)


def _within_cap(lines: list[str] | None) -> list[str] | None:
    """The cap counts every line of the field: split over lines, a list is parsed all the same."""
    if lines is not None and len(_joined(lines)) > MAX_TAG_LIST_LENGTH:
        raise ValueError(f"at most {MAX_TAG_LIST_LENGTH} characters of tags, over all lines")
    return lines


# Declared as lists so that every line of the field is read, not only the first: RFC 9110 5.3
# makes a field sent on several lines the comma-joined list of their values, and a client
# holding several versions may send each tag on a line of its own. Documented as what a client
# sends, one line of text with the cap (an OpenAPI array would read as a JSON array).
_TAG_LIST_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "maxLength": MAX_TAG_LIST_LENGTH, "pattern": ONE_LINE_PATTERN},
            {"type": "null"},
        ]
    }
)
_TagList = Annotated[list[SingleLine] | None, AfterValidator(_within_cap), _TAG_LIST_SCHEMA]
IfMatch = Annotated[
    _TagList,
    Header(
        description="Only if the resource still has one of these ETags, or any for `*` (else 412)."
    ),
]
IfNoneMatch = Annotated[
    _TagList, Header(description="Answer 304 if the resource still has one of these ETags.")
]
IfNoneMatchForWrites = Annotated[
    _TagList,
    Header(
        description="Apply only if the resource has none of these ETags; `*`: never, as it "
        "exists (else 412).",
    ),
]


def etag_of(kind: str, row_id: int | None, version: int) -> str:
    return entity_tag(kind, str(row_id), f"v{version}")


# RFC 9110 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, in a comma-separated list (empty
# elements allowed, RFC 9110 5.6.1), or "*". The tag is matched whole: etagc takes commas too.
_MEMBER = re.compile(r'[ \t,]*(?:(\*)|(W/)?("[\x21\x23-\x7e\x80-\xff]*"))[ \t]*(?:,|$)')


def _tags(lines: list[str]) -> list[tuple[bool, str]] | None:
    """``(weak, opaque-tag)`` for each tag of the field's lines; None for ``*``, [] when
    malformed (matches nothing, as a tag the resource never had).

    A ``*`` among tags (``"a"`` on one line, ``*`` on the next) still means any: the field
    asks whether the resource has any of its members, and ``*`` names every version.
    """
    header = _joined(lines)
    tags: list[tuple[bool, str]] = []
    anything = False
    position = 0
    while header[position:].strip(" \t,"):
        match = _MEMBER.match(header, position)
        if match is None:
            return []
        if match.group(1):
            anything = True
        else:
            tags.append((match.group(2) is not None, match.group(3)))
        position = match.end()
    return None if anything else tags


def _strong_match(lines: list[str], etag: str) -> bool:
    """If-Match (RFC 9110 13.1.1): strong comparison, a weak tag never matches."""
    tags = _tags(lines)
    return tags is None or (False, etag) in tags


def _weak_match(lines: list[str], etag: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2): weak comparison, ``W/`` is ignored on both sides."""
    tags = _tags(lines)
    return tags is None or etag.removeprefix("W/") in {tag for _weak, tag in tags}


def _precondition_failed(detail: str, etag: str) -> PreconditionFailed:
    return PreconditionFailed(
        detail,
        # The current tag in the header too, where clients read ETags from (RFC 9110).
        headers={"ETag": etag},
        extra={"current_etag": etag},
    )


def check_if_match(if_match: list[str] | None, etag: str) -> None:
    if if_match is not None and not _strong_match(if_match, etag):
        raise _precondition_failed(
            "the resource changed since you read it; fetch it again and retry", etag
        )


def check_if_none_match_for_write(if_none_match: list[str] | None, etag: str) -> None:
    """RFC 9110 13.1.2: on a write, a tag that matches is a 412, not a 304."""
    if if_none_match is not None and _weak_match(if_none_match, etag):
        raise _precondition_failed(
            "the resource exists with a tag your If-None-Match names; nothing was changed", etag
        )


def not_modified(if_none_match: list[str] | None, etag: str) -> Response | None:
    """The 304 answer when the client's copy is current, else None."""
    if if_none_match is not None and _weak_match(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return None


@dataclass(frozen=True, slots=True)
class ConditionalRead:
    """A read's ``If-Match`` and ``If-None-Match``, and the response its ETag is set on."""

    response: Response
    if_none_match: list[str] | None
    if_match: list[str] | None = None

    def answer(self, etag: str) -> Response | None:
        """The 304 when the client's copy is current; else None, the response tagged.

        A 412 first when ``If-Match`` names another version: RFC 9110 13.2.2 evaluates it
        before ``If-None-Match``, for every method.
        """
        check_if_match(self.if_match, etag)
        if (unchanged := not_modified(self.if_none_match, etag)) is not None:
            return unchanged
        self.response.headers["ETag"] = etag
        return None


async def _conditional_read(
    response: Response, if_none_match: IfNoneMatch = None, if_match: IfMatch = None
) -> ConditionalRead:
    return ConditionalRead(response, if_none_match, if_match)


# A read that answers 412 to a stale If-Match, 304 to a client whose copy is current, and
# tags the response otherwise.
ConditionalReadDep = Annotated[ConditionalRead, Depends(_conditional_read)]


@dataclass(frozen=True, slots=True)
class ConditionalWrite:
    """A write's ``If-Match`` and ``If-None-Match``, and the response whose ETag names the
    version written."""

    response: Response
    if_match: list[str] | None
    if_none_match: list[str] | None = None

    def check(self, etag: str) -> None:
        """412 when ``If-Match`` no longer names the resource, or ``If-None-Match`` does (``*``
        always, as the resource exists); with neither header, go on."""
        check_if_match(self.if_match, etag)
        check_if_none_match_for_write(self.if_none_match, etag)

    def tag(self, etag: str) -> None:
        self.response.headers["ETag"] = etag


async def _conditional_write(
    response: Response, if_match: IfMatch = None, if_none_match: IfNoneMatchForWrites = None
) -> ConditionalWrite:
    return ConditionalWrite(response, if_match, if_none_match)


ConditionalWriteDep = Annotated[ConditionalWrite, Depends(_conditional_write)]
