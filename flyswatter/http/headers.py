"""Headers every response carries, added in one pass over the raw ASGI header list."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message

SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "private, no-cache"),
)
SECURITY_HEADER_PAIRS = tuple((name.encode(), value.encode()) for name, value in SECURITY_HEADERS)


def add_missing_headers(message: Message, pairs: Iterable[tuple[bytes, bytes]]) -> None:
    """Append the headers (lower-case names, encoded) that the response does not set itself.

    One pass over the raw header list instead of a ``MutableHeaders`` lookup per header:
    every response goes through this, several times.
    """
    headers = message.get("headers")
    if not isinstance(headers, list):
        headers = message["headers"] = list(headers or ())
    present = {name.lower() for name, _ in headers}
    headers.extend(pair for pair in pairs if pair[0] not in present)
