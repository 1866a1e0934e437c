"""slowapi's ``Limiter`` as the service's rate limiter: per-principal write and read budgets.

- Key (``rate_limit_key``): ``client:<id>`` for a service account, ``user:<sub>`` for a person
  (set by authentication), ``ip:<address>`` for a request that failed authentication, so a
  flood of bad tokens is limited too.
- Limits: two application-wide limits (slowapi's ``application_limits``: one budget for the
  whole API, not one per route), ``FLYSWATTER_RATE_LIMIT_WRITES`` for POST/PUT/PATCH/DELETE
  and ``FLYSWATTER_RATE_LIMIT_READS`` for the rest, with limits' sliding window counter.
- Storage: in memory with one process; Redis (``FLYSWATTER_REDIS_URL``) with several workers
  or replicas. When Redis is unreachable slowapi's in-memory fallback takes over: the same
  budgets, counted in each worker's memory (a Redis outage must not become an API outage),
  with one warning and one count of ``flyswatter_rate_limit_storage_errors_total``; slowapi
  pings Redis again with its back-off (1, 2, 4 ... 32 s) and goes back to it once it answers.

Where the check runs: slowapi's middleware runs before routing, so before the token is
checked, and its key function could only see the client address; its decorators need a
limit and a ``request`` parameter on every route. The check therefore runs where the
principal is first known, in authentication (``enforce_rate_limit``), once per request,
through the call slowapi's own middleware makes (``Limiter._check_request_limit`` with the
application limits); ``RateLimitMiddleware`` adds slowapi's headers to the response.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from limits.storage import MemoryStorage, RedisStorage
from redis import ConnectionPool
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from slowapi.wrappers import Limit, LimitGroup
from starlette.requests import Request

from flyswatter.config import Settings
from flyswatter.errors import Problem
from flyswatter.http.context import request_context
from flyswatter.observability.metrics import RATE_LIMIT_STORAGE_ERRORS, RATE_LIMITED
from flyswatter.services import Services, settings_of

logger = logging.getLogger("flyswatter.ratelimit")
# slowapi logs a warning with the caller's key for every refused request (the access log and
# flyswatter_rate_limited_requests_total have those) and its own line when it falls back to
# memory (logged once below, with the metric); its errors still get through.
logging.getLogger("slowapi").setLevel(logging.ERROR)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Redis answers in well under a millisecond on a healthy network; past this it is treated as
# down. slowapi's calls are synchronous: this also bounds how long one can hold the event loop.
REDIS_TIMEOUT_SECONDS = 0.25
# Where slowapi leaves the limit a request spent (the limit and its storage key).
SPENT = "view_rate_limit"
_HEADER_NAMES = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class TooManyRequests(Problem):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, kind: str, amount: int, headers: dict[str, str]) -> None:
        retry_after = headers.get("retry-after", "1")
        super().__init__(
            f"the {kind} limit of {amount} requests is used up; retry in {retry_after} s",
            headers=headers,
        )


def rate_limit_key(request: Request) -> str:
    """The principal authentication found, else the client address."""
    principal = request_context(request.scope).principal_key
    return principal or f"ip:{get_remote_address(request)}"


# slowapi asks ``inspect.signature`` of the key function on every check, whether it takes the
# request; a ``__signature__`` set once answers that without rebuilding it each time.
rate_limit_key.__signature__ = inspect.signature(rate_limit_key)  # type: ignore[attr-defined]


def running_limiter(app: Any) -> Limiter | None:
    """The app's limiter while its lifespan runs and limits are on."""
    services: Services | None = getattr(app, "running", None)
    if services is None or not services.limiter.enabled:
        return None
    return services.limiter


def _is_write(request: Request) -> bool:
    return request.method in WRITE_METHODS


def _is_read(request: Request) -> bool:
    return request.method not in WRITE_METHODS


class SweptMemoryStorage(MemoryStorage):
    """limits' memory storage, its expired counters swept inline at most once a second.

    limits' own starts a ``threading.Timer`` for a sweep 10 ms after a hit whenever the
    previous one has run: while requests arrive, a thread start every 10 ms, which cost more
    than the check itself (``bench/RESULTS.md``). A counter read after its expiry is dropped
    by the read anyway; the sweep only frees those nobody reads again, so once a second is
    plenty, and it runs on the request that finds it due (the same pass limits' timer runs).
    """

    STORAGE_SCHEME = ["flyswatter-memory"]
    SWEEP_INTERVAL_SECONDS = 1.0
    _next_sweep = 0.0

    # MemoryStorage's hits call its private ``__schedule_expiry``; this replaces it.
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_INTERVAL_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class ParsedLimitGroup(LimitGroup):
    """slowapi's limit group, its limits built once.

    slowapi's ``LimitGroup`` parses its limit string and builds its ``Limit`` objects (each
    inspecting its exemption's signature) anew on every request; these do not change.
    """

    def __init__(self, limit: str, scope: str, exempt_when: Callable[[Request], bool]) -> None:
        super().__init__(limit, rate_limit_key, scope, False, None, None, exempt_when, 1, False)
        self._limits = list(super().__iter__())

    def __iter__(self) -> Iterator[Limit]:
        return iter(self._limits)


