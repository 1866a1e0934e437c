"""FastAPI dependencies that authenticate the caller and check the route's scopes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlows
from fastapi.security import OAuth2, SecurityScopes

from flyswatter.auth.scopes import Scope
from flyswatter.auth.tokens import Principal, TokenRejected, TokenVerifier
from flyswatter.db import SessionDep
from flyswatter.errors import InsufficientScope, Unauthorized
from flyswatter.observability.ratelimit import enforce_rate_limit

# The flows (Keycloak's URLs) are filled in per deployment by ``app.custom_openapi``.
oauth2_scheme = OAuth2(
    flows=OAuthFlows(),
    scheme_name="keycloak",
    description="Keycloak access token (Authorization: Bearer ...)",
    auto_error=False,
)


async def authenticate(
    request: Request,
    security_scopes: SecurityScopes,
    session: SessionDep,
    authorization: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    if not authorization:
        raise Unauthorized("a bearer token is required", reason="missing")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required", reason="missing")
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        principal = await verifier.verify(token.strip())
    except TokenRejected as rejected:
        raise Unauthorized(rejected.detail, reason=rejected.reason) from None
    # For the rate limiter and the access log: who, never the token.
    request.state.principal_key = (
        f"client:{principal.client_id}"
        if principal.is_service_account
        else f"user:{principal.subject}"
    )
    await enforce_rate_limit(request)
    missing = [scope for scope in security_scopes.scopes if scope not in principal.scopes]
    if missing:
        raise InsufficientScope(missing)
    await request.app.state.user_mirror.ensure(session, principal)
    return principal


def require_scopes(*scopes: Scope) -> Any:
    """``Security`` marker for a handler parameter; OpenAPI lists the scopes on the route."""
    return Security(authenticate, scopes=[scope.value for scope in scopes])


AnyPrincipal = Annotated[Principal, Security(authenticate)]
ProjectsRead = Annotated[Principal, require_scopes(Scope.projects_read)]
ProjectsWrite = Annotated[Principal, require_scopes(Scope.projects_write)]
IssuesRead = Annotated[Principal, require_scopes(Scope.issues_read)]
IssuesWrite = Annotated[Principal, require_scopes(Scope.issues_write)]
