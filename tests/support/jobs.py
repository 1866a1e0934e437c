"""Job helpers: an in-process Celery worker, ``flyswatter worker`` processes, a real S3-compatible
server (moto's), and polling a job until it is finished."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from flyswatter.config import Settings
from flyswatter.jobs.sweeps import remove_orphaned_objects
from flyswatter.jobs.tasks import JobRuntime
from flyswatter.jobs.worker import InProcessWorker, make_celery
from flyswatter.storage.service import LocalStorage, StoredObject
from tests.support.api import AuthedClient
from tests.support.servers import FLYSWATTER, free_port

FINISHED = {"succeeded", "failed", "cancelled"}


@contextmanager
def in_process_worker(settings: Settings, *, beat: bool = False) -> Iterator[InProcessWorker]:
    """A real Celery worker on a thread, on the same broker as the app under test."""
    with InProcessWorker(make_celery(settings), beat=beat) as worker:
        yield worker


async def wait_for_job(
    client: AuthedClient, location: str, *, seconds: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get(location)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["state"] in FINISHED:
            assert "Retry-After" not in response.headers
            return job
        assert response.headers["Retry-After"].isdigit()
        assert time.monotonic() < deadline, f"job still {job['state']} after {seconds} s"
        await asyncio.sleep(0.1)


class MotoServer:
    """moto's standalone S3-compatible server (a PyPI package), in a process on loopback."""

    def __init__(self, log_path: Path, *, environment: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.environment = environment or {}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true", **self.environment},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-2000:]
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"moto server did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None

    def settings(self, base: Settings, bucket: str, **extra: Any) -> Settings:
        return base.model_copy(
            update={
                "storage_backend": "s3",
                "s3_endpoint_url": self.url,
                "s3_bucket": bucket,
                "s3_access_key_id": "testing",
                "s3_secret_access_key": "testing",
                **extra,
            }
        )


class WorkerProcess:
    """``python -m flyswatter.cli worker`` in its own process group."""

    def __init__(self, environment: dict[str, str], log_path: Path, *args: str) -> None:
        self.environment = environment
        self.log_path = log_path
        self.args = args
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> None:
        env = {**self.environment, "FLYSWATTER_WORKER_METRICS_PORT": str(self.metrics_port)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [FLYSWATTER, "worker", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited: {self.log()}"
            try:
                if self.health().status_code == 200 and b"ready" in self.log_path.read_bytes():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker did not start: {self.log()}")

    def health(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=5)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL to the whole group: the main process and its pool, as a container kill."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


class SweptAfterEachWrite(LocalStorage):
    """Local storage after each of whose writes the orphan sweep runs with no grace, on an
    engine of its own: the write outlasted the grace, and the sweep claims its intent and
    removes its object before the row's transaction begins (a real race, as it would
    interleave). ``swept`` counts what it removed."""

    def __init__(self, root: Path, sweeper: JobRuntime) -> None:
        super().__init__(root)
        self.sweeper = sweeper
        self.swept = 0

    def _sweep(self, stored: StoredObject) -> StoredObject:
        self.swept += remove_orphaned_objects(self.sweeper, grace=timedelta(0))
        return stored

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        return self._sweep(super().put(key, data, content_type))

    def put_stream(self, key: str, chunks: Any, content_type: str) -> StoredObject:
        return self._sweep(super().put_stream(key, chunks, content_type))
