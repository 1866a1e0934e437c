"""Headers every response carries, added in one pass over the raw ASGI header list."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message

SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
)
SECURITY_HEADER_PAIRS = tuple((name.encode(), value.encode()) for name, value in SECURITY_HEADERS)

# Answers depend on who asks: no shared cache may keep one (RFC 9111 5.2.2.7), a private one
# revalidates by ETag before reuse, and keys what it keeps by the credentials (Vary). An error
# is kept nowhere: a 401 or 404 cached past the moment it was true misleads the next request.
_REVALIDATE = (b"cache-control", b"private, no-cache")
_NEVER_STORE = (b"cache-control", b"no-store")


def add_caching_headers(message: Message) -> None:
    """``Cache-Control`` by status, unless the response set its own; ``Vary: Authorization``
    joined to any ``Vary`` the response has (CORS adds ``Origin``)."""
    headers = message.get("headers")
    if not isinstance(headers, list):
        headers = message["headers"] = list(headers or ())
    vary_at = None
    has_cache_control = False
    for index, (name, _value) in enumerate(headers):
        lowered = name.lower()
        if lowered == b"vary":
            vary_at = index
        elif lowered == b"cache-control":
            has_cache_control = True
    if not has_cache_control:
        headers.append(_NEVER_STORE if message["status"] >= 400 else _REVALIDATE)
    if vary_at is None:
        headers.append((b"vary", b"Authorization"))
    else:
        name, value = headers[vary_at]
        if b"authorization" not in value.lower():
            headers[vary_at] = (name, value + b", Authorization")


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
