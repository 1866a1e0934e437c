"""The development identity provider's keys: RS256 keys that sign access and ID tokens (the
newest signs, all are published, as Keycloak does), and the realm's HMAC key for refresh tokens."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from jwcrypto import jwk, jwt

from flyswatter.dev.claims import b64url


def new_signing_key() -> jwk.JWK:
    return jwk.JWK.generate(
        kty="RSA", size=2048, kid=b64url(os.urandom(16)), use="sig", alg="RS256"
    )


class RealmKeys:
    """Made at start-up and held in memory only: a restart signs everybody out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signing: list[jwk.JWK] = [new_signing_key()]
        # Keycloak signs refresh tokens with a realm HMAC key that never leaves the server.
        self._refresh = jwk.JWK.generate(kty="oct", size=512, kid=b64url(os.urandom(16)))

    @property
    def signing_key(self) -> jwk.JWK:
        with self._lock:
            return self._signing[0]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = list(self._signing)
        return {"keys": [json.loads(key.export_public()) for key in keys]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        key = self.signing_key
        token = jwt.JWT(
            header={"alg": "RS256", "typ": "JWT", "kid": key["kid"]}, claims=dict(claims)
        )
        token.make_signed_token(key)
        return str(token.serialize())

    def sign_refresh(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "HS512", "typ": "JWT", "kid": self._refresh["kid"]}
        token = jwt.JWT(header=header, claims=dict(claims))
        token.make_signed_token(self._refresh)
        return str(token.serialize())

    def read_refresh(self, token: str, issuer: str) -> dict[str, Any]:
        """A refresh token's claims; raises jwcrypto's errors (or ValueError) when it is not
        one this realm signed, for this issuer, still valid."""
        parsed = jwt.JWT(
            jwt=token,
            key=self._refresh,
            algs=["HS512"],
            check_claims={"exp": None, "typ": "Refresh", "iss": issuer},
        )
        claims = json.loads(parsed.claims)
        if not isinstance(claims, dict):
            raise ValueError("refresh token claims are not an object")
        return claims
