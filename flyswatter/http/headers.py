"""Every header value the service emits is built here.

Values that carry names (``Location``, ``Link``, ``ETag``, ``Content-Disposition``) are
percent-encoded (RFC 3986, RFC 8187) from UTF-8 with unencodable code points replaced, so
each is printable ASCII: none can fail to encode as latin-1, and none can carry CR/LF into
another header, whatever Unicode a label, user or file is called. Routes build them before
they commit, so that nothing that can fail runs after a write.

Below them: the headers every response carries, added in one pass over the raw header list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from starlette.datastructures import URL
from starlette.types import Message

API_PREFIX = "/api/v1"

# RFC 3986 3.3: what a path may hold unencoded besides unreserved characters and "%".
_PATH_SAFE = "/!$&'()*+,;=:@"
# RFC 3986 3.2: a host (IPv6 in brackets), a port, never userinfo.
_AUTHORITY_SAFE = ":[]"
# RFC 6750 3: error_description and scope values are printable ASCII without '"' and '\'.
_CHALLENGE_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _encoded(text: str, safe: str = "") -> str:
    # "replace": a lone surrogate (which no valid input carries) still becomes a "%3F".
    return quote(text, safe=safe, errors="replace")


def api_path(*segments: str | int) -> str:
    """An API path, each segment percent-encoded: ``api_path("projects", "FLY", "labels",
    "🐞")`` is ``/api/v1/projects/FLY/labels/%F0%9F%90%9E``."""
    return API_PREFIX + "".join("/" + _encoded(str(segment)) for segment in segments)


def next_link(url: URL) -> str:
    """RFC 8288 ``Link`` to the next page at ``url`` (the request's, query replaced)."""
    target = f"{url.scheme}://{_encoded(url.netloc, _AUTHORITY_SAFE)}"
    target += _encoded(url.path, _PATH_SAFE)
    if url.query:
        # Starlette's query is already form-encoded; anything else is encoded here.
        target += "?" + _encoded(url.query, "&=%+")
    return f'<{target}>; rel="next"'


def entity_tag(*parts: str | int) -> str:
    """A strong ETag (RFC 9110 8.8.3) of ``parts``, joined by ``-``."""
    return '"' + "-".join(_encoded(str(part)) for part in parts) + '"'


def content_disposition(filename: str, *, inline: bool = False) -> str:
    """``attachment`` (or ``inline``) with an ASCII fallback name and the exact one in
    RFC 8187 encoding."""
    fallback = "".join(
        char if char.isascii() and char.isprintable() and char not in '"\\%' else "_"
        for char in filename
    )
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback or '_'}\"; filename*=UTF-8''{_encoded(filename)}"


def retry_after(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least one (RFC 9110 10.2.3)."""
    return str(max(1, int(seconds)))


def bearer_challenge(error: str, **parameters: str) -> str:
    """A ``WWW-Authenticate`` Bearer challenge (RFC 6750 3), its values kept to the
    characters a quoted parameter may hold."""
    pairs = {"error": error, **parameters}
    return "Bearer " + ", ".join(
        f'{name}="{_CHALLENGE_UNSAFE.sub("?", value)}"' for name, value in pairs.items()
    )


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
