"""The identity provider's JWKS, entry by entry: which keys may verify a token, and which
entries cannot (skipped, named in a warning by kid and type, never by their material)."""

from __future__ import annotations

import logging
from typing import Any

from jwcrypto import jwk

from flyswatter.text import replace_unsafe_characters

logger = logging.getLogger("flyswatter.auth")


class UnusableKey(Exception):
    """A JWKS entry no token can be verified with; the message names it, never its material."""


def entry_name(entry: dict[str, Any]) -> str:
    """``kid`` and ``kty`` of a JWKS entry, as a log line may show them (public identifiers,
    but the provider's text: kept to one short line)."""
    kid, kty = entry.get("kid"), entry.get("kty")
    shown = repr(replace_unsafe_characters(kid)[:64]) if isinstance(kid, str) else "without a kid"
    kind = replace_unsafe_characters(kty)[:16] if isinstance(kty, str) else "no kty"
    return f"{shown} ({kind})"


def is_for_signing(entry: dict[str, Any]) -> bool:
    """Whether the provider publishes the key for signatures (RFC 7517 4.2 ``use``, 4.3
    ``key_ops``); a key that says neither may be used for them."""
    key_ops = entry.get("key_ops")
    return entry.get("use", "sig") == "sig" and (
        not isinstance(key_ops, list) or "verify" in key_ops
    )


def verifying_key(entry: Any) -> tuple[str, jwk.JWK]:
    """The kid and key a signing entry of the JWKS holds; raises UnusableKey."""
    if not isinstance(entry, dict):
        raise UnusableKey("an entry that is not a JSON object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        # Tokens are matched to keys by kid: a key without one verifies nothing.
        raise UnusableKey(f"key {entry_name(entry)}: no usable key id")
    try:
        key = jwk.JWK(**entry)
        # Builds the public key itself: an unknown kty fails above, a curve this build has no
        # support for, a point off its curve or an RSA modulus that is no number fail here,
        # once, rather than each time a token names the key.
        key.get_op_key("verify")
    except Exception as exc:
        # The exception's kind only: messages of key parsers may quote the values.
        raise UnusableKey(f"key {entry_name(entry)}: {type(exc).__name__}") from None
    return kid, key


def signing_keys(
    entries: list[Any], *, warned: frozenset[str] = frozenset()
) -> tuple[jwk.JWKSet, frozenset[str], frozenset[str]]:
    """The keys of the JWKS that can verify a token, their kids, and the entries skipped.

    One entry the service cannot use (a key type or curve it has no support for, a
    malformed key) is skipped, not the whole set: failing the refresh over it would refuse
    every token, those signed by the good keys too. Each skipped entry is warned about at
    the first refresh that meets it (those in ``warned`` were, at the one before), not at
    every one after.
    """
    keys = jwk.JWKSet()
    kids: set[str] = set()
    skipped: set[str] = set()
    for entry in entries:
        # Keycloak publishes its encryption key in the same set: expected, and it never
        # verifies a token, so it is left out without a warning.
        if isinstance(entry, dict) and not is_for_signing(entry):
            continue
        try:
            kid, key = verifying_key(entry)
        except UnusableKey as unusable:
            skipped.add(str(unusable))
            continue
        keys.add(key)
        kids.add(kid)
    for name in sorted(skipped - warned):
        logger.warning("JWKS entry skipped, it cannot verify tokens: %s", name)
    return keys, frozenset(kids), frozenset(skipped)
