"""A person signs in from /docs in headless Chromium against ``flyswatter dev``, as a newcomer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.browser import sign_in_as_maria_and_file_an_issue
from tests.support.servers import free_port


@pytest.fixture
def flyswatter_dev(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``flyswatter dev`` on free ports, on its own SQLite file: (API URL, provider URL)."""
    port, idp_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLYSWATTER_")}
    environment["FLYSWATTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'dev.db'}"
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
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
            env=environment,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{api_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield api_url, f"http://127.0.0.1:{idp_port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_maria_signs_in_from_docs_and_files_an_issue_in_the_demo_project(
    flyswatter_dev: tuple[str, str],
) -> None:
    api_url, identity_url = flyswatter_dev
    sign_in_as_maria_and_file_an_issue(api_url, identity_url, "DEMO")
