"""create_app(): routers, error handlers, middleware and the lifespan, assembled in one place."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from sqlalchemy import text

from flyswatter.attachments.routes import router as attachments_router
from flyswatter.auth.scopes import SCOPE_DESCRIPTIONS
from flyswatter.auth.tokens import TokenVerifier
from flyswatter.bulk.routes import router as bulk_router
from flyswatter.comments.routes import router as comments_router
from flyswatter.config import Settings
from flyswatter.db import SessionMiddleware, create_engine, read_only_engine
from flyswatter.docs import add_offline_docs, offer_plain_bearer_token
from flyswatter.errors import (
    ProblemDetails,
    ServiceUnavailable,
    problem_responses,
    register_error_handlers,
)
from flyswatter.events.broker import EventBroker, StreamSlots
from flyswatter.events.outbox import register_announcer, unregister_announcer
from flyswatter.events.routes import router as events_router
from flyswatter.http.body_limit import BodySizeLimitMiddleware
from flyswatter.http.headers import API_PREFIX
from flyswatter.http.requests import RequestContextMiddleware
from flyswatter.issues.routes import router as issues_router
from flyswatter.jobs.routes import router as jobs_router
from flyswatter.jobs.service import JobQueue
from flyswatter.labels.routes import router as labels_router
from flyswatter.milestones.routes import router as milestones_router
from flyswatter.moves.routes import router as moves_router
from flyswatter.observability.errors import init_error_reporting
from flyswatter.observability.exposition import router as metrics_router
from flyswatter.observability.http_metrics import HttpMetricsMiddleware
from flyswatter.observability.metrics import count_jwks_refresh
from flyswatter.openapi_links import add_links
from flyswatter.projects.routes import router as projects_router
from flyswatter.ratelimit import RateLimitMiddleware, build_limiter, close_limiter
from flyswatter.relations.routes import router as relations_router
from flyswatter.services import Flyswatter, Services, ServicesDep
from flyswatter.storage.service import storage_from_settings
from flyswatter.users.routes import router as users_router
from flyswatter.users.service import UserMirror
from flyswatter.watchers.routes import router as watchers_router
from flyswatter.webhooks.routes import router as webhooks_router
from flyswatter.webhooks.secret_box import SecretBox
from flyswatter.webhooks.targets import TargetPolicy

logger = logging.getLogger("flyswatter")


class Health(BaseModel):
    status: str


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    router.include_router(users_router)
    router.include_router(projects_router)
    router.include_router(labels_router)
    router.include_router(milestones_router)
    router.include_router(issues_router)
    router.include_router(bulk_router)
    router.include_router(comments_router)
    router.include_router(relations_router)
    router.include_router(moves_router)
    router.include_router(attachments_router)
    router.include_router(watchers_router)
    router.include_router(jobs_router)
    router.include_router(webhooks_router)
    router.include_router(events_router)
    return router


def _openapi_with_keycloak(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document, with the OAuth2 flows pointing at the configured Keycloak."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    add_links(schema)
    if settings.keycloak_url:
        # The browser follows these URLs: use the issuer's name for Keycloak, which is the one
        # browsers reach (FLYSWATTER_KEYCLOAK_URL may be an in-cluster name such as keycloak:8080).
        endpoints = f"{settings.expected_issuer}/protocol/openid-connect"
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
    offer_plain_bearer_token(schema)
    app.openapi_schema = schema
    return schema


def _cors_options(settings: Settings) -> dict[str, Any]:
    """The CORS policy: for the CORS middleware, and for the last-resort 500 made outside it."""
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
        "allow_headers": [
            "Authorization",
            "Content-Type",
            "If-Match",
            "If-None-Match",
            "Idempotency-Key",
            "X-Request-ID",
        ],
        "expose_headers": [
            "ETag",
            "Link",
            "Location",
            "Retry-After",
            "X-Request-ID",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ],
        "max_age": 600,
    }


_frozen = False


def _freeze_startup_objects() -> None:
    """Move what start-up made (modules, routes, schemas) out of the cyclic collector's reach.

    It lives as long as the process; full collections then stop walking it, which shortens
    the pauses that make up the latency tail. Once per process, after a collection, so that
    nothing already garbage is frozen with it.
    """
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def create_app(settings: Settings | None = None) -> Flyswatter:
    settings = settings or Settings()
    init_error_reporting(settings, "api")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        mirror = UserMirror(engine)
        verifier = TokenVerifier(settings, on_refresh=count_jwks_refresh, on_verified=mirror.ensure)
        limiter = build_limiter(settings)
        broker = EventBroker(settings)
        app.running = Services(
            settings=settings,
            engine=engine,
            read_engine=read_only_engine(engine),
            token_verifier=verifier,
            user_mirror=mirror,
            limiter=limiter,
            jobs=JobQueue(settings),
            # Made at start, not on first use: attachments make every API process a user.
            storage=storage_from_settings(settings),
            webhook_targets=TargetPolicy.from_settings(settings),
            webhook_secrets=SecretBox.from_settings(settings),
            event_broker=broker,
            stream_slots=StreamSlots(settings, broker.redis),
        )
        # Events committed through this engine are announced to this app's streams.
        register_announcer(engine.sync_engine, asyncio.get_running_loop(), broker.announce)
        # Not fatal: the service starts, reports not-ready, and loads keys on the first token.
        if settings.keycloak_url:
            await verifier.refresh_keys(force=True)
        _freeze_startup_objects()
        try:
            yield
        finally:
            app.running = None
            unregister_announcer(engine.sync_engine)
            await broker.close()
            await verifier.close()
            close_limiter(limiter)
            await engine.dispose()

    app = Flyswatter(
        settings,
        title="Flyswatter",
        version="0.1.0",
        description="Bug tracker for organisations that sign in with Keycloak.",
        lifespan=lifespan,
        # Any operation can meet these: a body that is not JSON (400), one over the size cap
        # (413), or a fault (500).
        responses=problem_responses(400, 413, 500),
        # /docs is served by add_offline_docs, with Swagger UI's files from this service.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    add_offline_docs(
        app,
        init_oauth={
            "clientId": settings.swagger_client_id,
            "usePkceWithAuthorizationCodeGrant": True,
            "scopes": " ".join(["openid", *SCOPE_DESCRIPTIONS]),
        },
    )
    register_error_handlers(app)
    app.include_router(api_router())
    app.include_router(metrics_router)

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
    async def readyz(services: ServicesDep) -> Health:
        """The database answers and the signing keys are loaded."""
        try:
            async with services.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            logger.warning(
                "readiness: database at %s unreachable (%s)",
                settings.database_address,
                type(exc).__name__,
            )
            raise ServiceUnavailable("the database is unreachable") from None
        verifier = services.token_verifier
        if not verifier.has_keys:
            await verifier.refresh_keys()
        if not verifier.has_keys:
            raise ServiceUnavailable("the token signing keys are not loaded yet")
        return Health(status="ready")

    app.openapi = lambda: _openapi_with_keycloak(app, settings)  # type: ignore[method-assign]
    # Middleware runs outermost-last: the request context wraps everything, so even a 413
    # or a CORS preflight answer carries the request id.
    app.add_middleware(SessionMiddleware)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        upload_max_bytes=settings.attachment_max_bytes,
    )
    # Inside the request context (a 429 carries the request id); outside it, the request
    # metrics see every final status, the 500 of an unhandled error included.
    app.add_middleware(RateLimitMiddleware)
    # Outside the rate limits, so the 429 that replaces a 401 carries the CORS headers (a
    # browser could not read it, nor its Retry-After, otherwise) and a preflight is answered
    # before any budget is looked at; inside the request context, so a preflight still carries
    # the request id and is logged and counted. (The context's own last-resort 500 is made
    # outside CORS, since CORS outermost would take preflights out of the context, logs and
    # metrics; the context adds the same CORS headers to that 500 itself.)
    cors = _cors_options(settings) if settings.cors_origins else None
    if cors is not None:
        app.add_middleware(CORSMiddleware, **cors)
    app.add_middleware(RequestContextMiddleware, cors=cors)
    app.add_middleware(HttpMetricsMiddleware)
    return app
