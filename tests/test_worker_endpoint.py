"""The worker's own endpoint: served once the worker is ready, ``/healthz`` as Redis answers."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from celery.signals import worker_ready

from flyswatter.jobs.health import serve_worker_endpoint
from flyswatter.observability.multiprocess import MULTIPROC_DIR_ENV
from tests.support.servers import free_port


@pytest.fixture
def endpoint_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[ThreadingHTTPServer]]:
    """Servers the test binds, shut down after it."""
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    servers: list[ThreadingHTTPServer] = []
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_endpoint_answers_only_once_the_worker_is_ready(
    redis_url: str, endpoint_of: list[ThreadingHTTPServer]
) -> None:
    # Celery forks beat and its pool while the worker starts; no endpoint thread runs then.
    port = free_port()
    endpoint_of.append(serve_worker_endpoint(redis_url, "127.0.0.1", port))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
    worker_ready.send(sender=None)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "ok\n"
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200


def test_healthz_is_503_while_redis_does_not_answer(
    endpoint_of: list[ThreadingHTTPServer],
) -> None:
    port = free_port()
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    endpoint_of.append(serve_worker_endpoint(unreachable, "127.0.0.1", port))
    worker_ready.send(sender=None)
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert (response.status_code, response.text) == (503, "broker unreachable\n")
