"""Faults, with a real Redis of the test's own, real worker processes and PostgreSQL: the broker
stopped and restarted while jobs are queued, a worker killed mid-report, storage down."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from flyswatter.config import Settings
from tests.support.database import seed_issues, stored_row
from tests.support.identity import JwksServer, TokenFactory
from tests.support.jobs import WorkerProcess
from tests.support.servers import (
    RedisServer,
    ServedFlyswatter,
    free_port,
    serve_environment,
    served_database,
)

pytestmark = pytest.mark.slow

# Builds a worker process' environment from settings (the fixture below).
WorkerEnvironment = Callable[..., dict[str, str]]

# An unacknowledged message comes back 5 s after its delivery; a running job's lease, unless
# renewed, lapses 2 s after its claim.
QUICK_REDELIVERY = {"job_visibility_timeout_seconds": "5", "job_lease_seconds": "2"}


@pytest.fixture
def served_url(database_url: str, clean_database: str, postgres_url: str) -> Iterator[str]:
    with served_database(database_url, postgres_url) as url:
        yield url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


class Client:
    """Calls the served API as one person, with a real signed token."""

    def __init__(self, base_url: str, tokens: TokenFactory, username: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {tokens.user_token(username)}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, self.base_url + path, headers=self.headers, timeout=30, **kwargs
        )

    def report(self) -> str:
        response = self.request("POST", "/api/v1/projects/FLY/reports", json={})
        assert response.status_code == 202, response.text
        return str(response.headers["Location"])

    def job(self, location: str) -> dict[str, Any]:
        response = self.request("GET", location)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, location: str, states: set[str], seconds: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            job = self.job(location)
            if job["state"] in states:
                return job
            assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
            time.sleep(0.2)


def serve(
    served_url: str, jwks_server: JwksServer, tmp_path: Path, redis: RedisServer, **extra: str
) -> ServedFlyswatter:
    served = ServedFlyswatter(
        database_url=served_url,
        jwks_server=jwks_server,
        log_path=tmp_path / "serve.log",
        workers=2,
        redis_url=redis.url,
        storage_dir=str(tmp_path / "artifacts"),
        **extra,
    )
    try:
        # Generous: two cores shared with other work can make start-up slow.
        served.start(timeout=180)
    except BaseException:
        served.stop()
        raise
    return served


@pytest.fixture
def worker_environment(
    served_url: str, redis_server: RedisServer, tmp_path: Path
) -> WorkerEnvironment:
    """A worker's environment with these settings: the served database, the test's Redis,
    artifacts on disk unless the settings say otherwise."""

    def environment(**settings: object) -> dict[str, str]:
        settings.setdefault("storage_dir", str(tmp_path / "artifacts"))
        return serve_environment(database_url=served_url, redis_url=redis_server.url, **settings)

    return environment


def artifact_count(served_url: str) -> int:
    return int(stored_row(served_url, "SELECT count(*) FROM artifact")[0])


@pytest.fixture
def owner(
    served_url: str,
    jwks_server: JwksServer,
    tokens: TokenFactory,
    tmp_path: Path,
    redis_server: RedisServer,
) -> Iterator[Client]:
    """The owner of project FLY (one issue) on ``flyswatter serve``, stopped after the test."""
    served = serve(served_url, jwks_server, tmp_path, redis_server)
    try:
        yield project(served, tokens)
    finally:
        served.stop()


def project(served: ServedFlyswatter, tokens: TokenFactory) -> Client:
    owner = Client(served.base_url, tokens, "owner")
    created = owner.request("POST", "/api/v1/projects", json={"key": "FLY", "name": "Fly"})
    assert created.status_code == 201, created.text
    assert owner.request("POST", "/api/v1/projects/FLY/issues", json={"title": "x"}).is_success
    return owner


def test_broker_stopped_and_restarted_while_jobs_are_queued_loses_nothing(
    owner: Client,
    tmp_path: Path,
    redis_server: RedisServer,
    worker_environment: WorkerEnvironment,
) -> None:
    # Published to Redis, then lost with it: it keeps nothing across a restart.
    before = [owner.report(), owner.report()]
    redis_server.stop()
    during = owner.report()
    assert (owner.request("GET", "/readyz")).status_code == 200
    for location in [*before, during]:
        assert owner.job(location)["state"] == "queued"
    redis_server.start()
    worker = WorkerProcess(
        worker_environment(job_requeue_after_seconds="5"),
        tmp_path / "worker.log",
        "--concurrency=1",
        "--beat",
    )
    worker.start()
    try:
        for location in [*before, during]:
            job = owner.wait(location, {"succeeded", "failed"})
            assert job["state"] == "succeeded", job
            assert job["attempts"] == 1
        # One sweep or several: each takes the jobs not published within its period, so
        # on a slow machine the one made while the broker was down may come a sweep later.
        republished = re.findall(
            r"republished (\d+) job\(s\) whose message was lost", worker.log_path.read_text()
        )
        assert sum(int(count) for count in republished) == 3, republished
    finally:
        worker.stop()


def test_worker_killed_during_a_report_is_retried_and_succeeds_once(
    served_url: str,
    owner: Client,
    tmp_path: Path,
    worker_environment: WorkerEnvironment,
) -> None:
    # A report long enough to be caught running: a few thousand rows in its table.
    seed_issues(served_url, 6000)
    environment = worker_environment(
        report_table_limit="6000",
        # The lease lapsed by the time the message comes back, the kill having come right
        # after the claim.
        **QUICK_REDELIVERY,
    )
    first = WorkerProcess(environment, tmp_path / "worker-1.log", "--concurrency=1")
    first.start()
    location = owner.report()
    try:
        owner.wait(location, {"running", "succeeded", "failed"})
        assert owner.job(location)["state"] == "running", "the report finished too soon"
    finally:
        first.kill()
    assert owner.job(location)["state"] == "running"
    second = WorkerProcess(environment, tmp_path / "worker-2.log", "--concurrency=1")
    second.start()
    try:
        job = owner.wait(location, {"succeeded", "failed"})
    finally:
        second.stop()
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert artifact_count(served_url) == 1
    download = owner.request("GET", job["links"]["artifact"])
    assert download.status_code == 200
    assert download.content.startswith(b"%PDF")


def test_a_report_outlasting_the_visibility_timeout_and_its_lease_runs_once(
    served_url: str,
    owner: Client,
    tmp_path: Path,
    worker_environment: WorkerEnvironment,
) -> None:
    engine = sa.create_engine(Settings(database_url=served_url).sync_database_url)
    try:
        environment = worker_environment(
            job_requeue_after_seconds="5",
            **QUICK_REDELIVERY,
        )
        first = WorkerProcess(environment, tmp_path / "worker-1.log", "--concurrency=1")
        second = WorkerProcess(environment, tmp_path / "worker-2.log", "--concurrency=1", "--beat")
        first.start()
        try:
            with engine.connect() as blocker:
                # The report reads issues under this lock: it runs as long as the test holds it.
                blocker.execute(sa.text("LOCK TABLE issue IN ACCESS EXCLUSIVE MODE"))
                location = owner.report()
                owner.wait(location, {"running"})
                delivered = time.monotonic()
                # A worker starting after the visibility timeout restores the unacknowledged
                # message and takes it; its beat runs the requeue sweep at once, then every 5 s.
                time.sleep(6)
                second.start()
                deadline = time.monotonic() + 60
                while "nothing to do" not in second.log_path.read_text():
                    assert owner.job(location)["attempts"] == 1, second.log()
                    assert time.monotonic() < deadline, second.log()
                    time.sleep(0.2)
                # Past the lease and a requeue period twice over: what the sweep would take up.
                time.sleep(max(0.0, delivered + 20 - time.monotonic()))
                assert owner.job(location)["state"] == "running"
                blocker.rollback()
            job = owner.wait(location, {"succeeded", "failed"})
        finally:
            second.stop()
            first.stop()
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 1
        assert "republished" not in second.log_path.read_text()
        assert artifact_count(served_url) == 1
    finally:
        engine.dispose()


def test_storage_down_is_retried_then_fails_with_a_clear_reason(
    owner: Client,
    tmp_path: Path,
    worker_environment: WorkerEnvironment,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    storage = {
        "storage_backend": "s3",
        "s3_endpoint_url": nobody,
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
    }
    worker = WorkerProcess(
        worker_environment(
            job_max_retries="2",
            job_retry_backoff_seconds="1",
            job_retry_backoff_max_seconds="2",
            **storage,
        ),
        tmp_path / "worker.log",
        "--concurrency=1",
    )
    worker.start()
    try:
        job = owner.wait(owner.report(), {"succeeded", "failed"})
        metrics = worker.metrics()
    finally:
        worker.stop()
    assert job["state"] == "failed", job
    assert job["attempts"] == 3
    assert job["error"].startswith("object storage unavailable: object storage unreachable")
    assert job["error"].endswith("gave up after 3 attempt(s)")
    assert job["artifact"] is None
    assert 'flyswatter_job_retries_total{kind="report"} 2.0' in metrics
    assert 'flyswatter_jobs_finished_total{kind="report",state="failed"} 1.0' in metrics
