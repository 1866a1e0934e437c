"""The worker's own HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz`` for compose.

The worker's pool processes write their samples to a shared ``PROMETHEUS_MULTIPROC_DIR``, as
the API's workers do; the main process sums the job and webhook metrics here. ``/healthz``
answers 200 when the broker answers a ping, so an orchestrator restarts a worker that lost it
for good.

The endpoint runs on threads of the worker's main process, which Celery forks: beat and the
pool processes as the worker starts, a pool process again whenever one dies. A fork copies
every lock as it is at that instant, held or not, and the child then waits for ever on one a
thread of the parent held. kombu's ``cached_property`` takes a class-wide lock on every read,
and a broker check made through Celery's connection objects reads several: a CI run showed a
beat that started and never sent a task, which a fork during the first such check explains.
Hence the endpoint answers only once the worker is ready (its first forks done), and
``/healthz`` pings Redis with a redis-py client of its own, touching none of the objects the
children use.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from celery.signals import worker_ready
from redis import Redis

if TYPE_CHECKING:
    from prometheus_client import Metric

logger = logging.getLogger("flyswatter.jobs")


def broker_reachable(client: Redis) -> bool:
    try:
        client.ping()
    except Exception as exc:
        logger.warning("health: broker unreachable (%s)", type(exc).__name__)
        return False
    return True


# The families the worker counts: jobs, and webhook deliveries.
WORKER_METRIC_PREFIXES = ("flyswatter_jobs_", "flyswatter_job_", "flyswatter_webhook_")


def worker_metrics_renderer() -> Callable[[], bytes]:
    """The exposition of the job and webhook metrics summed over this worker's processes.

    Only the worker's families: it imports the API's metric definitions too, and their
    zero-valued series would sit beside the API's own under the same names.
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector

    from flyswatter.observability.exposition import remove_dead_workers
    from flyswatter.observability.multiprocess import MULTIPROC_DIR_ENV

    directory = os.environ[MULTIPROC_DIR_ENV]

    class JobMetrics(Collector):
        def __init__(self) -> None:
            self.processes = MultiProcessCollector(None, path=directory)

        def collect(self) -> Iterator[Metric]:
            for metric in self.processes.collect():
                if metric.name.startswith(WORKER_METRIC_PREFIXES):
                    yield metric

    registry = CollectorRegistry()
    registry.register(JobMetrics())

    def render() -> bytes:
        remove_dead_workers(Path(directory))
        return generate_latest(registry)

    return render


def serve_worker_endpoint(broker_url: str, host: str, port: int) -> ThreadingHTTPServer:
    """Bind the endpoint now (a port taken fails the start), serve it on a daemon thread of
    this process once the worker is ready; returns the server."""
    # Imported here: prometheus_client must see PROMETHEUS_MULTIPROC_DIR, set at start-up.
    from prometheus_client import CONTENT_TYPE_LATEST

    render_metrics = worker_metrics_renderer()
    broker = Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=2)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                status, body, content_type = 200, render_metrics(), CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                ok = broker_reachable(broker)
                status = 200 if ok else 503
                body = b"ok\n" if ok else b"broker unreachable\n"
                content_type = "text/plain"
            else:
                status, body, content_type = 404, b"not found\n", "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes every few seconds: nothing worth a log line.
            return

    server = ThreadingHTTPServer((host, port), Handler)

    def serve(**_: object) -> None:
        worker_ready.disconnect(serve)  # once, whatever else in this process gets ready
        threading.Thread(target=server.serve_forever, name="worker-endpoint", daemon=True).start()

    worker_ready.connect(serve, weak=False)
    return server
