"""create_app(): routers, error handlers, middleware and the lifespan, assembled in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from sqlalchemy import text

from flyswatter.auth.scopes import SCOPE_DESCRIPTIONS
from flyswatter.auth.tokens import TokenVerifier
from flyswatter.body_limit import BodySizeLimitMiddleware
from flyswatter.comments.routes import router as comments_router
from flyswatter.config import Settings
from flyswatter.db import create_engine
from flyswatter.errors import ProblemDetails, ServiceUnavailable, register_error_handlers
from flyswatter.issues.routes import router as issues_router
from flyswatter.labels.routes import router as labels_router
from flyswatter.observability.requests import RequestContextMiddleware
from flyswatter.projects.routes import router as projects_router
from flyswatter.users.routes import router as users_router
from flyswatter.users.service import UserMirror

logger = logging.getLogger("flyswatter")

API_PREFIX = "/api/v1"


class Health(BaseModel):
    status: str


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    router.include_router(users_router)
    router.include_router(projects_router)
    router.include_router(labels_router)
    router.include_router(issues_router)
    router.include_router(comments_router)
    return router


def _openapi_with_keycloak(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document, with the OAuth2 flows pointing at the configured Keycloak."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    if settings.keycloak_url:
        endpoints = f"{settings.realm_url}/protocol/openid-connect"
        scopes = dict(SCOPE_DESCRIPTIONS)
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["keycloak"] = {
            "type": "oauth2",
            "description": "Keycloak access token (Authorization: Bearer ...)",
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": f"{endpoints}/auth",
                    "tokenUrl": f"{endpoints}/token",
                    "refreshUrl": f"{endpoints}/token",
                    "scopes": scopes,
                },
                "clientCredentials": {"tokenUrl": f"{endpoints}/token", "scopes": scopes},
            },
        }
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = create_engine(settings)
        verifier = TokenVerifier(settings)
        app.state.token_verifier = verifier
        app.state.user_mirror = UserMirror()
        # Not fatal: the service starts, reports not-ready, and loads keys on the first token.
        if settings.keycloak_url:
            await verifier.refresh_keys(force=True)
        try:
            yield
        finally:
            await verifier.close()
            await app.state.engine.dispose()

    app = FastAPI(
        title="Flyswatter",
        version="0.1.0",
        description="Bug tracker for organisations that sign in with Keycloak.",
        lifespan=lifespan,
        responses={500: {"model": ProblemDetails, "description": "Unexpected error"}},
        swagger_ui_init_oauth={
            "clientId": settings.swagger_client_id,
            "usePkceWithAuthorizationCodeGrant": True,
            "scopes": " ".join(["openid", *SCOPE_DESCRIPTIONS]),
        },
    )
    app.state.settings = settings
    register_error_handlers(app)
    app.include_router(api_router())

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """The process is alive."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": ProblemDetails, "description": "Not ready"}},
    )
    async def readyz(request: Request) -> Health:
        """The database answers and the signing keys are loaded."""
        try:
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            logger.warning("readiness: database unreachable (%s)", type(exc).__name__)
            raise ServiceUnavailable("the database is unreachable") from None
        verifier: TokenVerifier = request.app.state.token_verifier
        if not verifier.has_keys:
            await verifier.refresh_keys()
        if not verifier.has_keys:
            raise ServiceUnavailable("the token signing keys are not loaded yet")
        return Health(status="ready")

    app.openapi = lambda: _openapi_with_keycloak(app, settings)  # type: ignore[method-assign]
    # Middleware runs outermost-last: the request context wraps everything, so even a 413
    # or a CORS preflight answer carries the request id.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "If-Match",
                "If-None-Match",
                "Idempotency-Key",
                "X-Request-ID",
            ],
            expose_headers=[
                "ETag",
                "Link",
                "Location",
                "Retry-After",
                "X-Request-ID",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware)
    return app
