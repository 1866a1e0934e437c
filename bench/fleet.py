"""The replica fleet: throughput of three ``flyswatter serve`` replicas behind HAProxy against
one, with the CPU each used and ``/metrics`` scrape time per replica.

``python -m bench.fleet`` starts three replicas (two workers each, multiprocess metrics,
rate limits in a Redis of the run's own, as a fleet runs) on the benchmark's 10,000-issue
database (``python -m bench``'s, seeded when missing), and two HAProxy instances with the
tests' configuration (tests/support/balancer.py: health checks on ``/readyz``, here every
2 s, round robin, one server connection per request): one holding replica 0 only, one holding all three. wrk
drives a read (get an issue by key) through each in interleaved rounds, and through replica
0 directly, without a balancer. The figure is the ratio of the three replicas' throughput to
the one replica's, through the same balancer. Then each replica's ``/metrics`` is scraped in
turn, on a new connection each time.

    .venv/bin/python -m bench.fleet                   # into bench/RESULTS.md
    .venv/bin/python -m bench.fleet --rounds 1 --seconds 5 --no-write
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.bench import Scenario, ensure_wrk, verdict, wrk
from bench.sections import (
    RunFacts,
    children,
    database_url,
    group_cpu_seconds,
    identity,
    percentile,
    private_redis,
    process_cpu_seconds,
    run_part,
    served,
)
from bench.seed import BENCH_USER, ensure_database, issue_count, seed
from tests.support.balancer import Balancer
from tests.support.servers import ServedFlyswatter

COMMAND = "python -m bench.fleet"
SIZE = 10_000
READ = Scenario("get_issue", "GET", "/api/v1/issues/P002-5")
# Under load a replica may answer /readyz in more than the tests' 300 ms check timeout, and one
# miss would take it out: a check every 2 s (its timeout too), out after three misses.
CHECKS = "inter 2s fall 3 rise 2"
SCRAPE_TARGET_MS = 50.0


@dataclass
class Target:
    """Where wrk sends its load, and the processes whose CPU time counts as serving it."""

    base: str
    pids: list[int]

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.pids)


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def scrape_times(replica: ServedFlyswatter, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = httpx.get(f"{replica.base_url}/metrics", timeout=10)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.status_code
    return times


def measure(args: argparse.Namespace) -> dict[str, Any]:
    ensure_wrk()
    facts = RunFacts.now()
    root = Path(tempfile.mkdtemp(prefix="flyswatter-bench-fleet-"))
    url = ensure_database(database_url("postgres"), f"flyswatter_bench_{SIZE}")
    if issue_count(url) not in (None, SIZE):
        raise SystemExit(
            f"flyswatter_bench_{SIZE} is not the benchmark's data set: see python -m bench --reseed"
        )
    seed(url, SIZE)
    replicas: list[ServedFlyswatter] = []
    balancers: list[Balancer] = []
    result: dict[str, Any] = {"workers": args.workers, "replicas": args.replicas}
    with private_redis() as redis_url, identity() as (jwks, tokens):
        token = tokens.sign(
            tokens.claims(
                sub=BENCH_USER,
                preferred_username="user1",
                exp=int(time.time()) + 3600,
                realm_access={"roles": []},
            )
        )
        try:
            for index in range(args.replicas):
                metrics = root / f"metrics-{index}"
                metrics.mkdir()
                replicas.append(
                    served(
                        url,
                        jwks,
                        redis_url,
                        root / f"serve-{index}.log",
                        workers=args.workers,
                        metrics_dir=metrics,
                        database_pool_size=10,
                    )
                )
                replicas[-1].start(timeout=180)
            for name, held in (("one", replicas[:1]), ("all", replicas)):
                (root / name).mkdir()
                ports = [replica.port for replica in held]
                balancers.append(Balancer(root / name, ports, checks=CHECKS))
                balancers[-1].start()
            one, every = balancers
            pids = [children(replica.process.pid) for replica in replicas if replica.process]
            targets = {
                "1 replica, direct": Target(replicas[0].base_url, pids[0]),
                "1 replica via HAProxy": Target(one.url, pids[0]),
                f"{args.replicas} replicas via HAProxy": Target(
                    every.url, [pid for group in pids for pid in group]
                ),
            }
            proxies = {"1 replica, direct": None, "1 replica via HAProxy": one}
            proxies[f"{args.replicas} replicas via HAProxy"] = every
            for target in targets.values():  # warm-up, discarded
                wrk(target, READ.path, READ, token, 3, args.connections)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for round_number in range(args.rounds):
                print(f"round {round_number + 1}/{args.rounds}", flush=True)
                for name, target in targets.items():
                    proxy = proxies[name]
                    before = [group_cpu_seconds(group) for group in pids]
                    proxy_before = (
                        process_cpu_seconds(proxy.process.pid) if proxy and proxy.process else 0.0
                    )
                    load_before = children_cpu()
                    measured, _ = wrk(
                        target, READ.path, READ, token, args.seconds, args.connections
                    )
                    seconds = measured["seconds"]
                    runs[name].append(
                        {
                            # Answered with a 2xx: an error answered fast is no throughput.
                            "rps": (measured["requests"] - measured["non2xx"]) / seconds,
                            "p50_ms": measured["p50_ms"],
                            "p99_ms": measured["p99_ms"],
                            "errors": measured["errors"] + measured["non2xx"],
                            "replica_cpu": [
                                (group_cpu_seconds(group) - start) / seconds
                                for group, start in zip(pids, before, strict=True)
                            ],
                            "haproxy_cpu": (
                                (process_cpu_seconds(proxy.process.pid) - proxy_before) / seconds
                                if proxy and proxy.process
                                else 0.0
                            ),
                            "wrk_cpu": (children_cpu() - load_before) / seconds,
                        }
                    )
                    print(f"  {name}: {runs[name][-1]['rps']:,.0f} req/s", flush=True)
            result["runs"] = runs
            result["scrape_ms"] = [scrape_times(replica, args.scrapes) for replica in replicas]
            result["series_bytes"] = [
                len(httpx.get(f"{replica.base_url}/metrics", timeout=10).content)
                for replica in replicas
            ]
        finally:
            for balancer in balancers:
                balancer.stop()
            for replica in replicas:
                replica.stop()
    facts.finish()
    result["facts"] = facts.__dict__
    result["connections"] = args.connections
    result["seconds"] = args.seconds
    result["rounds"] = args.rounds
    return result


def section(result: dict[str, Any]) -> list[str]:
    facts = RunFacts(**result["facts"])
    runs = result["runs"]
    names = list(runs)
    median = {name: statistics.median(run["rps"] for run in runs[name]) for name in names}
    one, every = names[1], names[2]
    rows = []
    for name in names:
        per_replica = [
            statistics.median(run["replica_cpu"][index] for run in runs[name])
            for index in range(result["replicas"])
        ]
        rows.append(
            f"| {name} | {median[name]:,.0f} | "
            f"{statistics.median(run['p50_ms'] for run in runs[name]):.1f} | "
            f"{statistics.median(run['p99_ms'] for run in runs[name]):.1f} | "
            + ", ".join(f"{cpu:.2f}" for cpu in per_replica)
            + f" | {statistics.median(run['haproxy_cpu'] for run in runs[name]):.2f} | "
            f"{statistics.median(run['wrk_cpu'] for run in runs[name]):.2f} | "
            f"{sum(run['errors'] for run in runs[name])} |"
        )
    scrapes = [
        f"| replica {index} | {statistics.median(times):.1f} | {percentile(times, 0.95):.1f} | "
        f"{max(times):.1f} | {result['series_bytes'][index] / 1024:,.1f} KiB | "
        f"{verdict(percentile(times, 0.95) <= SCRAPE_TARGET_MS)} (p95) |"
        for index, times in enumerate(result["scrape_ms"])
    ]
    factor = median[every] / median[one]
    used = {
        name: sum(
            statistics.median(run["replica_cpu"][index] for run in runs[name])
            for index in range(result["replicas"])
        )
        for name in names
    }
    return [
        f"## The replica fleet ({result['replicas']} replicas against 1)",
        "",
        facts.line(COMMAND),
        "",
        f"{result['replicas']} `flyswatter serve` replicas, {result['workers']} workers each "
        "(multiprocess metrics, rate limits in Redis, JSON logs at warning), on the 10,000-issue "
        "database; HAProxy with the tests' configuration (tests/support/balancer.py: round robin, "
        "one server connection per request) but `/readyz` checked every 2 s, out after three "
        "misses (the tests' 300 ms took the lone replica out under load). wrk: one thread, "
        f"{result['connections']} keep-alive connections, get an issue by key (req/s: 2xx "
        "answers only; errors: non-2xx answers and socket errors), "
        f"{result['rounds']} interleaved rounds of {result['seconds']} s after a warm-up; "
        "medians over rounds. CPU: cores used (CPU seconds per second) by each replica's "
        "processes (supervisor and workers, from /proc), by HAProxy and by wrk.",
        "",
        "| target | req/s | p50 ms | p99 ms | CPU per replica (cores) | HAProxy (cores) "
        "| wrk (cores) | errors |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
        *rows,
        "",
        f"Scaling factor ({result['replicas']} replicas / 1, both through HAProxy): "
        f"**{factor:.2f}x**. The machine has {os.cpu_count()} cores for the replicas, HAProxy, "
        "wrk, PostgreSQL and Redis together, so the factor is bounded by the cores, not by the "
        "replicas: what the table shows is where the cores went. The replicas used "
        f"{used[one]:.2f} cores in all with one replica and {used[every]:.2f} with "
        f"{result['replicas']}; CPU per request: "
        f"{used[one] / median[one] * 1e6:,.0f} µs with one and "
        f"{used[every] / median[every] * 1e6:,.0f} µs with {result['replicas']}. The rest of the "
        "cores went to PostgreSQL, Redis and the machine's other work (the load average).",
        "",
        "`/metrics` per replica after the load (sequential scrapes, a new connection each, timed "
        "by the client; target as for the 4-worker part above: "
        f"p95 <= {SCRAPE_TARGET_MS:.0f} ms):",
        "",
        "| replica | median ms | p95 ms | max ms | body | target |",
        "|---|---:|---:|---:|---:|---|",
        *scrapes,
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="workers per replica")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes per replica")
    run_part(parser, "fleet", measure, section, argv)


if __name__ == "__main__":
    main()
