"""The development identity provider over HTTP: Keycloak's realm paths (discovery, certs,
the login page and its form, the token endpoint), with CORS for the realm's web origins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from flyswatter.dev.oauth import AuthorizationRedirect, OAuthError, read_form
from flyswatter.dev.pages import error_page, login_page, page

if TYPE_CHECKING:
    from flyswatter.dev.identity_provider import DevIdentityProvider


def discovery_document(provider: DevIdentityProvider) -> dict[str, Any]:
    """OpenID Connect discovery, with the fields Keycloak's has that clients read."""
    endpoints = f"{provider.issuer}/protocol/openid-connect"
    return {
        "issuer": provider.issuer,
        "authorization_endpoint": provider.authorization_endpoint,
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
        "scopes_supported": ["openid", *provider.realm.client_scopes],
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


def allowed_origins(provider: DevIdentityProvider) -> set[str]:
    return {
        origin
        for client in provider.realm.clients.values()
        for origin in client.get("webOrigins", [])
        if origin not in ("+", "*")
    }


def with_cors(provider: DevIdentityProvider, request: Request, response: Response) -> Response:
    origin = request.headers.get("origin")
    if origin and origin in allowed_origins(provider):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


def build_app(provider: DevIdentityProvider) -> Starlette:
    """Keycloak's realm paths, served for ``provider``."""
    realm_path = f"/realms/{provider.realm.name}"
    login_action = f"{realm_path}/login-actions/authenticate"

    async def discovery(request: Request) -> Response:
        return with_cors(provider, request, JSONResponse(discovery_document(provider)))

    async def certs(request: Request) -> Response:
        return with_cors(provider, request, JSONResponse(provider.jwks()))

    async def auth(request: Request) -> Response:
        try:
            pending = provider.authorize(request.query_params)
        except AuthorizationRedirect.Error as refused:
            return RedirectResponse(refused.location, status_code=302)
        except OAuthError as error:
            return page(error_page(error.description), status=error.status)
        action = f"{login_action}?{urlencode({'session_code': provider.start_login(pending)})}"
        return page(login_page(provider.realm, action, error=None))

    async def authenticate(request: Request) -> Response:
        session_code = request.query_params.get("session_code", "")
        try:
            form = await read_form(request)
            location = provider.login(
                session_code, form.get("username", ""), form.get("password", "")
            )
        except OAuthError as error:
            if error.error != "invalid_grant":
                return page(error_page(error.description), status=error.status)
            action = f"{login_action}?{urlencode({'session_code': session_code})}"
            again = login_page(provider.realm, action, error="Invalid username or password.")
            return page(again, status=200)
        return RedirectResponse(location, status_code=302)

    async def token(request: Request) -> Response:
        if request.method == "OPTIONS":
            preflight = Response(status_code=200)
            preflight.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            preflight.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            return with_cors(provider, request, preflight)
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        client_host = request.client.host if request.client else "127.0.0.1"
        try:
            form = await read_form(request)
            body = provider.issue(form, request.headers.get("authorization"), client_host)
        except OAuthError as error:
            payload = {"error": error.error, "error_description": error.description}
            response = JSONResponse(payload, status_code=error.status, headers=headers)
            return with_cors(provider, request, response)
        return with_cors(provider, request, JSONResponse(body, headers=headers))

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
