"""Per-principal rate limits: writes and reads budgeted apart, shared by workers through Redis.

The limits are slowapi's: the same limit strings (``120/minute``) and the same engine,
``limits``, that slowapi drives, with its sliding window counter. slowapi's own request check
is synchronous and bound to route decorators, so a Redis round trip there would block the
event loop; the check here is asynchronous, once per request, right after the caller is
authenticated: in memory in one process (``LocalWindows``), and with Redis one script
(``SharedWindows``) that acquires and reads the window in a single round trip, through
redis-py's asyncio client. Both keep limits' sliding window counter.

- Key: ``client:<id>`` for a service account, ``user:<sub>`` for a person; a request that
  fails authentication is counted against ``ip:<address>`` instead (see
  ``RateLimitMiddleware``), so a flood of bad tokens is limited too.
- Storage: in memory with one process; Redis (``FLYSWATTER_REDIS_URL``) with several workers
  or replicas. When Redis is unreachable the limiter **fails open to per-process limits**:
  rate limits protect the service, they are not part of any answer, so a Redis outage must
  not become an API outage. Each worker then enforces the same budgets in its own memory,
  logs one warning, counts ``flyswatter_rate_limit_storage_errors_total``, and tries Redis
  again after ``SHARED_STORAGE_RETRY_SECONDS``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError
from slowapi.util import get_remote_address
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flyswatter.config import Settings
from flyswatter.errors import Problem, ProblemResponse, problem_response_for
from flyswatter.http.context import request_context
from flyswatter.http.headers import add_missing_headers
from flyswatter.observability.metrics import RATE_LIMIT_STORAGE_ERRORS, RATE_LIMITED

logger = logging.getLogger("flyswatter.ratelimit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# After a Redis failure, requests use per-process limits for this long before Redis is tried
# again, so an outage costs one failed round trip per worker every few seconds, not one per request.
SHARED_STORAGE_RETRY_SECONDS = 5.0
# Redis answers in well under a millisecond on a healthy network; past this it is treated as down.
REDIS_TIMEOUT_SECONDS = 0.25
_STATE_KEY = "rate_limit"


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    kind: str
    allowed: bool
    limit: int
    remaining: int
    reset_at: float

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }

    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """``headers()`` as ASGI header pairs."""
        return (
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(math.ceil(self.reset_at)).encode()),
        )


class TooManyRequests(Problem):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, decision: RateLimitDecision) -> None:
        retry_after = decision.retry_after_seconds
        super().__init__(
            f"the {decision.kind} limit of {decision.limit} requests is used up; "
            f"retry in {retry_after} s",
            headers={"Retry-After": str(retry_after), **decision.headers()},
        )


def limit_kind(method: str) -> str:
    return "write" if method in WRITE_METHODS else "read"


# limits' sliding window counter, acquiring an entry and reading the window back in one
# script: limits' Redis strategy takes two round trips per request (acquire, then the window
# for the X-RateLimit headers), each costing more CPU in the client than the whole local check.
# KEYS: the previous and the current window; ARGV: limit, window length in seconds.
# Returns {acquired, previous count, previous ttl ms, current count, current ttl ms}.
_ACQUIRE_AND_READ_WINDOW = """
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2]) * 1000
local current_ttl = tonumber(redis.call('pttl', KEYS[2]))
if current_ttl > 0 and current_ttl < expiry then
    -- The current window has ended: it becomes the previous one.
    redis.call('rename', KEYS[2], KEYS[1])
    redis.call('set', KEYS[2], 0, 'PX', current_ttl + expiry)
end
local previous_count = tonumber(redis.call('get', KEYS[1])) or 0
local previous_ttl = math.max(0, tonumber(redis.call('pttl', KEYS[1])))
local current_count = tonumber(redis.call('get', KEYS[2])) or 0
current_ttl = math.max(0, tonumber(redis.call('pttl', KEYS[2])))
local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count
if weighted + 1 > limit then
    return {0, previous_count, previous_ttl, current_count, current_ttl}
end
if redis.call('exists', KEYS[2]) == 1 then
    current_count = redis.call('incrby', KEYS[2], 1)
else
    redis.call('set', KEYS[2], 1, 'PX', expiry * 2)
    current_count = 1
    current_ttl = expiry * 2
end
return {1, previous_count, previous_ttl, current_count, current_ttl}
"""


def _window_decision(
    kind: str,
    item: RateLimitItem,
    acquired: bool,
    previous_count: int,
    previous_ttl: float,
    current_count: int,
    current_ttl: float,
) -> RateLimitDecision:
    """The decision and the X-RateLimit figures from a window's counts and lifetimes (in
    seconds), as limits' ``SlidingWindowCounterRateLimiter.get_window_stats`` computes them."""
    expiry = item.get_expiry()
    weighted = previous_count * previous_ttl / expiry + current_count
    reset_in = math.inf
    if previous_count:
        reset_in = previous_ttl % (expiry / previous_count)
    if current_count:
        reset_in = min(reset_in, current_ttl % expiry)
    now = time.time()
    return RateLimitDecision(
        kind,
        acquired,
        item.amount,
        max(0, item.amount - math.floor(weighted)),
        now if reset_in == math.inf else now + reset_in,
    )


