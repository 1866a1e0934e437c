"""The service with and without its middleware stack, for ``bench.stack`` to compare.

Both factories build the app with ``flyswatter.app.create_app`` from the same ``FLYSWATTER_*``
environment and add one route, ``PROBE_PATH``, which authenticates exactly as every API route
does (token check, rate-limit hit, user mirror) and then answers without a query, so that the
middlewares' cost is not drowned by the database's. ``bare_app`` removes the request-context,
HTTP-metrics and rate-limit middlewares and switches the limiter off (its hit runs in the
auth dependency, not in a middleware); everything else, the body-size limit included, stays.
``app`` removes only the pieces named in ``BENCH_STACK_WITHOUT``, to price them one by one.

Logging is configured as ``flyswatter serve`` does (``FLYSWATTER_LOG_FORMAT``/``_LOG_LEVEL``),
because the access log is written by the request-context middleware and is part of its cost.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from flyswatter.app import create_app
from flyswatter.auth.dependencies import AnyPrincipal
from flyswatter.config import Settings
from flyswatter.http.requests import RequestContextMiddleware
from flyswatter.observability.http_metrics import HttpMetricsMiddleware
from flyswatter.observability.logs import configure_logging
from flyswatter.ratelimit import RateLimitMiddleware

PROBE_PATH = "/api/v1/bench/probe"
# The pieces of the stack, by the names BENCH_STACK_WITHOUT takes; the limiter is its
# middleware (headers, 401s charged by address) and its hit in the auth dependency.
PIECES = {
    "request_context": RequestContextMiddleware,
    "metrics": HttpMetricsMiddleware,
    "limiter": RateLimitMiddleware,
}
WITHOUT_ENV = "BENCH_STACK_WITHOUT"


def _with_probe(app: FastAPI) -> FastAPI:
    @app.get(PROBE_PATH)
    async def probe(principal: AnyPrincipal) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


def build(without: frozenset[str], *, log: bool = True, **overrides: Any) -> FastAPI:
    """The app without the named pieces; settings from the environment and ``overrides``."""
    unknown = without - set(PIECES)
    if unknown:
        raise ValueError(f"{WITHOUT_ENV}: unknown pieces {sorted(unknown)}; known: {list(PIECES)}")
    if "limiter" in without:
        overrides["rate_limit_enabled"] = False
    settings = Settings(**overrides)
    if log:
        configure_logging(settings.log_format, settings.log_level)
    app = _with_probe(create_app(settings))
    removed = tuple(PIECES[piece] for piece in without)
    present = {middleware.cls for middleware in app.user_middleware}
    if missing := [cls.__name__ for cls in removed if cls not in present]:
        # create_app changed: a "bare" app that still had its stack would measure nothing.
        raise RuntimeError(f"create_app no longer adds {missing}; update bench/stackapp.py")
    # Starlette builds the middleware stack from this list on the first request.
    app.user_middleware = [
        middleware for middleware in app.user_middleware if middleware.cls not in removed
    ]
    return app


def app() -> FastAPI:
    """The app without the pieces named in ``BENCH_STACK_WITHOUT`` (comma-separated)."""
    names = os.environ.get(WITHOUT_ENV, "")
    return build(frozenset(name.strip() for name in names.split(",") if name.strip()))


def full_app() -> FastAPI:
    """The service as ``create_app`` builds it (limiter on, as in production)."""
    return build(frozenset())


def bare_app() -> FastAPI:
    """The same app without the three middlewares and without the limiter's hit."""
    return build(frozenset(PIECES))
