"""The rate limiter's check alone, without the app: its storages side by side in one process.

``python -m bench.limiter`` builds the service's limiter (``build_limiter``) once per storage
and times what a request spends in it: the check (``check``: one hit of the caller's
budget) and the ``X-RateLimit-*`` headers (``response_limit_headers``). The storages:
limits' own ``MemoryStorage``, the service's ``SweptMemoryStorage`` (memory mode) and Redis (a
server of the run's own, on loopback). Figures are the process' CPU time per request (every
thread's), minus the bare loop's (the same loop, no limiter) in the same round; medians over
interleaved rounds. Two paces: back to back, and one request a millisecond with the process
idle in between, as requests arrive at a served worker (limits' memory storage starts its
expiry timer thread on the first hit 10 ms after its last sweep, so only a paced loop shows
what that costs).

    .venv/bin/python -m bench.limiter              # into bench/RESULTS.md
    .venv/bin/python -m bench.limiter --no-write
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from limits.storage import MemoryStorage
from slowapi import Limiter
from starlette.requests import Request

from bench.sections import RunFacts, private_redis, run_part
from flyswatter.config import Settings
from flyswatter.ratelimit.limiter import build_limiter, check, response_limit_headers

COMMAND = "python -m bench.limiter"
STORAGES = ("limits_memory", "swept_memory", "redis")
UNBOUNDED = "100000000/minute"


def limiter_on(storage: str, redis_url: str) -> Limiter:
    settings = Settings(
        rate_limit_enabled=True,
        rate_limit_reads=UNBOUNDED,
        rate_limit_writes=UNBOUNDED,
        redis_url=redis_url if storage == "redis" else None,
    )
    limiter = build_limiter(settings)
    if storage == "limits_memory":
        limiter._storage = MemoryStorage()
        limiter._limiter = type(limiter._limiter)(limiter._storage)
    return limiter


def a_request() -> Request:
    scope = {"type": "http", "method": "GET", "path": "/api/v1/users/me", "headers": []}
    return Request({**scope, "client": ("127.0.0.1", 40000), "state": {}, "query_string": b""})


def spend(limiter: Limiter | None) -> Callable[[], None]:
    def one() -> None:
        request = a_request()
        if limiter is not None:
            check(limiter, request)
            response_limit_headers(limiter, request)

    return one


def cpu_us_per_call(call: Callable[[], None], count: int, pause: float) -> float:
    started = time.process_time()
    for _ in range(count):
        call()
        if pause:
            time.sleep(pause)
    return (time.process_time() - started) / count * 1e6


def measure(args: argparse.Namespace) -> dict[str, Any]:
    facts = RunFacts.now()
    paces = {"back_to_back": (args.calls, 0.0), "paced_1ms": (args.paced_calls, 0.001)}
    with private_redis() as redis_url:
        calls = {"bare": spend(None)} | {
            storage: spend(limiter_on(storage, redis_url)) for storage in STORAGES
        }
        for call in calls.values():
            for _ in range(200):  # warm-up: connections, caches, first windows
                call()
        raw: dict[str, dict[str, list[float]]] = {pace: {} for pace in paces}
        for _ in range(args.rounds):
            for pace, (count, pause) in paces.items():
                for name, call in calls.items():
                    raw[pace].setdefault(name, []).append(cpu_us_per_call(call, count, pause))
    facts.finish()
    figures = {
        pace: {
            name: {
                "cpu_us": statistics.median(values),
                "over_bare_us": statistics.median(
                    value - bare for value, bare in zip(values, rounds["bare"], strict=True)
                ),
            }
            for name, values in rounds.items()
        }
        for pace, rounds in raw.items()
    }
    return {"facts": facts.__dict__, "rounds": args.rounds, "figures": figures, "raw": raw}


def section(result: dict[str, Any]) -> list[str]:
    facts = RunFacts(**result["facts"])
    lines = [
        "## The rate limiter's check alone (memory and Redis)",
        "",
        facts.line(COMMAND),
        "",
        f"The check and the headers of one request, {result['rounds']} interleaved rounds; CPU "
        "µs per request (every thread of the process), median over rounds, and the median of "
        "the round-by-round difference to the bare loop (the same requests, no limiter).",
        "",
        "| storage | back to back µs | over bare | one a millisecond µs | over bare |",
        "|---|---:|---:|---:|---:|",
    ]
    back, paced = result["figures"]["back_to_back"], result["figures"]["paced_1ms"]
    for name in ("bare", *STORAGES):
        lines.append(
            f"| {name} | {back[name]['cpu_us']:,.1f} | {back[name]['over_bare_us']:,.1f} | "
            f"{paced[name]['cpu_us']:,.1f} | {paced[name]['over_bare_us']:,.1f} |"
        )
    saved = paced["limits_memory"]["over_bare_us"] - paced["swept_memory"]["over_bare_us"]
    lines += [
        "",
        f"Memory mode, paced: the service's storage costs {saved:,.1f} µs a request less than "
        "limits' own, whose expiry timer thread it replaces with an inline sweep at most once "
        "a second. Redis: two synchronous round trips a request (limits' hit, then its window "
        "for the headers).",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000, help="back-to-back calls a block")
    parser.add_argument("--paced-calls", type=int, default=1000, help="paced calls a block")
    run_part(parser, "limiter", measure, section, argv)


if __name__ == "__main__":
    main()
