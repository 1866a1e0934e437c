"""Per-principal rate limits: writes and reads budgeted apart, shared by workers through Redis.

The limits are slowapi's: the same limit strings (``120/minute``) and the same engine,
``limits``, that slowapi drives. slowapi's own request check is synchronous and bound to
route decorators, so a Redis round trip there would block the event loop; the check here
runs on ``limits``' asyncio API instead (``async+redis://`` through redis-py's asyncio
client, already a dependency), once per request, right after the caller is authenticated.

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
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from slowapi.util import get_remote_address
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flyswatter.config import Settings
from flyswatter.errors import Problem, ProblemResponse, problem_response
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


class RateLimiter:
    """The write and read budgets, and where their counters live."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self._items: dict[str, RateLimitItem] = {
            "write": parse(settings.rate_limit_writes),
            "read": parse(settings.rate_limit_reads),
        }
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._pool: ConnectionPool | None = None
        self._shared: SlidingWindowCounterRateLimiter | None = None
        self._shared_down_until = 0.0
        if settings.redis_url and self.enabled:
            self._pool = ConnectionPool.from_url(
                settings.redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
            storage = RedisStorage(
                "async+" + settings.redis_url,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix="flyswatter",
                # Ours, so that shutdown can close its connections (limits' options say str).
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self._shared = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, kind: str, key: str) -> RateLimitDecision:
        """Spend one request of ``key``'s ``kind`` budget."""
        item = self._items[kind]
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                decision = await self._hit(self._shared, item, kind, key)
            except StorageError as failure:
                self._shared_down(failure)
            else:
                if self._shared_down_until:
                    self._shared_down_until = 0.0
                    logger.info("rate limits: Redis is back; limits are shared again")
                return decision
        return await self._hit(self._local, item, kind, key)

    @staticmethod
    async def _hit(
        strategy: SlidingWindowCounterRateLimiter, item: RateLimitItem, kind: str, key: str
    ) -> RateLimitDecision:
        allowed = await strategy.hit(item, kind, key)
        stats = await strategy.get_window_stats(item, kind, key)
        return RateLimitDecision(kind, allowed, item.amount, stats.remaining, stats.reset_time)

    def _shared_down(self, failure: StorageError) -> None:
        RATE_LIMIT_STORAGE_ERRORS.inc()
        if not self._shared_down_until:
            # The exception's message may carry the Redis URL and its password; log the kind.
            logger.warning(
                "rate limits: Redis unreachable (%s); workers limit on their own until it is back",
                type(failure.storage_error).__name__,
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
    state = request.scope["state"]
    if limiter is None or not limiter.enabled or _STATE_KEY in state:
        return
    decision = await limiter.hit(limit_kind(request.method), state["principal_key"])
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
                if message["status"] == 401 and "auth_failure" in state:
                    refusal = await self._charge_address(scope)
                    if refusal is not None:
                        replaced = True
                        await refusal(scope, receive, send)
                        return
                decision: RateLimitDecision | None = state.get(_STATE_KEY)
                if decision is not None:
                    headers = MutableHeaders(scope=message)
                    for name, value in decision.headers().items():
                        headers.setdefault(name, value)
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
        refusal = TooManyRequests(decision)
        return problem_response(
            request,
            refusal.status,
            slug=refusal.slug,
            title=refusal.title,
            detail=refusal.detail,
            headers=refusal.headers,
        )