def build_limiter(settings: Settings) -> Limiter:
    options: dict[str, Any] = {}
    if settings.redis_url:
        # Our own pool, so that the timeouts apply and the lifespan can close it. (redis-py's
        # single_connection_client would save a pool checkout per command, ~15 % of the Redis
        # cost, but connects in the constructor: the service could not start without Redis.)
        options["connection_pool"] = ConnectionPool.from_url(
            settings.redis_url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
    limiter = Limiter(
        key_func=rate_limit_key,
        headers_enabled=True,
        strategy="sliding-window-counter",
        storage_uri=settings.redis_url or "flyswatter-memory://",
        storage_options=options,
        in_memory_fallback_enabled=True,
        # A storage error while reading the headers leaves them out instead of failing the
        # response; the check itself falls back to memory.
        swallow_errors=True,
        key_prefix="flyswatter",
        enabled=settings.rate_limit_enabled,
    )
    # slowapi's constructor builds application limits for every method; these are its own
    # limit groups with an exemption by method, so each request spends exactly one budget.
    # The scope (write/read) keeps the two counters apart even when both limits are equal.
    if limiter._fallback_limiter is not None:
        # The fallback for a Redis outage, on the same storage as memory mode.
        limiter._fallback_storage = SweptMemoryStorage()
        limiter._fallback_limiter = type(limiter._fallback_limiter)(limiter._fallback_storage)
    limiter._application_limits = [
        ParsedLimitGroup(settings.rate_limit_writes, "write", _is_read),
        ParsedLimitGroup(settings.rate_limit_reads, "read", _is_write),
    ]
    return limiter


def close_limiter(limiter: Limiter) -> None:
    storage = limiter._storage
    if isinstance(storage, RedisStorage):
        storage.storage.connection_pool.disconnect()


def _window_stats(limiter: Limiter, request: Request, spent: Any) -> tuple[float, int] | None:
    """(reset time, remaining) of the limit this request spent, from the storage in use.

    Redis can fail after the request's check spent from it (it died, or a read timed out):
    slowapi's own header code then logs an ERROR with a traceback for every such response,
    leaves the headers out and never falls back (it tests its list of fallback *limits*,
    empty here, instead of whether the fallback is on), so the outage is neither counted nor
    announced until a later check meets it. Here it falls back as the check does, once.
    """
    item, arguments = spent
    try:
        stats: tuple[float, int] = limiter.limiter.get_window_stats(item, *arguments)
        return stats
    except Exception:
        if limiter._storage_dead:
            return None  # the fallback failing too: no headers rather than a failed answer
    limiter._storage_dead = True
    _report_storage(limiter, False, request)
    try:
        stats = limiter.limiter.get_window_stats(item, *arguments)
    except Exception:
        return None
    return stats


def limit_headers(limiter: Limiter, request: Request) -> dict[str, str]:
    """slowapi's headers for the limit this request spent (``Retry-After`` included), as
    slowapi's ``_inject_asgi_headers`` writes them, in whole seconds."""
    spent = request.scope.get("state", {}).get(SPENT)
    if spent is None or not limiter._headers_enabled:
        return {}
    stats = _window_stats(limiter, request, spent)
    if stats is None:
        return {}
    reset_at = 1 + stats[0]
    return {
        "x-ratelimit-limit": str(spent[0].amount),
        "x-ratelimit-remaining": str(stats[1]),
        # limits' window statistics are floats; the contract is whole epoch seconds.
        "x-ratelimit-reset": str(math.ceil(reset_at)),
        "retry-after": str(max(1, int(reset_at - time.time()))),
    }


def response_limit_headers(limiter: Limiter, request: Request) -> list[tuple[bytes, bytes]]:
    """The ``X-RateLimit-*`` headers every limited response carries.

    slowapi also writes ``Retry-After`` on every response, and would replace a 503's own
    with the limit's reset time; only a 429 carries the limit's ``Retry-After`` here.
    """
    headers = limit_headers(limiter, request)
    return [(name.encode(), headers[name].encode()) for name in _HEADER_NAMES if name in headers]


def check(limiter: Limiter, request: Request) -> None:
    """Spend one request of the caller's budget; ``TooManyRequests`` when it is used up."""
    was_down = limiter._storage_dead
    try:
        limiter._check_request_limit(request, None, True)
    except RateLimitExceeded as exceeded:
        limit = exceeded.limit
        assert limit is not None
        RATE_LIMITED.labels(limit.scope).inc()
        raise TooManyRequests(
            limit.scope, limit.limit.amount, limit_headers(limiter, request)
        ) from None
    finally:
        _report_storage(limiter, was_down, request)


def _report_storage(limiter: Limiter, was_down: bool, request: Request) -> None:
    if limiter._storage_dead == was_down:
        return
    if limiter._storage_dead:
        RATE_LIMIT_STORAGE_ERRORS.inc()
        # slowapi keeps the exception to itself; the line names where Redis was looked for
        # (host and port: the URL may carry a password).
        logger.warning(
            "rate limits: Redis unreachable at %s; workers limit on their own until it is back",
            settings_of(request.app).redis_address,
        )
    else:
        logger.info("rate limits: Redis is back; limits are shared again")


def enforce_rate_limit(request: Request) -> None:
    """Spend one request of the authenticated caller's budget; 429 when it is used up.

    Called by ``authenticate`` once the principal is known. A route whose dependencies
    authenticate twice still spends one request.
    """
    limiter = running_limiter(request.app)
    if limiter is None or SPENT in request.scope.setdefault("state", {}):
        return
    check(limiter, request)
