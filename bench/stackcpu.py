"""The middleware stack's CPU cost without the server: the app called directly, in one process.

Served under uvicorn and loaded by wrk (``bench.stack``), each request also costs the
HTTP server its parsing and socket work, and on a shared machine the CPU time per request
moves by more than the stack costs. Here the variants of ``bench.stackapp`` are built
side by side in one process and called through a minimal ASGI driver, one request at a
time, in interleaved blocks; the process's CPU time per request of each block is compared
with the bare variant's in the same round. What uvicorn adds is the same for every variant,
so the difference is what the stack costs, with far less noise.

Run by ``bench.stack`` in a child process (it configures logging, as ``serve`` does,
and the access log must not reach the benchmark's terminal): ``python -m bench.stackcpu``
reads its job as JSON on stdin and prints the result as JSON on stdout's last line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from fastapi import FastAPI
from starlette.types import Message

from bench.stackapp import build
from flyswatter.observability.logs import configure_logging


async def call(app: FastAPI, path: str, authorization: bytes) -> int:
    """One GET through the app's whole ASGI stack; returns the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", authorization)],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    received = False
    status = 0

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the request is answered first
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(job: dict[str, Any]) -> dict[str, Any]:
    """CPU µs per request of each variant on each route, one figure per round."""
    authorization = f"Bearer {job['token']}".encode()
    count, rounds = job["requests"], job["rounds"]
    variants: dict[str, dict[str, Any]] = job["variants"]
    root = logging.getLogger()
    async with AsyncExitStack() as stack:
        apps: dict[str, FastAPI] = {}
        for name, spec in variants.items():
            app = build(frozenset(spec["without"]), log=False, **spec["overrides"])
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[name] = app
        results: dict[str, dict[str, list[float]]] = {}
        for route in job["routes"]:
            path = route["path"]
            names = [name for name in apps if route["probe"] or not variants[name]["probe_only"]]
            for name in names:  # warm-up: caches, the pool, the user mirror, label children
                for _ in range(min(count, 200)):
                    status = await call(apps[name], path, authorization)
                    assert status == 200, (name, path, status)
            cpu_us: dict[str, list[float]] = {name: [] for name in names}
            for round_number in range(rounds):
                for name in names if round_number % 2 == 0 else reversed(names):
                    # The log level is the process's: set per block (full_quiet logs nothing).
                    root.setLevel(variants[name]["log_level"].upper())
                    # Every block starts without the previous one's garbage to collect.
                    gc.collect()
                    started = time.process_time()
                    for _ in range(count):
                        await call(apps[name], path, authorization)
                    cpu_us[name].append((time.process_time() - started) / count * 1e6)
            results[route["name"]] = cpu_us
    return results


def main() -> None:
    job = json.loads(sys.stdin.read())
    # As serve configures it; the child's stderr is a file, as a container's is a pipe.
    configure_logging("json", "info")
    print(json.dumps(asyncio.run(measure(job))))


if __name__ == "__main__":
    main()
