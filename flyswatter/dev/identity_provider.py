"""A Keycloak-compatible development identity provider, for ``flyswatter dev`` and the tests.

It reads the same realm file Keycloak imports (``keycloak/flyswatter-realm.json``), serves
Keycloak's realm paths (discovery, certs, a login page for the authorization-code flow with
PKCE, the token endpoint with the ``authorization_code``, ``client_credentials``, ``password``
and ``refresh_token`` grants) and issues tokens shaped as Keycloak's (``tests/test_keycloak.py``
compares their claims with a real Keycloak's), so the service talks to it exactly as it talks
to Keycloak. It trusts the demo passwords and secrets in that file: it binds to loopback
only and ``flyswatter serve`` never imports it.

The authorization-code grant is written here rather than on authlib's
``AuthorizationServer``: authlib has no Starlette server integration (it would need a request
adapter, client and code models and a token generator wrapping the Keycloak-shaped tokens
below), and it would own the token endpoint for one grant while the three others stay here.
What the grant needs is small and checked by tests: an exact ``redirect_uri`` match, S256
PKCE, and single-use codes bound to client, redirect URI and verifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from jwcrypto import jwk, jwt
from jwcrypto.common import JWException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from flyswatter.dev.claims import Grant, Session, access_claims, b64url, id_claims
from flyswatter.dev.realm import DevRealm, Identity

_MAX_FORM_BYTES = 64 * 1024
# RFC 7636 4.1 and 4.2: a verifier of 43 to 128 unreserved characters; an S256 challenge is
# the 43-character base64url of a SHA-256 digest.
_CODE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")
# Keycloak's defaults: a code lives a minute (accessCodeLifespan); the login page half an hour.
CODE_LIFESPAN_SECONDS = 60
LOGIN_LIFESPAN_SECONDS = 1800
# Sign-ins started and not finished; past this many the oldest is dropped, so a page reloaded
# in a loop cannot grow the provider's memory without bound.
MAX_PENDING_LOGINS = 1000


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
        # In memory, as the provider's keys are: a restart signs everybody out.
        self._sessions: dict[str, Session] = {}
        self._logins: dict[str, AuthorizationRequest] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self.app = self._build_app()

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm.name}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/auth"

    @property
    def signing_key(self) -> jwk.JWK:
        return self._keys[0]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = list(self._keys)
        return {"keys": [json.loads(key.export_public()) for key in keys]}

    def discovery(self) -> dict[str, Any]:
        endpoints = f"{self.issuer}/protocol/openid-connect"
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": f"{endpoints}/token",
            "jwks_uri": f"{endpoints}/certs",
            "grant_types_supported": [
                "authorization_code",
                "client_credentials",
                "password",
                "refresh_token",
            ],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
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

    # -- the authorization endpoint and its login page ------------------------------------

    def authorize(self, query: Mapping[str, str]) -> AuthorizationRequest:
        """Check an ``/auth`` request; raises OAuthError (``redirect`` once the URI is known).

        Until the client and its ``redirect_uri`` are known to match the realm file exactly,
        an error is shown on the page and never sent anywhere (no open redirect).
        """
        client = self.realm.clients.get(query.get("client_id", ""))
        if client is None or not client.get("enabled", True) or client.get("bearerOnly"):
            raise OAuthError(400, "invalid_request", "Client not found.")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in client.get("redirectUris", []):
            raise OAuthError(400, "invalid_request", "Invalid parameter: redirect_uri")
        state = query.get("state")
        redirect = AuthorizationRedirect(redirect_uri, state)
        if not client.get("standardFlowEnabled"):
            raise redirect.error(
                "unauthorized_client", "Client is not allowed to initiate browser login"
            )
        if query.get("response_type") != "code":
            raise redirect.error(
                "unsupported_response_type", "Only response_type=code is supported"
            )
        if query.get("code_challenge_method") != "S256":
            raise redirect.error(
                "invalid_request",
                "Missing or unsupported parameter: code_challenge_method (S256 only)",
            )
        challenge = query.get("code_challenge", "")
        if not _S256_CHALLENGE.fullmatch(challenge):
            raise redirect.error("invalid_request", "Invalid parameter: code_challenge")
        try:
            scopes = self._granted_scopes(client, query.get("scope", ""))
        except OAuthError as error:
            raise redirect.error(error.error, error.description) from None
        return AuthorizationRequest(
            client_id=str(client["clientId"]),
            redirect_uri=redirect_uri,
            state=state,
            scopes=scopes,
            openid=_asks_openid(query),
            code_challenge=challenge,
            nonce=query.get("nonce"),
            expires_at=time.monotonic() + LOGIN_LIFESPAN_SECONDS,
        )

    def start_login(self, request: AuthorizationRequest) -> str:
        """Remember a checked request until its user signs in; the login form's session code."""
        session_code = secrets.token_urlsafe(32)
        with self._lock:
            self._forget_expired()
            self._logins[session_code] = request
            while len(self._logins) > MAX_PENDING_LOGINS:
                del self._logins[next(iter(self._logins))]
        return session_code

    def login(self, session_code: str, username: str, password: str) -> str:
        """Sign a user in for a pending request; the redirect URI carrying the code.

        A wrong password keeps the request pending (the page asks again); an unknown or
        expired session code is refused outright.
        """
        with self._lock:
            self._forget_expired()
            request = self._logins.get(session_code)
        if request is None:
            raise OAuthError(400, "invalid_request", "The sign-in expired: start again")
        identity = self._check_password(username, password)
        with self._lock:
            if self._logins.pop(session_code, None) is None:
                raise OAuthError(400, "invalid_request", "The sign-in expired: start again")
            session = Session(id=_session_id(), user_id=identity.id, auth_time=int(time.time()))
            self._sessions[session.id] = session
            code = secrets.token_urlsafe(32)
            self._codes[code] = AuthorizationCode(
                request=request,
                session=session,
                expires_at=time.monotonic() + CODE_LIFESPAN_SECONDS,
            )
        answer = {"code": code, "session_state": session.id, "iss": self.issuer}
        if request.state is not None:
            answer = {"state": request.state, **answer}
        return f"{request.redirect_uri}?{urlencode(answer)}"

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for store in (self._logins, self._codes):
            for key in [key for key, item in store.items() if item.expires_at <= now]:
                del store[key]

    def _redeem_code(self, client: Mapping[str, Any], form: Mapping[str, str]) -> AuthorizationCode:
        with self._lock:
            # Single use: the code is gone whatever the outcome of this request.
            code = self._codes.pop(form.get("code", ""), None)
        invalid = OAuthError(400, "invalid_grant", "Code not valid")
        if code is None or code.expires_at <= time.monotonic():
            raise invalid
        request = code.request
        if request.client_id != client["clientId"]:
            raise OAuthError(400, "invalid_grant", "Auth error")
        if form.get("redirect_uri") != request.redirect_uri:
            raise OAuthError(400, "invalid_grant", "Incorrect redirect_uri")
        verifier = form.get("code_verifier", "")
        if not _CODE_VERIFIER.fullmatch(verifier):
            raise OAuthError(400, "invalid_grant", "PKCE code verifier not specified")
        if not hmac.compare_digest(_s256(verifier), request.code_challenge):
            raise OAuthError(400, "invalid_grant", "PKCE verification failed")
        return code

    # -- the token endpoint ------------------------------------------------------------------

    def issue(
        self, form: Mapping[str, str], authorization: str | None, client_host: str = "127.0.0.1"
    ) -> dict[str, Any]:
        """Answer one token request (the form of ``/protocol/openid-connect/token``)."""
        client = self._authenticate_client(form, authorization)
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            if not client.get("standardFlowEnabled"):
                raise OAuthError(
                    400, "unauthorized_client", "Client not allowed for authorization code grant"
                )
            code = self._redeem_code(client, form)
            user = self.realm.user_by_id(code.session.user_id)
            if user is None or not user.get("enabled", True):
                raise OAuthError(400, "invalid_grant", "User disabled")
            grant = Grant(
                self.realm.identity(user),
                code.request.scopes,
                code.request.openid,
                code.session,
                nonce=code.request.nonce,
            )
            return self._token_response(client, grant, refresh=True)
        if grant_type == "client_credentials":
            if client.get("publicClient") or not client.get("serviceAccountsEnabled"):
                raise OAuthError(
                    401, "unauthorized_client", "Client not enabled to retrieve service account"
                )
            identity = self.realm.service_account(client["clientId"])
            scopes = self._granted_scopes(client, form.get("scope", ""))
            grant = Grant(identity, scopes, _asks_openid(form), client_host=client_host)
            return self._token_response(client, grant, refresh=False)
        if grant_type == "password":
            if not client.get("directAccessGrantsEnabled"):
                raise OAuthError(
                    400, "unauthorized_client", "Client not allowed for direct access grants"
                )
            identity = self._check_password(form.get("username", ""), form.get("password", ""))
            scopes = self._granted_scopes(client, form.get("scope", ""))
            session = Session(id=_session_id(), user_id=identity.id)
            with self._lock:
                self._sessions[session.id] = session
            grant = Grant(identity, scopes, _asks_openid(form), session)
            return self._token_response(client, grant, refresh=True)
        if grant_type == "refresh_token":
            grant = self._check_refresh_token(client, form.get("refresh_token", ""))
            return self._token_response(client, grant, refresh=True)
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

    def _check_refresh_token(self, client: Mapping[str, Any], token: str) -> Grant:
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
        with self._lock:
            session = self._sessions.get(str(claims.get("sid", "")))
        if session is None or session.user_id != claims.get("sub"):
            raise OAuthError(400, "invalid_grant", "Session not active")
        user = self.realm.user_by_id(session.user_id)
        if user is None or not user.get("enabled", True):
            raise OAuthError(400, "invalid_grant", "User not found or disabled")
        # As Keycloak's, the refresh token's ``scope`` names every client scope granted.
        granted = str(claims.get("scope", "")).split()
        scopes = [name for name in granted if name in self.realm.client_scopes]
        return Grant(self.realm.identity(user), scopes, "openid" in granted, session)

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
        self, client: Mapping[str, Any], grant: Grant, *, refresh: bool
    ) -> dict[str, Any]:
        now = int(time.time())
        client_id = str(client["clientId"])
        access = access_claims(self.realm, self.issuer, client, grant, now)
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
        if grant.openid:
            body["id_token"] = self._sign(id_claims(client_id, grant, access, access_token))
        if refresh and grant.session is not None:
            body["refresh_token"] = self._sign_refresh(
                {
                    "exp": now + self.realm.session_idle_timeout,
                    "iat": now,
                    "jti": str(uuid.uuid4()),
                    "iss": self.issuer,
                    "aud": self.issuer,
                    "sub": grant.identity.id,
                    "typ": "Refresh",
                    "azp": client_id,
                    "sid": grant.session.id,
                    "scope": " ".join(["openid"] * grant.openid + grant.scopes),
                }
            )
            body["refresh_expires_in"] = self.realm.session_idle_timeout
            body["session_state"] = grant.session.id
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
        login_action = f"{realm_path}/login-actions/authenticate"

        async def discovery(request: Request) -> Response:
            return self._cors(request, JSONResponse(self.discovery()))

        async def certs(request: Request) -> Response:
            return self._cors(request, JSONResponse(self.jwks()))

        async def auth(request: Request) -> Response:
            try:
                pending = self.authorize(request.query_params)
            except AuthorizationRedirect.Error as refused:
                return RedirectResponse(refused.location, status_code=302)
            except OAuthError as error:
                return _page(_error_page(error.description), status=error.status)
            action = f"{login_action}?{urlencode({'session_code': self.start_login(pending)})}"
            return _page(_login_page(self.realm, action, error=None))

        async def authenticate(request: Request) -> Response:
            session_code = request.query_params.get("session_code", "")
            try:
                form = await _read_form(request)
                location = self.login(
                    session_code, form.get("username", ""), form.get("password", "")
                )
            except OAuthError as error:
                if error.error != "invalid_grant":
                    return _page(_error_page(error.description), status=error.status)
                action = f"{login_action}?{urlencode({'session_code': session_code})}"
                page = _login_page(self.realm, action, error="Invalid username or password.")
                return _page(page, status=200)
            return RedirectResponse(location, status_code=302)

        async def token(request: Request) -> Response:
            if request.method == "OPTIONS":
                preflight = Response(status_code=200)
                preflight.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
                preflight.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                return self._cors(request, preflight)
            headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            client_host = request.client.host if request.client else "127.0.0.1"
            try:
                form = await _read_form(request)
                body = self.issue(form, request.headers.get("authorization"), client_host)
            except OAuthError as error:
                payload = {"error": error.error, "error_description": error.description}
                response = JSONResponse(payload, status_code=error.status, headers=headers)
                return self._cors(request, response)
            return self._cors(request, JSONResponse(body, headers=headers))

        return Starlette(
            routes=[
                Route(f"{realm_path}/.well-known/openid-configuration", discovery),
                Route(f"{realm_path}/protocol/openid-connect/certs", certs),
                Route(f"{realm_path}/protocol/openid-connect/auth", auth),
                Route(login_action, authenticate, methods=["POST"]),
                Route(
                    f"{realm_path}/protocol/openid-connect/token",
                    token,
                    methods=["POST", "OPTIONS"],
                ),
            ]
        )


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


