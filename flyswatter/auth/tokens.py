"""Local validation of Keycloak access tokens against the realm's cached JWKS.

The JWKS is fetched through python-keycloak's async client: once at start-up, and again
only when a token names a key id the cache does not know, at most once per
``jwks_refresh_min_interval_seconds`` (so a flood of forged ``kid`` values cannot turn
into a flood of requests to Keycloak). Signature checks run in-process with the cached
keys; no request waits on Keycloak unless its key is new.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk
from jwcrypto.common import JWException
from jwcrypto.jwt import JWTExpired
from keycloak import KeycloakOpenID

from flyswatter.auth.jwks import signing_keys
from flyswatter.auth.scopes import ADMIN_ROLE
from flyswatter.config import Settings
from flyswatter.text import first_unsafe_character, replace_unsafe_characters

logger = logging.getLogger("flyswatter.auth")

SERVICE_ACCOUNT_PREFIX = "service-account-"
MAX_TOKEN_LENGTH = 16_384
# A JWS header names an algorithm, a key id and a type; a longer one is not Keycloak's.
MAX_HEADER_LENGTH = 1_024
VERIFIED_CACHE_SIZE = 10_000
# The compact serialisation: three base64url segments (RFC 7515 §7.1), nothing else.
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
# Seconds since the epoch that datetime and every database can hold (up to the year 9999).
_MAX_TIMESTAMP = 253_402_300_799
# What a malformed token can raise on its way through json, base64 and jwcrypto: a document
# nested deeper than the parser recurses, numbers too large for a float, wrong claim types.
_PARSE_ERRORS = (
    JWException,
    ValueError,
    TypeError,
    KeyError,
    RecursionError,
    OverflowError,
    binascii.Error,
)


class TokenRejected(Exception):
    """A token that does not authenticate anyone; ``reason`` is a stable metrics label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the validated token says."""

    subject: str
    username: str
    email: str | None
    name: str | None
    client_id: str | None
    is_service_account: bool
    scopes: frozenset[str]
    realm_roles: frozenset[str]
    # The token's ``exp`` (Unix time): what outlives a request, a live stream, ends by it.
    expires_at: float = math.inf

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.realm_roles

    @property
    def key(self) -> str:
        """Who is calling, for rate limits, idempotency records and logs; never the token."""
        if self.is_service_account:
            return f"client:{self.client_id}"
        return f"user:{self.subject}"

    @classmethod
    def from_claims(cls, claims: dict[str, Any], expires_at: float = math.inf) -> Principal:
        username = str(claims.get("preferred_username") or claims["sub"])
        service_client = _service_account_client(claims, username)
        client_id = service_client or claims.get("azp")
        realm_access = claims.get("realm_access")
        roles = realm_access.get("roles") if isinstance(realm_access, dict) else None
        # Like an odd scope or realm_access: roles only ever grant, so an odd claim grants none.
        roles = roles if isinstance(roles, list) else []
        scope = claims.get("scope", "")
        scopes = scope.split() if isinstance(scope, str) else []
        return cls(
            subject=str(claims["sub"]),
            username=username,
            email=_display_text(claims.get("email")),
            name=_display_text(claims.get("name")),
            client_id=str(client_id) if client_id else None,
            is_service_account=service_client is not None,
            scopes=_grants(scopes),
            realm_roles=_grants(roles),
            expires_at=expires_at,
        )


def _service_account_client(claims: dict[str, Any], username: str) -> str | None:
    """The client a service-account token speaks for; None for a person's token.

    Anyone may pick a username starting ``service-account-``, so the name alone proves
    nothing. Keycloak puts the client id in ``client_id`` (``clientId`` before version 25)
    only in client-credentials tokens, and names the client's user after it in lower case;
    both must agree. ``azp`` does not count: a person's token names the client they used.
    """
    client_id = claims.get("client_id") or claims.get("clientId")
    if not isinstance(client_id, str) or not client_id:
        return None
    if username != SERVICE_ACCOUNT_PREFIX + client_id.lower():
        return None
    return client_id


def _grants(values: list[Any]) -> frozenset[str]:
    """The scope entries or role names that are one-line text; the others are dropped.

    Like a scope or realm_access that is not a string or a list: scopes and roles only ever
    grant, so an entry holding a control character or a lone surrogate grants nothing, and the
    rest of the token still counts. Refusing the token is for the claims that say who is
    calling (``_identifier``); an odd entry here is never echoed back (``/users/me`` could not
    encode a lone surrogate) nor compared against a real scope.
    """
    return frozenset(
        value for value in values if isinstance(value, str) and not first_unsafe_character(value)
    )


def _display_text(value: Any) -> str | None:
    # Shown, never used to decide anything: a control character in a display name is blanked
    # rather than locking its owner out.
    return replace_unsafe_characters(value) if isinstance(value, str) else None


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, refused unless it is a flat JSON object."""
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT_JWS.match(token):
        raise TokenRejected("malformed", "the token is not a signed JWT")
    segment = token.split(".", 1)[0]
    if len(segment) > MAX_HEADER_LENGTH:
        raise TokenRejected("malformed", "the token is not a signed JWT")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except _PARSE_ERRORS:
        raise TokenRejected("malformed", "the token is not a JWT") from None
    if not isinstance(header, dict) or not all(
        isinstance(value, str | int | bool) for value in header.values()
    ):
        raise TokenRejected("malformed", "the token is not a JWT")
    return header


