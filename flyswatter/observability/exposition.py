"""``GET /metrics``: the Prometheus text format, summed over every worker process.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``serve`` with several workers) the samples of all
workers, live or dead, are read from that directory: counters and histograms of a worker
that died stay, so totals never go backwards when a worker is replaced; live gauges
(requests in progress) of dead workers are dropped first, as they describe nothing current.
Otherwise the process' own registry is served.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from flyswatter.observability.multiprocess import MULTIPROC_DIR_ENV

router = APIRouter()

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


class MetricsResponse(Response):
    media_type = CONTENT_TYPE_LATEST


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def remove_dead_workers(directory: Path) -> list[int]:
    """Drop the live-gauge files of processes that are gone; returns their pids.

    What ``prometheus_client.multiprocess.mark_process_dead`` does, found by scanning the
    directory (the supervisor that saw the worker die is uvicorn's, not ours), and tolerant
    of another worker's scrape removing the same file first.
    """
    dead = set()
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _is_running(pid := int(match.group(1))):
            path.unlink(missing_ok=True)
            dead.add(pid)
    return sorted(dead)


def render_metrics() -> bytes:
    """The exposition text; reads files in multiprocess mode, so run it off the event loop."""
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    remove_dead_workers(Path(directory))
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


@router.get("/metrics", include_in_schema=False, response_class=MetricsResponse)
async def metrics() -> MetricsResponse:
    """Prometheus scrape target; reach it from the monitoring network only."""
    return MetricsResponse(await anyio.to_thread.run_sync(render_metrics))
