"""A Keycloak-compatible development identity provider, for ``flyswatter dev`` and the tests.

It reads the same realm file Keycloak imports (``keycloak/flyswatter-realm.json``), serves
Keycloak's realm paths (discovery, certs, the token endpoint with the ``client_credentials``,
``password`` and ``refresh_token`` grants) and issues tokens shaped as Keycloak's, so the
service talks to it exactly as it talks to Keycloak. It trusts the demo passwords and secrets
in that file: it binds to loopback only and ``flyswatter serve`` never imports it.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from jwcrypto import jwk, jwt
from jwcrypto.common import JWException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flyswatter.dev.claims import access_claims, b64url, id_claims
from flyswatter.dev.realm import DevRealm, Identity

_MAX_FORM_BYTES = 64 * 1024


class OAuthError(Exception):
    """An error of the token endpoint, answered as Keycloak answers it."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _new_signing_key() -> jwk.JWK:
    return jwk.JWK.generate(
        kty="RSA", size=2048, kid=b64url(os.urandom(16)), use="sig", alg="RS256"
    )


class DevIdentityProvider:
    """Keycloak's token service for one realm, in memory, with keys made at start-up."""

    def __init__(self, realm: Mapping[str, Any], base_url: str) -> None:
        self.realm = DevRealm.from_representation(realm)
        self.base_url = base_url.rstrip("/")
        self._keys: list[jwk.JWK] = [_new_signing_key()]
        # Keycloak signs refresh tokens with a realm HMAC key that never leaves the server.
        self._refresh_key = jwk.JWK.generate(kty="oct", size=512, kid=b64url(os.urandom(16)))
        self._lock = threading.Lock()
        self.app = self._build_app()

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm.name}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def signing_key(self) -> jwk.JWK:
        return self._keys[0]

    def rotate_key(self) -> jwk.JWK:
        """A new key signs from now on; the old ones stay published, as Keycloak keeps them."""
        key = _new_signing_key()
        with self._lock:
            self._keys.insert(0, key)
        return key

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = list(self._keys)
        return {"keys": [json.loads(key.export_public()) for key in keys]}

    def discovery(self) -> dict[str, Any]:
        endpoints = f"{self.issuer}/protocol/openid-connect"
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{endpoints}/token",
            "jwks_uri": f"{endpoints}/certs",
            # No browser login here: the development provider serves the direct grants only.
            "grant_types_supported": ["client_credentials", "password", "refresh_token"],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", *self.realm.client_scopes],
            "claims_supported": [
                "aud",
                "sub",
                "iss",
                "auth_time",
                "name",
                "given_name",
                "family_name",
                "preferred_username",
                "email",
                "email_verified",
                "acr",
                "azp",
                "scope",
            ],
        }

    # -- the token endpoint ------------------------------------------------------------------

    def issue(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """Answer one token request (the form of ``/protocol/openid-connect/token``)."""
        client = self._authenticate_client(form, authorization)
        grant_type = form.get("grant_type", "")
        if grant_type == "client_credentials":
            if client.get("publicClient") or not client.get("serviceAccountsEnabled"):
                raise OAuthError(
                    401, "unauthorized_client", "Client not enabled to retrieve service account"
                )
            identity = self.realm.service_account(client["clientId"])
            scopes = self._granted_scopes(client, form.get("scope", ""))
            return self._token_response(client, identity, scopes, _asks_openid(form), refresh=False)
        if grant_type == "password":
            if not client.get("directAccessGrantsEnabled"):
                raise OAuthError(
                    400, "unauthorized_client", "Client not allowed for direct access grants"
                )
            identity = self._check_password(form.get("username", ""), form.get("password", ""))
            scopes = self._granted_scopes(client, form.get("scope", ""))
            return self._token_response(client, identity, scopes, _asks_openid(form), refresh=True)
        if grant_type == "refresh_token":
            identity, scopes, openid = self._check_refresh_token(
                client, form.get("refresh_token", "")
            )
            return self._token_response(client, identity, scopes, openid, refresh=True)
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        raise OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")

    def _authenticate_client(
        self, form: Mapping[str, str], authorization: str | None
    ) -> dict[str, Any]:
        client_id, secret = form.get("client_id") or None, form.get("client_secret") or None
        if authorization and authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(400, "invalid_request", "Invalid Authorization header") from None
            basic_id, _, basic_secret = decoded.partition(":")
            # RFC 6749 2.3.1: both parts are form-urlencoded before they are joined.
            client_id, secret = unquote(basic_id), unquote(basic_secret)
        if not client_id:
            raise OAuthError(401, "invalid_client", "Missing parameter: client_id")
        client = self.realm.clients.get(client_id)
        if client is None or not client.get("enabled", True) or client.get("bearerOnly"):
            raise OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")
        if not client.get("publicClient"):
            expected = str(client.get("secret") or "")
            if not secret or not expected or not hmac.compare_digest(secret, expected):
                raise OAuthError(
                    401, "unauthorized_client", "Invalid client or Invalid client credentials"
                )
        return client

    def _check_password(self, username: str, password: str) -> Identity:
        user = self.realm.users.get(username.lower())
        stored = [
            str(credential.get("value", ""))
            for credential in (user or {}).get("credentials", [])
            if credential.get("type") == "password"
        ]
        matches = any(hmac.compare_digest(password, value) for value in stored if value)
        if user is None or not user.get("enabled", True) or not password or not matches:
            raise OAuthError(401, "invalid_grant", "Invalid user credentials")
        return self.realm.identity(user)

    def _check_refresh_token(
        self, client: Mapping[str, Any], token: str
    ) -> tuple[Identity, list[str], bool]:
        invalid = OAuthError(400, "invalid_grant", "Invalid refresh token")
        try:
            parsed = jwt.JWT(
                jwt=token,
                key=self._refresh_key,
                algs=["HS512"],
                check_claims={"exp": None, "typ": "Refresh", "iss": self.issuer},
            )
            claims = json.loads(parsed.claims)
        except (JWException, ValueError, TypeError):
            raise invalid from None
        if claims.get("azp") != client["clientId"]:
            raise OAuthError(400, "invalid_grant", "Token client and authorized client don't match")
        user = self.realm.user_by_id(str(claims.get("sub", "")))
        if user is None or not user.get("enabled", True):
            raise OAuthError(400, "invalid_grant", "User not found or disabled")
        granted = claims.get("flyswatter_client_scopes", [])
        scopes = [name for name in granted if name in self.realm.client_scopes]
        openid = "openid" in str(claims.get("scope", "")).split()
        return self.realm.identity(user), scopes, openid

    def _granted_scopes(self, client: Mapping[str, Any], requested: str) -> list[str]:
        """The client's default scopes plus the optional ones the request asks for."""
        default = list(client.get("defaultClientScopes", []))
        optional = list(client.get("optionalClientScopes", []))
        asked = [name for name in requested.split() if name != "openid"]
        unknown = [name for name in asked if name not in default and name not in optional]
        if unknown:
            raise OAuthError(400, "invalid_scope", "Invalid scopes: " + " ".join(requested.split()))
        granted = default + [name for name in optional if name in asked]
        return [name for name in dict.fromkeys(granted) if name in self.realm.client_scopes]

    def _token_response(
        self,
        client: Mapping[str, Any],
        identity: Identity,
        scopes: list[str],
        openid: bool,
        *,
        refresh: bool,
    ) -> dict[str, Any]:
        now = int(time.time())
        session_id = str(uuid.uuid4())
        client_id = str(client["clientId"])
        access = access_claims(
            self.realm, self.issuer, client, identity, scopes, openid, now, session_id
        )
        scope_claim = access["scope"]
        access_token = self._sign(access)
        body: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": self.realm.access_token_lifespan,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": scope_claim,
        }
        if openid:
            body["id_token"] = self._sign(
                id_claims(client_id, identity, access, access_token, now, session_id)
            )
        if refresh and identity.service_account_client_id is None:
            body["refresh_token"] = self._sign_refresh(
                {
                    "exp": now + self.realm.session_idle_timeout,
                    "iat": now,
                    "jti": str(uuid.uuid4()),
                    "iss": self.issuer,
                    "aud": self.issuer,
                    "sub": identity.id,
                    "typ": "Refresh",
                    "azp": client_id,
                    "sid": session_id,
                    "scope": scope_claim,
                    "preferred_username": identity.username,
                    # What to grant again on refresh; Keycloak keeps this in its session store.
                    "flyswatter_client_scopes": scopes,
                }
            )
            body["refresh_expires_in"] = self.realm.session_idle_timeout
            body["session_state"] = session_id
        return body

    def _sign(self, claims: Mapping[str, Any]) -> str:
        key = self.signing_key
        token = jwt.JWT(
            header={"alg": "RS256", "typ": "JWT", "kid": key["kid"]}, claims=dict(claims)
        )
        token.make_signed_token(key)
        return str(token.serialize())

    def _sign_refresh(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "HS512", "typ": "JWT", "kid": self._refresh_key["kid"]}
        token = jwt.JWT(header=header, claims=dict(claims))
        token.make_signed_token(self._refresh_key)
        return str(token.serialize())

    # -- HTTP ------------------------------------------------------------------------------

    def _allowed_origins(self) -> set[str]:
        return {
            origin
            for client in self.realm.clients.values()
            for origin in client.get("webOrigins", [])
            if origin not in ("+", "*")
        }

    def _cors(self, request: Request, response: Response) -> Response:
        origin = request.headers.get("origin")
        if origin and origin in self._allowed_origins():
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    def _build_app(self) -> Starlette:
        realm_path = f"/realms/{self.realm.name}"

        async def discovery(request: Request) -> Response:
            return self._cors(request, JSONResponse(self.discovery()))

        async def certs(request: Request) -> Response:
            return self._cors(request, JSONResponse(self.jwks()))

        async def token(request: Request) -> Response:
            if request.method == "OPTIONS":
                preflight = Response(status_code=200)
                preflight.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
                preflight.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                return self._cors(request, preflight)
            headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            try:
                form = await _read_form(request)
                body = self.issue(form, request.headers.get("authorization"))
            except OAuthError as error:
                payload = {"error": error.error, "error_description": error.description}
                response = JSONResponse(payload, status_code=error.status, headers=headers)
                return self._cors(request, response)
            return self._cors(request, JSONResponse(body, headers=headers))

        return Starlette(
            routes=[
                Route(f"{realm_path}/.well-known/openid-configuration", discovery),
                Route(f"{realm_path}/protocol/openid-connect/certs", certs),
                Route(
                    f"{realm_path}/protocol/openid-connect/token",
                    token,
                    methods=["POST", "OPTIONS"],
                ),
            ]
        )


def _asks_openid(form: Mapping[str, str]) -> bool:
    return "openid" in form.get("scope", "").split()


async def _read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError(
            400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
        )
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_FORM_BYTES:
            raise OAuthError(400, "invalid_request", "Request too large")
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError(400, "invalid_request", "Invalid form encoding") from None
    return dict(pairs)
