"""slowapi's headers on every limited response, and the address budget of failed sign-ins."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from flyswatter.errors import problem_response_for
from flyswatter.http.asgi import HttpMiddleware
from flyswatter.http.context import request_context
from flyswatter.ratelimit.limiter import (
    SPENT,
    TooManyRequests,
    check,
    response_limit_headers,
    running_limiter,
)


class RateLimitMiddleware(HttpMiddleware):
    """Adds ``X-RateLimit-*`` to every limited response and limits failed authentication by IP.

    A 401 is known only once the token has been checked, so the caller's address is charged
    then (``rate_limit_key`` finds no principal); past its budget the 401 is replaced by a
    429. Pure ASGI, like every middleware here.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = running_limiter(scope["app"])
        if limiter is None:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        replaced = False

        async def send_with_limits(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the body of the 401 a 429 stood in for
            if message["type"] == "http.response.start":
                request = Request(scope)
                failed = message["status"] == 401 and request_context(scope).auth_failure
                if failed and SPENT not in state:
                    try:
                        check(limiter, request)
                    except TooManyRequests as refused:
                        replaced = True
                        await problem_response_for(request, refused)(scope, receive, send)
                        return
                headers = list(message.get("headers", ()))
                # A 429 carries them already: one storage read fewer.
                if state.get(SPENT) is not None and not any(
                    name.lower() == b"x-ratelimit-limit" for name, _ in headers
                ):
                    headers.extend(response_limit_headers(limiter, request))
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_limits)
