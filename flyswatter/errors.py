"""The RFC 9457 problem+json error family and its handlers, registered in one place.

Domain code raises a ``Problem`` subclass; the handlers and the middlewares answer what they
catch with one, too, and ``problem_response_for`` is the one place that turns a problem into
its response. Every response carries the request id so a client's report can be matched with
the logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from flyswatter.http.context import find_request_context, request_context
from flyswatter.http.headers import bearer_challenge, retry_after

logger = logging.getLogger("flyswatter.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:flyswatter:problem:"


class FieldError(BaseModel):
    """One invalid input: where it is and what is wrong with it."""

    loc: list[str | int]
    msg: str
    type: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, as every error response of this service is shaped."""

    type: str = Field(examples=[PROBLEM_TYPE_PREFIX + "not-found"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        # ASCII with escapes: an error answer must render whatever text a client sent, even
        # a lone surrogate that UTF-8 cannot encode.
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


class Problem(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(Problem):
    status, slug, title = 400, "bad-request", "Bad request"


class InvalidAuthorizationRequest(Problem):
    """A request whose credentials cannot be read as one bearer token (RFC 6750 §3.1)."""

    status, slug, title = 400, "invalid-request", "Invalid request"

    def __init__(self, detail: str) -> None:
        challenge = bearer_challenge("invalid_request", error_description=detail)
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Unauthorized(Problem):
    status, slug, title = 401, "invalid-token", "Authentication required"

    def __init__(self, detail: str, *, reason: str) -> None:
        # The reason is for metrics and logs; clients see the RFC 6750 challenge.
        challenge = bearer_challenge("invalid_token", error_description=detail)
        super().__init__(detail, headers={"WWW-Authenticate": challenge})
        self.reason = reason


class InsufficientScope(Problem):
    status, slug, title = 403, "insufficient-scope", "Insufficient scope"

    def __init__(self, missing: Sequence[str]) -> None:
        scopes = " ".join(missing)
        super().__init__(
            f"this route needs the scope(s): {scopes}",
            headers={"WWW-Authenticate": bearer_challenge("insufficient_scope", scope=scopes)},
            extra={"required_scopes": list(missing)},
        )


class Forbidden(Problem):
    """The caller is known and may see the resource, but its role does not allow the change."""

    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Gone(Problem):
    """What the request would name was there, and was deleted (the creation a retried
    request replays)."""

    status, slug, title = 410, "gone", "Gone"


class Conflict(Problem):
    """The change contradicts the resource's state (a taken key, a move the workflow forbids)."""

    status, slug, title = 409, "conflict", "Conflict"


class ConcurrentChange(Conflict):
    """The database rolled the transaction back to let a concurrent one through (a deadlock's
    victim, a serialization failure): nothing was changed, and the same request may be sent
    again as it is."""

    slug, title = "concurrent-change", "Concurrent change"


class PreconditionFailed(Problem):
    status, slug, title = 412, "precondition-failed", "Precondition failed"


class UnprocessableEntity(Problem):
    status, slug, title = 422, "validation-error", "Invalid request"

    def __init__(self, detail: str, *, loc: Sequence[str | int] = ("body",)) -> None:
        super().__init__(
            detail,
            extra={"errors": [{"loc": list(loc), "msg": detail, "type": "value_error"}]},
        )


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class InvalidRequest(Problem):
    """Request validation failed: where, and what is wrong, for each field."""

    status, slug, title = 422, "validation-error", "Invalid request"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)", extra={"errors": errors})


class InternalError(Problem):
    """An unexpected fault: what happened goes to the log, never into the response."""

    def __init__(self) -> None:
        super().__init__("unexpected error")


class TooManyRequests(Problem):
    status, slug, title = 429, "too-many-requests", "Too many requests"


class ServiceUnavailable(Problem):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    slug = "database-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "the database is unavailable; retry later", headers={"Retry-After": retry_after(5)}
        )


class HttpError(Problem):
    """An error Starlette raised itself (no such route, method not allowed, ...)."""

    def __init__(
        self, status: int, detail: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        super().__init__(detail, headers=headers)
        # The family's spelling (sentence case, "Not found"), whoever raised the error.
        title = phrase[:1] + phrase[1:].lower()
        self.status, self.slug, self.title = status, phrase.lower().replace(" ", "-"), title


def problem_response_for(request: Request, problem: Problem) -> ProblemResponse:
    """The problem+json answer for a ``Problem``, raised or not: the one error builder."""
    context = find_request_context(request.scope)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        "request_id": context.request_id if context else None,
    }
    body.update(problem.extra)
    return ProblemResponse(body, status_code=problem.status, headers=problem.headers)


async def _handle_problem(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, Problem)
    if isinstance(exc, Unauthorized):
        request_context(request.scope).auth_failure = exc.reason
    return problem_response_for(request, exc)


def _jsonable_loc(loc: Sequence[Any]) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _handle_validation(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    # Echoing the rejected input back could reflect secrets a client sent by mistake.
    errors = [
        {"loc": _jsonable_loc(err.get("loc", ())), "msg": err.get("msg", ""), "type": err["type"]}
        for err in exc.errors()
    ]
    return problem_response_for(request, InvalidRequest(errors))


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (routing names only the last one tried)."""
    methods: set[str] = set()
    for route in request.app.routes:
        path_regex = getattr(route, "path_regex", None)
        route_methods = getattr(route, "methods", None)
        if path_regex is not None and route_methods and path_regex.match(request.url.path):
            methods |= route_methods
    return ", ".join(sorted(methods))


async def _handle_http(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    detail = exc.detail if exc.status_code != 404 else "no such resource"
    if exc.status_code == 413:
        # The same problem type as the body limit's own refusal (an upload read past its cap).
        return problem_response_for(request, PayloadTooLarge(detail, headers=headers))
    return problem_response_for(request, HttpError(exc.status_code, detail, headers))


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def database_error_summary(exc: BaseException) -> str:
    """What may be logged of a database error: classes and SQLSTATE, never SQL or parameters."""
    orig = getattr(exc, "orig", None)
    origin = type(orig).__name__ if orig else "-"
    return f"{type(exc).__name__}({origin}, sqlstate={_sqlstate(exc)})"


async def _handle_database_error(request: Request, exc: Exception) -> ProblemResponse:
    context = request_context(request.scope)
    if isinstance(exc, IntegrityError):
        context.database_error = "integrity"
        # Services check what they can up front; what is left is a race with another writer.
        logger.warning("integrity conflict: %s", database_error_summary(exc))
        conflict = Conflict("the change conflicts with the current state; reload and retry")
        return problem_response_for(request, conflict)
    if (_sqlstate(exc) or "").startswith("40"):
        # SQLSTATE class 40, transaction rollback: the database is well, the request lost a race.
        context.database_error = "rollback"
        logger.warning("transaction rolled back: %s", database_error_summary(exc))
        lost = ConcurrentChange(
            "the change collided with a concurrent one and was not made; retry it"
        )
        return problem_response_for(request, lost)
    if isinstance(exc, OperationalError | PoolTimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        # Imported here: the services module builds on this one.
        from flyswatter.services import settings_of

        context.database_error = "unavailable"
        logger.error(
            "database at %s unavailable: %s",
            settings_of(request.app).database_address,
            database_error_summary(exc),
        )
        return problem_response_for(request, DatabaseUnavailable())
    context.database_error = "other"
    logger.error("database error: %s", database_error_summary(exc))
    return problem_response_for(request, InternalError())


def register_error_handlers(app: FastAPI) -> None:
    """Everything but unexpected exceptions; those are caught by the request middleware."""
    app.add_exception_handler(Problem, _handle_problem)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(DBAPIError, _handle_database_error)
    app.add_exception_handler(PoolTimeoutError, _handle_database_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the problem+json errors a route can return."""
    return {
        status: {
            "model": ProblemDetails,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_CONTENT_TYPE: {}},
        }
        for status in statuses
    }
