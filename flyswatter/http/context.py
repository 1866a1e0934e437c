"""The request's context: what the middlewares, dependencies and error handlers learn about
a request and hand on to each other, in one typed object instead of string keys.

``request_context`` finds it from a scope, making it on first use (normally in
``RequestContextMiddleware``, the outermost but one), so pure ASGI middleware and FastAPI
dependencies reach the same object, and the app still works with that middleware removed
(as the middleware-stack benchmark does).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import Scope

if TYPE_CHECKING:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from flyswatter.auth.tokens import Principal

# An ASGI scope key of this application's own (extensions use dotted names by convention).
SCOPE_KEY = "flyswatter.context"
# A client's id is echoed into headers and logs, so only a safe, short alphabet is taken.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(slots=True)
class RequestContext:
    request_id: str
    # The peer's address (the proxy's, unless its X-Forwarded-For is trusted).
    client: str | None
    principal: Principal | None = None
    # Why a token was refused: a metrics label, set by the 401 handler.
    auth_failure: str | None = None
    # How the database failed the request (a label of the database error counter).
    database_error: str | None = None
    # The request's database session, made on first use (db.get_session), closed after it.
    session: AsyncSession | None = None

    @property
    def principal_key(self) -> str | None:
        """Who is calling, for rate limits, idempotency records and logs; never the token."""
        return None if self.principal is None else self.principal.key


def incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def request_context(scope: Scope) -> RequestContext:
    """The request's context, made on the first call for a request."""
    context: RequestContext | None = scope.get(SCOPE_KEY)
    if context is None:
        client = scope.get("client")
        context = scope[SCOPE_KEY] = RequestContext(
            incoming_request_id(scope), client[0] if client else None
        )
    return context


def find_request_context(scope: Scope) -> RequestContext | None:
    """The context if something made it: for readers that only look at what others noted."""
    return scope.get(SCOPE_KEY)
