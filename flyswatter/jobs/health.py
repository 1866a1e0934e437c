"""The worker's own HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz`` for compose.

The worker's pool processes write their samples to a shared ``PROMETHEUS_MULTIPROC_DIR``, as
the API's workers do; the main process sums them here. ``/healthz`` answers 200 when the
broker takes a connection, so an orchestrator restarts a worker that lost it for good.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from celery import Celery

logger = logging.getLogger("flyswatter.jobs")


def broker_reachable(app: Celery) -> bool:
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        logger.warning("health: broker unreachable (%s)", type(exc).__name__)
        return False
    return True


def serve_worker_endpoint(app: Celery, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint on a daemon thread of this process; returns the server."""
    # Imported here: prometheus_client must see PROMETHEUS_MULTIPROC_DIR, set at start-up.
    from prometheus_client import CONTENT_TYPE_LATEST

    from flyswatter.observability.exposition import render_metrics

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                status, body, content_type = 200, render_metrics(), CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                ok = broker_reachable(app)
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
    threading.Thread(target=server.serve_forever, name="worker-endpoint", daemon=True).start()
    return server
