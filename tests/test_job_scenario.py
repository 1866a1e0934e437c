"""The README's report scenario, run as written: against ``flyswatter dev`` (in-process worker,
in-memory broker, local files), and against ``flyswatter serve`` with a separate
``flyswatter worker`` on Redis and S3 storage, as production runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from flyswatter.config import Settings
from flyswatter.dev.demo import seed_demo_project
from flyswatter.dev.server import start_dev_identity_provider
from tests.support.jobs import MotoServer, WorkerProcess
from tests.support.servers import (
    RedisServer,
    ServedFlyswatter,
    free_port,
    serve_environment,
    served_database,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def readme_scenario(api: str, idp: str) -> str:
    """The README's shell block, pointed at this test's ports."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("**Try it with `flyswatter dev`**")
    begin = readme.index("```sh\n", start) + len("```sh\n")
    block = readme[begin : readme.index("\n```", begin)]
    first, rest = block.split("\n", 1)
    assert first == "API=http://127.0.0.1:8000 IDP=http://127.0.0.1:8081/realms/flyswatter"
    return f"API={api} IDP={idp}/realms/flyswatter\n{rest}"


def run_scenario(script: str, workdir: Path) -> Path:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    (pdf,) = workdir.glob("DEMO-report-*.pdf")
    assert pdf.read_bytes().startswith(b"%PDF-")
    return pdf


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(log.read_text()[-3000:])


def test_readme_scenario_in_flyswatter_dev(tmp_path: Path) -> None:
    port, idp_port = free_port(), free_port()
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FLYSWATTER_", "PROMETHEUS_"))
    }
    log = tmp_path / "dev.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flyswatter.cli",
                "dev",
                "--port",
                str(port),
                "--idp-port",
                str(idp_port),
            ],
            cwd=tmp_path,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        assert "in-memory transport" in log.read_text()
        workdir = tmp_path / "client"
        workdir.mkdir()
        run_scenario(
            readme_scenario(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{idp_port}"), workdir
        )
        assert list((tmp_path / "flyswatter-artifacts" / "reports").rglob("*.pdf"))
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path / "moto.log")
    server.start()
    yield server
    server.stop()


def test_readme_scenario_with_a_separate_worker_on_redis_and_s3(
    tmp_path: Path,
    database_url: str,
    postgres_url: str,
    redis_server: RedisServer,
    moto_server: MotoServer,
) -> None:
    provider, idp = start_dev_identity_provider("127.0.0.1", 0)
    storage = {
        "storage_backend": "s3",
        "s3_endpoint_url": moto_server.url,
        "s3_bucket": "scenario",
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
    }
    try:
        with served_database(database_url, postgres_url) as served_url:
            asyncio.run(seed_demo_project(Settings(database_url=served_url), provider.realm))
            worker = WorkerProcess(
                serve_environment(
                    database_url=served_url,
                    redis_url=redis_server.url,
                    s3_create_bucket="true",
                    **storage,
                ),
                tmp_path / "worker.log",
                "--concurrency=1",
                "--beat",
            )
            worker.start()
            try:
                served = ServedFlyswatter(
                    database_url=served_url,
                    # The development identity provider stands in for Keycloak.
                    jwks_server=SimpleNamespace(  # type: ignore[arg-type]
                        base_url=provider.base_url, realm=provider.realm.name
                    ),
                    log_path=tmp_path / "serve.log",
                    workers=2,
                    redis_url=redis_server.url,
                    **storage,
                )
                # Generous: two cores shared with other work can make start-up slow.
                served.start(timeout=180)
                try:
                    workdir = tmp_path / "client"
                    workdir.mkdir()
                    run_scenario(readme_scenario(served.base_url, provider.base_url), workdir)
                finally:
                    served.stop()
                metrics = worker.metrics()
                assert 'flyswatter_jobs_finished_total{kind="report",state="succeeded"} 1.0' in (
                    metrics
                )
                assert "flyswatter_job_run_seconds_count" in metrics
            finally:
                worker.stop()
    finally:
        idp.stop()
