"""Per-principal rate limits: slowapi's ``Limiter``, its key, its headers and the 429 problem."""

from flyswatter.ratelimit.limiter import (
    TooManyRequests,
    build_limiter,
    close_limiter,
    enforce_rate_limit,
    rate_limit_key,
)
from flyswatter.ratelimit.middleware import RateLimitMiddleware

__all__ = [
    "RateLimitMiddleware",
    "TooManyRequests",
    "build_limiter",
    "close_limiter",
    "enforce_rate_limit",
    "rate_limit_key",
]
