"""Pure ASGI middleware recording every HTTP request by method, route template and status.

The route label is the template the router matched (``/api/v1/issues/{issue_key}``), never
the raw path, so the number of series stays fixed however many issues exist; a path no route
matches is counted under ``<unmatched>``. Scrapes and health probes are not traffic and are
not counted. The middleware also turns what the error handlers noted on the request
(authentication failure reason, database error) into counters.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flyswatter.http.asgi import HttpMiddleware
from flyswatter.http.context import find_request_context
from flyswatter.observability.metrics import (
    AUTH_FAILURES,
    DATABASE_ERRORS,
    HTTP_IN_PROGRESS,
    HTTP_LATENCY,
    HTTP_REQUESTS,
)

UNMATCHED_ROUTE = "<unmatched>"
NOT_TRAFFIC = frozenset({"/metrics", "/healthz", "/readyz"})
# Anything else a client may send as a method would be a label value of its choosing.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_RouteTable = list[tuple[re.Pattern[str], str, frozenset[str] | None]]


class HttpMetricsMiddleware(HttpMiddleware):
    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self._routes: _RouteTable | None = None
        # Label children are looked up once per series, not once per request.
        self._finished: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._in_progress: dict[tuple[str, str], Any] = {}

    def applies(self, scope: Scope) -> bool:
        return super().applies(scope) and scope["path"] not in NOT_TRAFFIC

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
        route = self._route_template(scope)
        in_progress = self._in_progress.get((method, route))
        if in_progress is None:
            in_progress = self._in_progress[(method, route)] = HTTP_IN_PROGRESS.labels(
                method, route
            )
        status_code = 500
        started = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        in_progress.inc()
        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            elapsed = time.perf_counter() - started
            in_progress.dec()
            self._record(method, route, status_code, elapsed)
            context = find_request_context(scope)
            if context is not None:
                if context.auth_failure:
                    AUTH_FAILURES.labels(context.auth_failure).inc()
                if context.database_error:
                    DATABASE_ERRORS.labels(context.database_error).inc()

    def _record(self, method: str, route: str, status_code: int, elapsed: float) -> None:
        key = (method, route, str(status_code))
        series = self._finished.get(key)
        if series is None:
            series = self._finished[key] = (
                HTTP_REQUESTS.labels(*key),
                HTTP_LATENCY.labels(method, route),
            )
        series[0].inc()
        series[1].observe(elapsed)

    def _route_template(self, scope: Scope) -> str:
        """The template Starlette's router will pick: the first route matching path and
        method, else the first matching the path (a 405)."""
        routes = self._routes
        if routes is None:
            routes = self._routes = _route_table(scope["app"])
        path = scope["path"]
        method = scope["method"]
        path_only = None
        for pattern, template, methods in routes:
            if pattern.match(path):
                if methods is None or method in methods:
                    return template
                path_only = path_only or template
        return path_only or UNMATCHED_ROUTE


def _route_table(app: Any) -> _RouteTable:
    """Every route with its full template, included routers flattened (built on the first
    request, when every router is in)."""
    table: _RouteTable = []
    for route in iter_route_contexts(app.router.routes):
        if route.path and route.path_format:
            pattern = compile_path(route.path)[0]
            methods = frozenset(route.methods) if route.methods else None
            table.append((pattern, route.path_format, methods))
    return table