class SharedWindows:
    """Sliding window counters in Redis, shared by every worker and replica."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._script = Redis(connection_pool=pool).register_script(_ACQUIRE_AND_READ_WINDOW)

    async def hit(self, item: RateLimitItem, kind: str, key: str) -> RateLimitDecision:
        current = f"flyswatter:{item.key_for(kind, key)}"
        window = await self._script(
            keys=[f"{current}/-1", current], args=[item.amount, item.get_expiry()]
        )
        acquired, previous_count, previous_ttl, current_count, current_ttl = (
            int(value) for value in window
        )
        return _window_decision(
            kind,
            item,
            bool(acquired),
            previous_count,
            previous_ttl / 1000,
            current_count,
            current_ttl / 1000,
        )


class LocalWindows:
    """The same sliding window counters in this process's memory: for a single process, and
    for each worker while Redis is unreachable.

    Plain arithmetic on a dict: limits' asyncio memory storage gave the same answers for
    about four times the CPU (two awaited calls, each taking a lock), the largest part of the
    middleware stack's cost. Windows are aligned on multiples of their length.
    """

    # Windows that ended more than a window ago count for nothing; they are dropped every
    # so many hits, so that the dict holds only recent callers.
    SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        # key -> [start of the current window, its count, the previous window's count, length]
        self._windows: dict[str, list[float]] = {}
        self._hits = 0

    def __len__(self) -> int:
        return len(self._windows)

    async def hit(self, item: RateLimitItem, kind: str, key: str) -> RateLimitDecision:
        expiry = item.get_expiry()
        now = time.time()
        start = now - now % expiry
        name = item.key_for(kind, key)
        window = self._windows.get(name)
        if window is None:
            window = self._windows[name] = [start, 0, 0, expiry]
        elif window[0] != start:
            # The current window ended; it is the previous one only if it was the last one.
            window[2] = window[1] if window[0] == start - expiry else 0
            window[0], window[1] = start, 0
        previous_ttl = start + expiry - now
        weighted = math.floor(window[2] * previous_ttl / expiry) + window[1]
        acquired = weighted + 1 <= item.amount
        if acquired:
            window[1] += 1
        self._hits += 1
        if self._hits % self.SWEEP_EVERY == 0:
            self._windows = {
                name: kept for name, kept in self._windows.items() if now - kept[0] < 2 * kept[3]
            }
        return _window_decision(
            kind,
            item,
            acquired,
            int(window[2]),
            previous_ttl,
            int(window[1]),
            previous_ttl + expiry,
        )


class RateLimiter:
    """The write and read budgets, and where their counters live."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self._items: dict[str, RateLimitItem] = {
            "write": parse(settings.rate_limit_writes),
            "read": parse(settings.rate_limit_reads),
        }
        self._local = LocalWindows()
        self._pool: ConnectionPool | None = None
        self._shared: SharedWindows | None = None
        self._shared_down_until = 0.0
        if settings.redis_url and self.enabled:
            self._pool = ConnectionPool.from_url(
                settings.redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._shared = SharedWindows(self._pool)

    async def hit(self, kind: str, key: str) -> RateLimitDecision:
        """Spend one request of ``key``'s ``kind`` budget."""
        item = self._items[kind]
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                decision = await self._shared.hit(item, kind, key)
            except (RedisError, OSError) as failure:
                self._shared_down(failure)
            else:
                if self._shared_down_until:
                    self._shared_down_until = 0.0
                    logger.info("rate limits: Redis is back; limits are shared again")
                return decision
        return await self._local.hit(item, kind, key)

    def _shared_down(self, failure: Exception) -> None:
        RATE_LIMIT_STORAGE_ERRORS.inc()
        if not self._shared_down_until:
            # The exception's message may carry the Redis URL and its password; log the kind.
            logger.warning(
                "rate limits: Redis unreachable (%s); workers limit on their own until it is back",
                type(failure).__name__,
            )
        self._shared_down_until = time.monotonic() + SHARED_STORAGE_RETRY_SECONDS

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()


async def enforce_rate_limit(request: Request) -> None:
    """Spend one request of the authenticated caller's budget; 429 when it is used up.

    Called by ``authenticate`` once ``principal_key`` is known. A route whose dependencies
    authenticate twice still spends one request.
    """
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    state = request.scope.setdefault("state", {})
    if limiter is None or not limiter.enabled or _STATE_KEY in state:
        return
    principal_key = request_context(request.scope).principal_key
    assert principal_key is not None, "called once the caller is authenticated"
    decision = await limiter.hit(limit_kind(request.method), principal_key)
    state[_STATE_KEY] = decision
    if not decision.allowed:
        RATE_LIMITED.labels(decision.kind).inc()
        raise TooManyRequests(decision)


class RateLimitMiddleware:
    """Adds ``X-RateLimit-*`` to every limited response and limits failed authentication by IP.

    A 401 is known only once the token has been checked, so the caller's address is charged
    then; past its budget the 401 is replaced by a 429. Pure ASGI, like every middleware here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        replaced = False

        async def send_with_limits(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the body of the 401 a 429 stood in for
            if message["type"] == "http.response.start":
                if message["status"] == 401 and request_context(scope).auth_failure:
                    refusal = await self._charge_address(scope)
                    if refusal is not None:
                        replaced = True
                        await refusal(scope, receive, send)
                        return
                decision: RateLimitDecision | None = state.get(_STATE_KEY)
                if decision is not None:
                    add_missing_headers(message, decision.raw_headers())
            await send(message)

        await self.app(scope, receive, send_with_limits)

    @staticmethod
    async def _charge_address(scope: Scope) -> ProblemResponse | None:
        limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
        if limiter is None or not limiter.enabled:
            return None
        request = Request(scope)
        decision = await limiter.hit(
            limit_kind(scope["method"]), f"ip:{get_remote_address(request)}"
        )
        scope["state"][_STATE_KEY] = decision
        if decision.allowed:
            return None
        RATE_LIMITED.labels(decision.kind).inc()
        return problem_response_for(request, TooManyRequests(decision))
