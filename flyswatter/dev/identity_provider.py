"""A Keycloak-compatible development identity provider, for ``flyswatter dev`` and the tests.

It reads the same realm file Keycloak imports (``keycloak/flyswatter-realm.json``), serves
Keycloak's realm paths (discovery, certs, the token endpoint with the ``client_credentials``,
``password`` and ``refresh_token`` grants) and issues tokens shaped as Keycloak's, so the
service talks to it exactly as it talks to Keycloak. It trusts the demo passwords and secrets
in that file: it binds to loopback only and ``flyswatter serve`` never imports it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from jwcrypto import jwk, jwt
from jwcrypto.common import JWException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from flyswatter.config import is_loopback_host

REALM_FILE = Path(__file__).resolve().parent.parent.parent / "keycloak" / "flyswatter-realm.json"

_PLACEHOLDER = re.compile(r"\$\{([^{}]+)\}")
_MAX_FORM_BYTES = 64 * 1024


def resolve_placeholders(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``${NAME}`` and ``${NAME:default}`` from the environment, as Keycloak's import does.

    A placeholder with neither a value nor a default stays as written (Keycloak leaves its
    own message keys such as ``${profileScopeConsentText}`` alone the same way).
    """
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        key, has_default, default = match.group(1).partition(":")
        for name in (key, key.removeprefix("env.")):
            if name in env:
                return env[name]
        return default if has_default else match.group(0)

    return _PLACEHOLDER.sub(replace, text)


def load_realm(path: Path = REALM_FILE, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    realm = json.loads(resolve_placeholders(path.read_text(encoding="utf-8"), environ))
    if not isinstance(realm, dict) or not realm.get("realm"):
        raise ValueError(f"{path} is not a Keycloak realm representation")
    return realm


class OAuthError(Exception):
    """An error of the token endpoint, answered as Keycloak answers it."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom a token is about: a realm user or a client's service account."""

    id: str
    username: str
    realm_roles: tuple[str, ...]
    email: str | None = None
    email_verified: bool = False
    first_name: str | None = None
    last_name: str | None = None
    service_account_client_id: str | None = None


@dataclass(slots=True)
class DevRealm:
    """The parts of a realm representation the token endpoint needs."""

    name: str
    clients: dict[str, dict[str, Any]]
    client_scopes: dict[str, dict[str, Any]]
    users: dict[str, dict[str, Any]]
    access_token_lifespan: int
    session_idle_timeout: int
    default_role: str

    @classmethod
    def from_representation(cls, realm: Mapping[str, Any]) -> DevRealm:
        name = str(realm["realm"])
        default_role = realm.get("defaultRole", {}).get("name") or f"default-roles-{name}"
        return cls(
            name=name,
            clients={c["clientId"]: c for c in realm.get("clients", [])},
            client_scopes={s["name"]: s for s in realm.get("clientScopes", [])},
            users={u["username"]: u for u in realm.get("users", [])},
            access_token_lifespan=int(realm.get("accessTokenLifespan", 300)),
            session_idle_timeout=int(realm.get("ssoSessionIdleTimeout", 1800)),
            default_role=default_role,
        )

    def identity(self, user: Mapping[str, Any]) -> Identity:
        roles = [self.default_role, *user.get("realmRoles", [])]
        return Identity(
            id=str(user["id"]),
            username=str(user["username"]),
            realm_roles=tuple(dict.fromkeys(roles)),
            email=user.get("email"),
            email_verified=bool(user.get("emailVerified", False)),
            first_name=user.get("firstName"),
            last_name=user.get("lastName"),
            service_account_client_id=user.get("serviceAccountClientId"),
        )

    def service_account(self, client_id: str) -> Identity:
        for user in self.users.values():
            if user.get("serviceAccountClientId") == client_id:
                return self.identity(user)
        # Keycloak creates the service account user itself when the file does not list it;
        # a name-derived id keeps ``sub`` stable across restarts of the development provider.
        return Identity(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}/service-account/{client_id}")),
            username=f"service-account-{client_id}",
            realm_roles=(self.default_role,),
            service_account_client_id=client_id,
        )

    def user_by_id(self, user_id: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if str(u.get("id")) == user_id), None)

    def demo_users(self) -> Iterator[Identity]:
        """Every user of the file, service accounts included."""
        for user in self.users.values():
            yield self.identity(user)


def _mapper_flag(mapper: Mapping[str, Any], name: str) -> bool:
    return str(mapper.get("config", {}).get(name, "false")).lower() == "true"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_signing_key() -> jwk.JWK:
    return jwk.JWK.generate(kty="RSA", size=2048, kid=_b64(os.urandom(16)), use="sig", alg="RS256")


