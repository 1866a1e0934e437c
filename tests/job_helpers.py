"""Helpers for the job tests: an in-process Celery worker, a real S3 server, polling a job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from flyswatter.config import Settings
from flyswatter.jobs.worker import InProcessWorker, make_celery
from tests.conftest import AuthedClient
from tests.served import free_port

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

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
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
                env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
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
