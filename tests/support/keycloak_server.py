"""A real Keycloak for the ``keycloak`` tests: fetched from Maven Central, started on loopback.

Keycloak's server distribution is the Maven artifact ``org.keycloak:keycloak-quarkus-dist``;
Maven keeps it in ``~/.m2``, so only the first run downloads it. The server runs in development
mode (``start-dev``: in-memory H2, HTTP) with the project's realm imported from
``keycloak/flyswatter-realm.json``, on the machine's JDK (17 or later).

``.ci/run`` starts it in the background early and waits for it only before the tests that need
it. By hand::

    .venv/bin/python -m tests.support.keycloak_server    # prints an export line, runs until ^C
    export FLYSWATTER_TEST_KEYCLOAK_URL=http://127.0.0.1:PORT   # as printed
    .venv/bin/pytest tests/test_keycloak.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx

from tests.support.servers import free_port

# The version CI runs; docker-compose.yml's Keycloak image carries the same (a test checks).
KEYCLOAK_VERSION = "26.5.6"
REALM = "flyswatter"
ADMIN_USERNAME = "admin"
# The test server's bootstrap admin; the tests read it from the same variable.
ADMIN_PASSWORD_ENV = "FLYSWATTER_TEST_KEYCLOAK_ADMIN_PASSWORD"
DEFAULT_ADMIN_PASSWORD = "flyswatter-test-admin"
URL_ENV = "FLYSWATTER_TEST_KEYCLOAK_URL"
LOG_ENV = "FLYSWATTER_TEST_KEYCLOAK_LOG"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
REALM_FILE = PROJECT_ROOT / "keycloak" / "flyswatter-realm.json"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flyswatter"
# The server's log, which the import test reads (FLYSWATTER_TEST_KEYCLOAK_LOG names another).
DEFAULT_LOG = CACHE_DIR / "keycloak-test.log"


def admin_password() -> str:
    return os.environ.get(ADMIN_PASSWORD_ENV, DEFAULT_ADMIN_PASSWORD)


def distribution(version: str = KEYCLOAK_VERSION) -> Path:
    """The unpacked server distribution (``bin/kc.sh``), fetched through Maven when missing."""
    home = CACHE_DIR / f"keycloak-{version}"
    if (home / "bin" / "kc.sh").exists():
        return home
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    artifact = f"org.keycloak:keycloak-quarkus-dist:{version}:zip"
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={artifact}",
            f"-DoutputDirectory={CACHE_DIR}",
        ],
        check=True,
    )
    archive = CACHE_DIR / f"keycloak-quarkus-dist-{version}.zip"
    unpacking = CACHE_DIR / f"keycloak-{version}.unpacking"
    shutil.rmtree(unpacking, ignore_errors=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(unpacking)
    # zipfile drops the executable bit; the launcher scripts need it.
    for script in (unpacking / f"keycloak-{version}" / "bin").glob("*.sh"):
        script.chmod(0o755)
    (unpacking / f"keycloak-{version}").rename(home)
    shutil.rmtree(unpacking, ignore_errors=True)
    archive.unlink()
    return home


def prepare_realm_import(home: Path) -> None:
    """A fresh database and the project's realm in ``data/import``, so the import runs again."""
    data = home / "data"
    shutil.rmtree(data, ignore_errors=True)
    (data / "import").mkdir(parents=True)
    shutil.copyfile(REALM_FILE, data / "import" / REALM_FILE.name)


def start(
    home: Path, *, port: int, management_port: int, app_url: str, log_path: Path
) -> subprocess.Popen[bytes]:
    """``kc.sh start-dev --import-realm`` on 127.0.0.1, in its own process group."""
    prepare_realm_import(home)
    environment = {
        **os.environ,
        "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME,
        "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password(),
        # Resolved by the import: where Swagger UI runs, for flyswatter-web's redirect URI.
        "FLYSWATTER_BASE_URL": app_url,
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                str(home / "bin" / "kc.sh"),
                "start-dev",
                "--import-realm",
                "--http-host=127.0.0.1",
                f"--http-port={port}",
                f"--http-management-port={management_port}",
                "--health-enabled=true",
            ],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def realm_is_served(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/realms/{REALM}/.well-known/openid-configuration", timeout=3)
    except httpx.TransportError:
        return False
    return response.status_code == 200


def wait_until_ready(url: str, timeout: float, process: subprocess.Popen[bytes] | None) -> float:
    """Seconds waited until the realm answers; raises when the server died or took too long."""
    started = time.monotonic()
    while not realm_is_served(url):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Keycloak exited with {process.returncode}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"Keycloak did not serve realm {REALM} within {timeout:.0f} s")
        time.sleep(1)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the tests' Keycloak until interrupted")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--management-port", type=int, default=0)
    parser.add_argument(
        "--app-url",
        help="where the tests serve Flyswatter, for flyswatter-web's redirect URI "
        "(default: a free port on 127.0.0.1)",
    )
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--fetch-only", action="store_true", help="download and unpack, then exit")
    args = parser.parse_args()
    home = distribution()
    if args.fetch_only:
        print(home, flush=True)
        return 0
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    process = start(
        home,
        port=port,
        management_port=args.management_port or free_port(),
        app_url=args.app_url or f"http://127.0.0.1:{free_port()}",
        log_path=args.log,
    )

    def stop(*_: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        wait_until_ready(url, args.timeout, process)
    except (RuntimeError, TimeoutError) as failure:
        print(f"keycloak: {failure}; see {args.log}", file=sys.stderr, flush=True)
        stop()
        return 1
    print(f"keycloak {KEYCLOAK_VERSION} ready in {time.monotonic() - began:.0f} s", flush=True)
    print(f"export {URL_ENV}={url} {LOG_ENV}={args.log.resolve()}", flush=True)
    return process.wait()


if __name__ == "__main__":
    sys.exit(main())
