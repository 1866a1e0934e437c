"""Test identities: an RSA key served as a real JWKS over loopback HTTP, and signed tokens.

The JWKS server answers at Keycloak's paths, so the service reaches it exactly as it reaches
Keycloak (python-keycloak's client, over a real socket).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jwcrypto import jwk, jwt

REALM = "flyswatter"
AUDIENCE = "flyswatter-api"
ALL_SCOPES = ("projects:read", "projects:write", "issues:read", "issues:write")
_SUBJECTS = uuid.UUID("6f1d3c5e-9f59-4c0e-a3a5-2b9a3c1e7f10")


def subject_of(username: str) -> str:
    """Stable Keycloak-like ``sub`` for a test username."""
    return str(uuid.uuid5(_SUBJECTS, username))


def new_signing_key(kid: str | None = None) -> jwk.JWK:
    kid = kid or uuid.uuid4().hex
    return jwk.JWK.generate(kty="RSA", size=2048, kid=kid, use="sig", alg="RS256")


class JwksServer:
    """Keycloak's discovery and certs endpoints for one realm, on 127.0.0.1."""

    def __init__(self, realm: str = REALM) -> None:
        self.realm = realm
        self.keys: list[jwk.JWK] = [new_signing_key("test-key-1")]
        self.certs_requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def signing_key(self) -> jwk.JWK:
        return self.keys[0]

    def rotate(self) -> jwk.JWK:
        """A new key signs from now on; the old one is still published, as Keycloak does."""
        key = new_signing_key()
        self.keys.insert(0, key)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [json.loads(key.export_public()) for key in self.keys]}

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                realm_path = f"/realms/{owner.realm}"
                if self.path == f"{realm_path}/protocol/openid-connect/certs":
                    owner.certs_requests += 1
                    body: dict[str, Any] = owner.jwks()
                elif self.path == f"{realm_path}/.well-known/openid-configuration":
                    body = {
                        "issuer": owner.issuer,
                        "jwks_uri": f"{owner.issuer}/protocol/openid-connect/certs",
                        "token_endpoint": f"{owner.issuer}/protocol/openid-connect/token",
                    }
                else:
                    self.send_error(404)
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take the provider down (an outage); ``start()`` brings it back on the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class TokenFactory:
    def __init__(self, server: JwksServer) -> None:
        self.server = server

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + 300,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "iss": self.server.issuer,
            "aud": [AUDIENCE, "account"],
            "typ": "Bearer",
            "azp": "flyswatter-web",
            "scope": " ".join(ALL_SCOPES),
        }
        claims.update(overrides)
        return {key: value for key, value in claims.items() if value is not None}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        key: jwk.JWK | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        key = key or self.server.signing_key
        token = jwt.JWT(
            header={"alg": "RS256", "typ": "JWT", "kid": key.key_id, **(header or {})},
            claims=claims,
        )
        token.make_signed_token(key)
        return str(token.serialize())

    def user_token(
        self,
        username: str,
        *,
        scopes: list[str] | tuple[str, ...] | None = None,
        roles: list[str] | None = None,
        **overrides: Any,
    ) -> str:
        # A user's claims, any of which the overrides replace (a name, an email address).
        defaults: dict[str, Any] = {
            "sub": subject_of(username),
            "preferred_username": username,
            "email": f"{username}@example.org",
            "name": username.title(),
            "scope": " ".join(ALL_SCOPES if scopes is None else scopes),
            "realm_access": {"roles": ["default-roles-flyswatter", *(roles or [])]},
        }
        claims = self.claims(**(defaults | overrides))
        return self.sign(claims)

    def service_token(
        self, client_id: str, *, scopes: list[str] | tuple[str, ...] | None = None
    ) -> str:
        username = f"service-account-{client_id}"
        claims = self.claims(
            sub=subject_of(username),
            preferred_username=username,
            azp=client_id,
            client_id=client_id,
            scope=" ".join(ALL_SCOPES if scopes is None else scopes),
            realm_access={"roles": ["default-roles-flyswatter"]},
        )
        return self.sign(claims)