def _timestamp(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2), or None when absent; any other value is malformed."""
    value = claims.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        # Also false for NaN and the infinities; compared before any float() of a huge int.
        or not 0 <= value <= _MAX_TIMESTAMP
    ):
        raise TokenRejected("malformed", f"the token's {name} is not a time")
    return float(value)


def _identifier(claims: dict[str, Any], name: str) -> None:
    """Ids the service stores and shows must be text a database and a header can hold."""
    value = claims.get(name)
    if value is None:
        return
    if not isinstance(value, str) or len(value) > 255 or first_unsafe_character(value):
        raise TokenRejected("malformed", f"the token's {name} is not a usable identifier")


class TokenVerifier:
    def __init__(
        self,
        settings: Settings,
        *,
        on_refresh: Callable[[str], None] | None = None,
        on_verified: Callable[[Principal], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._openid = KeycloakOpenID(
            server_url=settings.keycloak_url or "",
            realm_name=settings.keycloak_realm,
            client_id=settings.audience,
            timeout=5,
        )
        self._keys: jwk.JWKSet | None = None
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._kids: frozenset[str] = frozenset()
        # The JWKS entries skipped at the last refresh, so that each is warned about once.
        self._skipped: frozenset[str] = frozenset()
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()
        self._on_refresh = on_refresh or (lambda _outcome: None)
        self._on_verified = on_verified

    @property
    def has_keys(self) -> bool:
        return self._keys is not None

    async def refresh_keys(self, *, force: bool = False) -> bool:
        """Fetch the JWKS; True when the keys changed.

        Only refetches for unknown key ids are throttled: a forced load (start-up) leaves the
        throttle alone, so a key rotated right after start is still picked up by its first token.
        """
        async with self._lock:
            if not force:
                now = time.monotonic()
                if now - self._last_fetch < self._settings.jwks_refresh_min_interval_seconds:
                    return False
                self._last_fetch = now
            try:
                certs = await self._openid.a_certs()
                entries = certs.get("keys", [])
                if not isinstance(entries, list):
                    raise TypeError("the JWKS has no list of keys")
            except Exception as exc:
                # The message of a connection error can carry URLs with credentials; log the kind.
                logger.warning(
                    "JWKS fetch from Keycloak at %s failed: %s",
                    self._settings.keycloak_address,
                    type(exc).__name__,
                )
                self._on_refresh("error")
                return False
            keys, kids, skipped = signing_keys(entries, warned=self._skipped)
            self._skipped = skipped
            changed = kids != self._kids
            if changed:
                # A key may have been withdrawn: tokens it signed must be checked again.
                self._verified.clear()
            self._keys, self._kids = keys, kids
            self._on_refresh("success")
            logger.info(
                "JWKS loaded with %d signing key(s), %d unusable skipped", len(kids), len(skipped)
            )
            return changed

    async def verify(self, token: str) -> Principal:
        """The caller a token authenticates; raises TokenRejected.

        A token verified once is remembered until it expires (or the keys change), so a
        client reusing its token costs a dictionary lookup instead of a signature check.
        ``on_verified`` runs for each token verified afresh, before it is remembered: if it
        fails, the next request with the token verifies it, and runs it, again.
        """
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, expires_at = remembered
            if time.time() < expires_at:
                return principal
            del self._verified[token]
        principal, expires_at = await self._verify_signed(token)
        if self._on_verified is not None:
            await self._on_verified(principal)
        self._verified[token] = (principal, expires_at)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _verify_signed(self, token: str) -> tuple[Principal, float]:
        header = _unverified_header(token)
        if header.get("alg") not in self._settings.token_algorithms:
            raise TokenRejected("unsupported_algorithm", "the token's algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("malformed", "the token names no signing key")
        if kid not in self._kids:
            await self.refresh_keys()
            if kid not in self._kids:
                reason = "keys_unavailable" if self._keys is None else "unknown_key"
                raise TokenRejected(reason, "the token's signing key is not known")
        assert self._keys is not None
        try:
            claims = self._openid.decode_token(
                token,
                validate=True,
                key=self._keys,
                algs=self._settings.token_algorithms,
                expected_type="JWS",
                # jwcrypto checks ``exp`` only when check_claims names it; None means "now".
                check_claims={"exp": None, "sub": None},
                leeway=self._settings.token_leeway_seconds,
            )
        except JWTExpired:
            raise TokenRejected("expired", "the token has expired") from None
        except _PARSE_ERRORS:
            raise TokenRejected("bad_signature", "the token could not be verified") from None
        if not isinstance(claims, dict):
            raise TokenRejected("malformed", "the token's claims are not a JSON object")
        expires_at = self._check_claims(claims)
        return Principal.from_claims(claims, expires_at), expires_at

    def _check_claims(self, claims: dict[str, Any]) -> float:
        """Everything the signature does not vouch for; returns the expiry."""
        settings = self._settings
        now = time.time()
        expires_at = _timestamp(claims, "exp")
        if expires_at is None:
            raise TokenRejected("malformed", "the token has no expiry")
        nbf = _timestamp(claims, "nbf")
        if nbf is not None and nbf > now + settings.token_leeway_seconds:
            raise TokenRejected("not_yet_valid", "the token is not valid yet")
        # A token issued in the future comes from a clock that cannot be trusted, or was
        # minted to outlive its stated lifetime.
        iat = _timestamp(claims, "iat")
        if iat is not None and iat > now + settings.token_leeway_seconds:
            raise TokenRejected("issued_in_future", "the token was issued in the future")
        for name in ("sub", "preferred_username", "azp", "client_id", "clientId"):
            _identifier(claims, name)
        if claims.get("iss") != settings.expected_issuer:
            raise TokenRejected("wrong_issuer", "the token was issued by another realm")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if settings.audience not in audiences:
            raise TokenRejected("wrong_audience", "the token is not meant for this service")
        # Keycloak marks access tokens "Bearer"; ID ("ID") and refresh ("Refresh") tokens
        # are signed by the same key and must not open the API.
        if claims.get("typ") != "Bearer":
            raise TokenRejected("wrong_type", "only access tokens are accepted")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenRejected("malformed", "the token has no subject")
        return expires_at

    async def close(self) -> None:
        await self._openid.connection.aclose()
