"""What the middleware stack (request id and access log, HTTP metrics, rate limits) costs.

The same app and routes (``bench.stackapp``) are served by one uvicorn process per
variant: the service as ``create_app`` builds it, with the limiter's counters in memory (one
process) or in Redis (several workers, as production runs), with and without the access log,
and the same app with the three middlewares and the limiter removed. wrk drives each route of
each variant for the same time, the variants alternating within every round (their order
reversed every other round), and the server's CPU time per request is compared: the
difference to the bare variant is what the stack costs. Two routes: the probe, which
authenticates and answers without a query, and ``/api/v1/users/me`` (one query). On the
probe, variants without one piece each (request context, metrics, limiter) price the pieces.
The same variants are then measured without the server (``bench.stackcpu``), which is
far steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench import (
    PYTHON,
    ROOT,
    Measurement,
    Scenario,
    Server,
    service_env,
    uvicorn_server,
    wrk,
)
from bench.stackapp import PIECES, PROBE_PATH, WITHOUT_ENV
from tests.support.identity import JwksServer

TARGET_US = 60.0
# The Redis database the limiter's counters go to in these runs; keys expire within a minute.
REDIS_URL = "redis://127.0.0.1:6379/13"
BARE = "bare"
FULL = "full_memory"
INFO = {"FLYSWATTER_LOG_LEVEL": "info"}


@dataclass(frozen=True)
class Variant:
    without: tuple[str, ...]
    env: dict[str, str]
    doc: str
    # The pieces one by one are priced on the probe only, where they are not drowned.
    probe_only: bool = False


VARIANTS: dict[str, Variant] = {
    BARE: Variant(tuple(PIECES), INFO, "the three middlewares removed, limiter off"),
    FULL: Variant(
        (), INFO, "create_app as built; limiter in memory; JSON access log at info (production)"
    ),
    "full_redis": Variant(
        (),
        {**INFO, "FLYSWATTER_REDIS_URL": REDIS_URL},
        "as full_memory, limiter counters in Redis (as with several workers)",
    ),
    "full_quiet": Variant(
        (),
        {"FLYSWATTER_LOG_LEVEL": "warning"},
        "as full_memory at log level warning: no access log line written",
    ),
    **{
        f"without_{piece}": Variant(
            (piece,), INFO, f"as full_memory without the {piece} piece", probe_only=True
        )
        for piece in PIECES
    },
}
# Requests per variant and round in process: a block long enough to average out the garbage
# collector and the odd preemption, short enough that the variants alternate often.
IN_PROCESS_REQUESTS = 200
PROBE = Scenario("probe (auth, no query)", "GET", PROBE_PATH)
ROUTES = (PROBE, Scenario("users_me (auth, one query)", "GET", "/api/v1/users/me"))


def measure_stack(
    args: argparse.Namespace, url: str, jwks: JwksServer, token: str
) -> dict[str, Any]:
    env = service_env(url, jwks)
    with ExitStack() as stack:
        # The access log goes to a file, as a container's stdout goes to a pipe, not to a tty.
        logs = stack.enter_context(tempfile.TemporaryDirectory(prefix="flyswatter-stack-"))
        servers: dict[str, Server] = {}
        for name, variant in VARIANTS.items():
            output = stack.enter_context(Path(logs, f"{name}.log").open("wb"))
            servers[name] = stack.enter_context(
                uvicorn_server(
                    name,
                    "bench.stackapp:app",
                    {**env, **variant.env, WITHOUT_ENV: ",".join(variant.without)},
                    factory=True,
                    output=output,
                )
            )
        runs = [
            (route, name)
            for route in ROUTES
            for name, variant in VARIANTS.items()
            if route is PROBE or not variant.probe_only
        ]
        # Warm-up, discarded: imports, the pool, the user mirror, label children.
        for route, name in runs:
            wrk(servers[name], route.path, route, token, 2, args.connections)
        measured: dict[str, dict[str, Measurement]] = {route.name: {} for route in ROUTES}
        for route, name in runs:
            measured[route.name][name] = Measurement()
        for round_number in range(args.rounds):
            print(f"stack: round {round_number + 1}/{args.rounds}", flush=True)
            for route, name in runs if round_number % 2 == 0 else reversed(runs):
                result, cpu = wrk(
                    servers[name], route.path, route, token, args.seconds, args.connections
                )
                measured[route.name][name].add(result, cpu)
    print("stack: in process", flush=True)
    in_process = measure_in_process(args, env, token)
    routes: dict[str, Any] = {}
    for route in ROUTES:
        variants = measured[route.name]
        bare = variants[BARE].cpu_us
        routes[route.name] = {
            "path": route.path,
            "variants": {name: m.__dict__ for name, m in variants.items()},
            # Round by round, so that drifts of the shared machine cancel out.
            "cpu_us_over_bare": {
                name: [ours - base for ours, base in zip(m.cpu_us, bare, strict=True)]
                for name, m in variants.items()
                if name != BARE
            },
        }
    return {
        "target_us": TARGET_US,
        "variants": {name: variant.doc for name, variant in VARIANTS.items()},
        "pieces": {
            piece: f"{FULL} minus without_{piece}, round by round, on the probe" for piece in PIECES
        },
        "routes": routes,
        "in_process": in_process,
    }


def measure_in_process(args: argparse.Namespace, env: dict[str, str], token: str) -> dict[str, Any]:
    """The variants called directly (``bench.stackcpu``), in a child process."""
    # Cheap next to the served rounds, and more blocks make the medians and minima steadier.
    rounds = 4 * args.rounds + 1
    job = {
        "token": token,
        "requests": IN_PROCESS_REQUESTS,
        "rounds": rounds,
        "variants": {
            name: {
                "without": list(variant.without),
                "overrides": (
                    {"redis_url": variant.env["FLYSWATTER_REDIS_URL"]}
                    if "FLYSWATTER_REDIS_URL" in variant.env
                    else {}
                ),
                "log_level": variant.env.get("FLYSWATTER_LOG_LEVEL", "info"),
                "probe_only": variant.probe_only,
            }
            for name, variant in VARIANTS.items()
        },
        "routes": [
            {"name": route.name, "path": route.path, "probe": route is PROBE} for route in ROUTES
        ],
    }
    with tempfile.TemporaryFile() as log:
        child = subprocess.run(
            [PYTHON, "-m", "bench.stackcpu"],
            input=json.dumps(job).encode(),
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, **env},
            cwd=ROOT,
            timeout=3600,
        )
        if child.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"stackcpu failed:\n{log.read().decode()[-3000:]}")
    cpu_us: dict[str, dict[str, list[float]]] = json.loads(child.stdout.splitlines()[-1])
    return {
        "requests_per_block": IN_PROCESS_REQUESTS,
        "rounds": rounds,
        "routes": {
            route: {
                "cpu_us": variants,
                "cpu_us_over_bare": {
                    name: [a - b for a, b in zip(values, variants[BARE], strict=True)]
                    for name, values in variants.items()
                    if name != BARE
                },
            }
            for route, variants in cpu_us.items()
        },
    }