def _session_id() -> str:
    return secrets.token_urlsafe(18)


def _s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


# The login page: plain HTML, no script, nothing loaded from anywhere. Its field ids are
# Keycloak's (username, password, kc-login), so one browser test signs in on either.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_STYLE = (
    "body{font-family:sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}"
    "label,input,button{display:block;width:100%;margin:.3rem 0}"
    "input,button{padding:.5rem;box-sizing:border-box}.error{color:#b00}"
)


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=_PAGE_HEADERS)


def _html(title: str, content: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{content}</body></html>"
    )


def _login_page(realm: DevRealm, action: str, error: str | None) -> str:
    users = ", ".join(
        html.escape(name) for name in realm.users if not name.startswith("service-account-")
    )
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return _html(
        f"Sign in to {realm.name}",
        f"<h1>Sign in to {html.escape(realm.name)}</h1>"
        "<p>Development identity provider: the realm file's demo users "
        f"({users}) with their password from keycloak/flyswatter-realm.json.</p>"
        f"{message}"
        f'<form method="post" action="{html.escape(action)}">'
        '<label for="username">Username</label>'
        '<input id="username" name="username" autocomplete="username" autofocus required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password"'
        ' autocomplete="current-password" required>'
        '<button id="kc-login" type="submit">Sign in</button></form>',
    )


def _error_page(description: str) -> str:
    return _html(
        "Sign-in error",
        f'<h1>We are sorry...</h1><p class="error" role="alert">{html.escape(description)}</p>',
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
