"""A Keycloak-compatible development identity provider, for ``flyswatter dev`` and the tests.

It reads the same realm file Keycloak imports (``keycloak/flyswatter-realm.json``), serves
Keycloak's realm paths (discovery, certs, a login page for the authorization-code flow with
PKCE, the token endpoint with the ``authorization_code``, ``client_credentials``, ``password``
and ``refresh_token`` grants) and issues tokens shaped as Keycloak's (``tests/test_keycloak.py``
compares their claims with a real Keycloak's), so the service talks to it exactly as it talks
to Keycloak. It trusts the demo passwords and secrets in that file: it binds to loopback
only and ``flyswatter serve`` never imports it.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlencode

from jwcrypto import jwk
from jwcrypto.common import JWException

from flyswatter.dev.claims import Grant, Session, access_claims, id_claims
from flyswatter.dev.endpoints import build_app
from flyswatter.dev.keys import RealmKeys
from flyswatter.dev.oauth import (
    CODE_VERIFIER,
    S256_CHALLENGE,
    AuthorizationCode,
    AuthorizationRedirect,
    AuthorizationRequest,
    OAuthError,
    asks_openid,
    s256,
    session_id,
)
from flyswatter.dev.realm import DevRealm, Identity

# Keycloak's defaults: a code lives a minute (accessCodeLifespan); the login page half an hour.
CODE_LIFESPAN_SECONDS = 60
LOGIN_LIFESPAN_SECONDS = 1800
# Sign-ins started and not finished; past this many the oldest is dropped, so a page reloaded
# in a loop cannot grow the provider's memory without bound.
MAX_PENDING_LOGINS = 1000


class DevIdentityProvider:
    """Keycloak's token service for one realm, in memory, with keys made at start-up."""

    def __init__(self, realm: Mapping[str, Any], base_url: str) -> None:
        self.realm = DevRealm.from_representation(realm)
        self.base_url = base_url.rstrip("/")
        self.keys = RealmKeys()
        self._lock = threading.Lock()
        # In memory, as the provider's keys are: a restart signs everybody out.
        self._sessions: dict[str, Session] = {}
        self._logins: dict[str, AuthorizationRequest] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self.app = build_app(self)

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
        return self.keys.signing_key

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()

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
        if not S256_CHALLENGE.fullmatch(challenge):
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
            openid=asks_openid(query),
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
            session = Session(id=session_id(), user_id=identity.id, auth_time=int(time.time()))
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
        if not CODE_VERIFIER.fullmatch(verifier):
            raise OAuthError(400, "invalid_grant", "PKCE code verifier not specified")
        if not hmac.compare_digest(s256(verifier), request.code_challenge):
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
            grant = Grant(identity, scopes, asks_openid(form), client_host=client_host)
            return self._token_response(client, grant, refresh=False)
        if grant_type == "password":
            if not client.get("directAccessGrantsEnabled"):
                raise OAuthError(
                    400, "unauthorized_client", "Client not allowed for direct access grants"
                )
            identity = self._check_password(form.get("username", ""), form.get("password", ""))
            scopes = self._granted_scopes(client, form.get("scope", ""))
            session = Session(id=session_id(), user_id=identity.id)
            with self._lock:
                self._sessions[session.id] = session
            grant = Grant(identity, scopes, asks_openid(form), session)
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
            claims = self.keys.read_refresh(token, self.issuer)
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
        access_token = self.keys.sign(access)
        body: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": self.realm.access_token_lifespan,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": scope_claim,
        }
        if grant.openid:
            body["id_token"] = self.keys.sign(id_claims(client_id, grant, access, access_token))
        if refresh and grant.session is not None:
            body["refresh_token"] = self.keys.sign_refresh(
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
