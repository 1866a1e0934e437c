"""What the latency histogram's buckets cost a multiprocess ``/metrics`` render.

``python -m bench.histogram_cost`` writes samples the way four ``serve`` workers do (one
process each, into a fresh ``PROMETHEUS_MULTIPROC_DIR``): the request latency histogram by
method and route, and the request counter by method, route and status (two statuses each),
for N routes. It then times the render ``/metrics`` runs (prometheus_client's
``MultiProcessCollector`` and ``generate_latest``), as process CPU time, median of 20. Three
cases: the service's 13 buckets on this release's routes, 8 buckets on the same routes, and
13 buckets on the first release's count of routes (the baseline). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from flyswatter.observability.metrics import HTTP_LATENCY

SERVICE_BUCKETS = tuple(HTTP_LATENCY._upper_bounds[:-1])  # without +Inf
FEWER_BUCKETS = (0.0025, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
WORKERS = 4


def write_worker_samples(buckets: tuple[float, ...], routes: int) -> None:
    """One worker's samples, in this process (its pid names its files)."""
    from prometheus_client import Counter, Histogram

    latency = Histogram("latency_seconds", "latency", ["method", "route"], buckets=buckets)
    requests = Counter("requests", "requests", ["method", "route", "status"])
    for number in range(routes):
        route = f"/api/v1/route/{number}"
        latency.labels("GET", route).observe(0.01)
        for status in ("200", "404"):
            requests.labels("GET", route, status).inc()


def render_ms(buckets: tuple[float, ...], routes: int) -> tuple[float, int]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    with tempfile.TemporaryDirectory(prefix="flyswatter-bench-histogram-") as directory:
        bounds = ",".join(map(str, buckets))
        for _ in range(WORKERS):
            # The directory is set before the child imports prometheus_client, which reads
            # it once, at import.
            subprocess.run(
                [sys.executable, "-m", "bench.histogram_cost", "--worker", bounds, str(routes)],
                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
                check=True,
            )
        timings, lines = [], 0
        for _ in range(21):
            started = time.process_time()
            registry = CollectorRegistry()  # as render_metrics builds one per scrape
            MultiProcessCollector(registry, path=directory)
            text = generate_latest(registry)
            timings.append((time.process_time() - started) * 1000)
            lines = len(text.splitlines())
    return statistics.median(timings[1:]), lines


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        write_worker_samples(tuple(map(float, sys.argv[2].split(","))), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.histogram_cost", description=__doc__)
    parser.add_argument("--routes", type=int, default=104, help="this release's (method, route)")
    parser.add_argument("--first-release-routes", type=int, default=45)
    args = parser.parse_args()
    cases = [
        (f"{len(SERVICE_BUCKETS)} buckets (the service's)", SERVICE_BUCKETS, args.routes),
        (f"{len(FEWER_BUCKETS)} buckets", FEWER_BUCKETS, args.routes),
        (f"{len(SERVICE_BUCKETS)} buckets, baseline", SERVICE_BUCKETS, args.first_release_routes),
    ]
    print("| histogram | routes | render ms | lines |")
    print("|---|---:|---:|---:|")
    for name, buckets, routes in cases:
        milliseconds, lines = render_ms(buckets, routes)
        print(f"| {name} | {routes} | {milliseconds:.1f} | {lines:,} |")


if __name__ == "__main__":
    main()
