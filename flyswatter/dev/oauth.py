"""The OAuth 2.0 pieces of the development identity provider: its errors, the state of an
authorization-code sign-in (RFC 6749 4.1 with PKCE, RFC 7636) and reading a token request's form.

The authorization-code grant is written here and in ``identity_provider`` rather than on
authlib's ``AuthorizationServer``: authlib has no Starlette server integration (it would need a
request adapter, client and code models and a token generator wrapping the Keycloak-shaped
tokens), and it would own the token endpoint for one grant while the three others stay here.
What the grant needs is small and checked by tests: an exact ``redirect_uri`` match, S256
PKCE, and single-use codes bound to client, redirect URI and verifier.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request

from flyswatter.dev.claims import Session, b64url

MAX_FORM_BYTES = 64 * 1024
# RFC 7636 4.1 and 4.2: a verifier of 43 to 128 unreserved characters; an S256 challenge is
# the 43-character base64url of a SHA-256 digest.
CODE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


class OAuthError(Exception):
    """An error of the token endpoint, answered as Keycloak answers it."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked ``/auth`` request waiting for its user to sign in on the login page."""

    client_id: str
    redirect_uri: str
    state: str | None
    scopes: list[str]
    openid: bool
    code_challenge: str
    nonce: str | None
    expires_at: float


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """What a code stands for: one token request by this client, with this redirect URI and
    the verifier of this challenge, within a minute."""

    request: AuthorizationRequest
    session: Session
    expires_at: float


@dataclass(frozen=True, slots=True)
class AuthorizationRedirect:
    """Errors of an ``/auth`` request whose redirect URI is the client's own: sent back there."""

    redirect_uri: str
    state: str | None

    class Error(OAuthError):
        def __init__(self, location: str, error: str, description: str) -> None:
            super().__init__(302, error, description)
            self.location = location

    def error(self, error: str, description: str) -> AuthorizationRedirect.Error:
        answer = {"error": error, "error_description": description}
        if self.state is not None:
            answer["state"] = self.state
        return self.Error(f"{self.redirect_uri}?{urlencode(answer)}", error, description)


def session_id() -> str:
    return secrets.token_urlsafe(18)


def s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def asks_openid(form: Mapping[str, str]) -> bool:
    return "openid" in form.get("scope", "").split()


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError(
            400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
        )
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise OAuthError(400, "invalid_request", "Request too large")
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError(400, "invalid_request", "Invalid form encoding") from None
    return dict(pairs)
