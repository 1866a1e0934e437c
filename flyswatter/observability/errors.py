"""Optional error reporting to Sentry (sentry-sdk) for the API and the worker, scrubbed.

Off unless ``FLYSWATTER_SENTRY_DSN`` is set. Events carry the request id (the API's, or for a
task the id of the request that asked for its job) and never a secret: no request bodies,
cookies or ``Authorization`` headers, no local variables, and any token-shaped string
(a JWT, a bearer credential) anywhere in an event or a breadcrumb is replaced.
"""

from __future__ import annotations

import re
from typing import Any

from flyswatter.config import Settings
from flyswatter.observability.logs import request_id_var

FILTERED = "[Filtered]"
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_DROPPED_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
# Keys whose values are dropped wherever they appear, beyond sentry-sdk's own list.
EXTRA_DENYLIST = (
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "idempotency-key",
    "idempotency_key",
    "jwt",
)


def scrub_text(text: str) -> str:
    return _BEARER.sub(lambda match: f"{match.group(1)} {FILTERED}", _JWT.sub(FILTERED, text))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    request = event.get("request")
    if isinstance(request, dict):
        for field in ("data", "cookies"):
            request.pop(field, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                name: value
                for name, value in headers.items()
                if name.lower() not in _DROPPED_HEADERS
            }
    request_id = request_id_var.get()
    if request_id:
        event.setdefault("tags", {}).setdefault("request_id", request_id)
    scrubbed: dict[str, Any] = _scrub(event)
    return scrubbed


def before_breadcrumb(crumb: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    scrubbed: dict[str, Any] = _scrub(crumb)
    return scrubbed


def init_error_reporting(settings: Settings, component: str) -> bool:
    """Start sentry-sdk in this process when a DSN is configured; True when it is on."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        release=settings.sentry_release,
        max_request_body_size="never",
        include_local_variables=False,
        event_scrubber=EventScrubber(denylist=[*DEFAULT_DENYLIST, *EXTRA_DENYLIST], recursive=True),
        before_send=before_send,  # type: ignore[arg-type]
        before_breadcrumb=before_breadcrumb,
        # Errors only: log lines become breadcrumbs of an error, never events of their own.
        integrations=[LoggingIntegration(event_level=None)],
        traces_sample_rate=None,
    )
    sentry_sdk.set_tag("component", component)
    return True


def report_unhandled(exc: BaseException, request_id: str | None, **tags: str) -> None:
    """One event for an error nothing handled (a no-op when error reporting is off)."""
    import sentry_sdk

    named = {"request_id": request_id, **tags} if request_id else tags
    sentry_sdk.capture_exception(exc, tags=named or None)
