"""FastAPI dependencies that authenticate the caller and check the route's scopes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlows
from fastapi.security import OAuth2, SecurityScopes

from flyswatter.auth.scopes import Scope
from flyswatter.auth.tokens import Principal, TokenRejected
from flyswatter.errors import (
    InsufficientScope,
    InvalidAuthorizationRequest,
    Unauthorized,
    problem_responses,
)
from flyswatter.http.context import request_context
from flyswatter.ratelimit import enforce_rate_limit
from flyswatter.services import ServicesDep

# What any authenticated route can answer: no or a bad token, a missing scope or role, an
# invalid request, a used-up rate limit. Each route adds its own on top.
AUTH_ERRORS = problem_responses(401, 403, 422, 429)

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
    services: ServicesDep,
    authorization: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    """The caller of a valid token that grants the route's scopes; 401 or 403 otherwise."""
    # RFC 6750 §3.1: credentials given more than once are an invalid request, whichever of
    # them a proxy or a framework would have picked.
    if len(request.headers.getlist("authorization")) > 1:
        raise InvalidAuthorizationRequest("send one Authorization header")
    if not authorization:
        raise Unauthorized("a bearer token is required", reason="missing")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required", reason="missing")
    try:
        principal = await services.token_verifier.verify(token.strip())
    except TokenRejected as rejected:
        raise Unauthorized(rejected.detail, reason=rejected.reason) from None
    # For the rate limiter, idempotency records and the access log: who, never the token.
    request_context(request.scope).principal = principal
    enforce_rate_limit(request)
    missing = [scope for scope in security_scopes.scopes if scope not in principal.scopes]
    if missing:
        raise InsufficientScope(missing)
    return principal


def require_scopes(*scopes: Scope) -> Any:
    """``Security`` marker for a handler parameter; OpenAPI lists the scopes on the route."""
    return Security(authenticate, scopes=[scope.value for scope in scopes])


AnyPrincipal = Annotated[Principal, Security(authenticate)]
ProjectsRead = Annotated[Principal, require_scopes(Scope.projects_read)]
ProjectsWrite = Annotated[Principal, require_scopes(Scope.projects_write)]
IssuesRead = Annotated[Principal, require_scopes(Scope.issues_read)]
IssuesWrite = Annotated[Principal, require_scopes(Scope.issues_write)]