class DevIdentityProvider:
    """Keycloak's token service for one realm, in memory, with keys made at start-up."""

    def __init__(self, realm: Mapping[str, Any], base_url: str) -> None:
        self.realm = DevRealm.from_representation(realm)
        self.base_url = base_url.rstrip("/")
        self._keys: list[jwk.JWK] = [_new_signing_key()]
        # Keycloak signs refresh tokens with a realm HMAC key that never leaves the server.
        self._refresh_key = jwk.JWK.generate(kty="oct", size=512, kid=_b64(os.urandom(16)))
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

    def _mappers(self, client: Mapping[str, Any], scopes: list[str]) -> list[dict[str, Any]]:
        mappers = list(client.get("protocolMappers", []))
        for name in scopes:
            mappers.extend(self.realm.client_scopes[name].get("protocolMappers", []))
        return mappers

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
        access = self._access_claims(client, identity, scopes, openid, now, session_id)
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
                self._id_claims(client_id, identity, access, access_token, now, session_id)
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

    def _access_claims(
        self,
        client: Mapping[str, Any],
        identity: Identity,
        scopes: list[str],
        openid: bool,
        now: int,
        session_id: str,
    ) -> dict[str, Any]:
        client_id = str(client["clientId"])
        is_service_account = identity.service_account_client_id is not None
        claims: dict[str, Any] = {
            "exp": now + self.realm.access_token_lifespan,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "typ": "Bearer",
            "azp": client_id,
        }
        if not is_service_account:
            claims["sid"] = session_id
        audiences: list[str] = []
        for mapper in self._mappers(client, scopes):
            kind = mapper.get("protocolMapper")
            config = mapper.get("config", {})
            if not _mapper_flag(mapper, "access.token.claim"):
                continue
            if kind == "oidc-sub-mapper":
                claims["sub"] = identity.id
            elif kind == "oidc-audience-mapper" and config.get("included.client.audience"):
                audiences.append(config["included.client.audience"])
            elif kind == "oidc-usermodel-realm-role-mapper":
                claims["realm_access"] = {"roles": list(identity.realm_roles)}
            elif kind == "oidc-acr-mapper":
                claims["acr"] = "1"
            elif kind == "oidc-allowed-origins-mapper" and client.get("webOrigins"):
                claims["allowed-origins"] = list(client["webOrigins"])
            else:
                claims.update(self._user_claim(mapper, identity, now))
        if audiences:
            unique = list(dict.fromkeys(audiences))
            claims["aud"] = unique[0] if len(unique) == 1 else unique
        if is_service_account:
            claims["client_id"] = client_id
        claims["scope"] = " ".join(["openid"] * openid + self._token_scope_names(scopes))
        return claims

    def _user_claim(
        self, mapper: Mapping[str, Any], identity: Identity, now: int
    ) -> dict[str, Any]:
        kind = mapper.get("protocolMapper")
        config = mapper.get("config", {})
        if kind == "oidc-full-name-mapper":
            name = " ".join(part for part in (identity.first_name, identity.last_name) if part)
            return {"name": name} if name else {}
        if kind == "oidc-usersessionmodel-note-mapper" and config.get("claim.name") == "auth_time":
            return {} if identity.service_account_client_id else {"auth_time": now}
        if kind not in ("oidc-usermodel-attribute-mapper", "oidc-usermodel-property-mapper"):
            return {}
        attribute = config.get("user.attribute")
        values: dict[str, Any] = {
            "username": identity.username,
            "email": identity.email,
            "emailVerified": identity.email_verified,
            "firstName": identity.first_name,
            "lastName": identity.last_name,
        }
        value = values.get(str(attribute))
        claim = config.get("claim.name")
        if value is None or not claim:
            return {}
        return {str(claim): value}

    def _token_scope_names(self, scopes: list[str]) -> list[str]:
        return [
            name
            for name in scopes
            if self.realm.client_scopes[name]
            .get("attributes", {})
            .get("include.in.token.scope", "true")
            == "true"
        ]

    def _id_claims(
        self,
        client_id: str,
        identity: Identity,
        access: Mapping[str, Any],
        access_token: str,
        now: int,
        session_id: str,
    ) -> dict[str, Any]:
        digest = hashlib.sha256(access_token.encode()).digest()
        claims = {
            key: access[key]
            for key in (
                "exp",
                "iat",
                "iss",
                "sub",
                "preferred_username",
                "email",
                "email_verified",
                "name",
                "given_name",
                "family_name",
                "auth_time",
                "acr",
            )
            if key in access
        }
        claims.update(
            {
                "jti": str(uuid.uuid4()),
                "aud": client_id,
                "typ": "ID",
                "azp": client_id,
                "at_hash": _b64(digest[: len(digest) // 2]),
            }
        )
        if identity.service_account_client_id is None:
            claims["sid"] = session_id
        return claims

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


@dataclass
class BackgroundServer:
    """An ASGI app served by uvicorn in a daemon thread on loopback, for dev and tests."""

    host: str = "127.0.0.1"
    port: int = 0
    _socket: socket.socket | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _server: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not is_loopback_host(self.host):
            raise ValueError(
                f"refusing to bind {self.host!r}: development servers are loopback only"
            )
        # Bound now, so the URL (and a provider's issuer) is known before the thread starts.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._socket = sock

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, app: ASGIApp, timeout: float = 10.0) -> None:
        import uvicorn

        assert self._socket is not None, "a stopped server cannot be restarted"
        config = uvicorn.Config(
            app, log_config=None, access_log=False, server_header=False, lifespan="auto"
        )
        self._server = uvicorn.Server(config)
        sockets = [self._socket]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": sockets}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.base_url} did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def start_dev_identity_provider(
    host: str = "127.0.0.1",
    port: int = 0,
    realm_file: Path = REALM_FILE,
    environ: Mapping[str, str] | None = None,
) -> tuple[DevIdentityProvider, BackgroundServer]:
    """Load the realm file and serve it on ``host:port`` (loopback only) in the background."""
    server = BackgroundServer(host=host, port=port)
    try:
        provider = DevIdentityProvider(load_realm(realm_file, environ), server.base_url)
        server.start(provider.app)
    except BaseException:
        server.stop()
        raise
    return provider, server
