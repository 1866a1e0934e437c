"""``flyswatter smoke`` against real processes: ``flyswatter dev`` with its identity provider,
and a ``flyswatter serve`` whose signing keys never load (so ``/readyz`` answers 503)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flyswatter import migrations
from flyswatter.config import Settings
from tests.support.servers import FLYSWATTER, DevFlyswatter, ServedFlyswatter, free_port

SERVICE_CLIENT = "flyswatter-service"
SERVICE_SECRET = "flyswatter-service-dev-secret"
ROUND_TRIP = ["create project", "create issue", "read issue", "transition", "delete issue"]


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevFlyswatter]:
    with DevFlyswatter(tmp_path_factory.mktemp("dev")) as service:
        yield service


def service_token(dev: DevFlyswatter) -> str:
    response = httpx.post(
        dev.token_url,
        data={"grant_type": "client_credentials"},
        auth=(SERVICE_CLIENT, SERVICE_SECRET),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def smoke(url: str, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it; only the given ``FLYSWATTER_SMOKE_*`` variables."""
    return subprocess.run(
        [FLYSWATTER, "smoke", "--url", url, "--timeout", "5", *arguments],
        env={"PATH": "/usr/bin:/bin", **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verdicts(output: str) -> dict[str, str]:
    """Each check's name and its ok/FAILED."""
    found = re.findall(r"^(\S+(?: \S+)?) {2,}(ok|FAILED) ", output, flags=re.MULTILINE)
    return dict(found)


def test_client_credentials_discovered_from_the_service_pass_every_check(
    dev: DevFlyswatter,
) -> None:
    result = smoke(
        dev.base_url,
        "--client-id",
        SERVICE_CLIENT,
        FLYSWATTER_SMOKE_CLIENT_SECRET=SERVICE_SECRET,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks = verdicts(result.stdout)
    expected = ["healthz", "readyz", "token", "whoami", *ROUND_TRIP, "remove project"]
    assert checks == dict.fromkeys(expected, "ok")
    assert re.search(r"^smoke passed: 10/10 checks ok in \d+ ms$", result.stdout, re.MULTILINE)
    assert SERVICE_SECRET not in result.stdout + result.stderr
    # The scratch project is gone again: deleted projects answer 404.
    key = re.search(r"^create project +ok +(SMK[0-9A-F]{7})", result.stdout, re.MULTILINE)
    assert key is not None
    gone = httpx.get(
        f"{dev.base_url}/api/v1/projects/{key.group(1)}",
        headers={"Authorization": f"Bearer {service_token(dev)}"},
    )
    assert gone.status_code == 404


def test_a_given_token_passes_and_is_never_printed(dev: DevFlyswatter) -> None:
    token = service_token(dev)
    result = smoke(dev.base_url, FLYSWATTER_SMOKE_TOKEN=token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "token" not in verdicts(result.stdout)
    assert token not in result.stdout + result.stderr
    # Nor any piece of it long enough to replay: its signature is the part that matters.
    assert token.rsplit(".", 1)[1][:16] not in result.stdout + result.stderr


def test_a_bad_token_fails_at_whoami_with_401_and_creates_nothing(dev: DevFlyswatter) -> None:
    result = smoke(dev.base_url, "--token", "not-a-token")
    assert result.returncode == 1
    assert verdicts(result.stdout) == {"healthz": "ok", "readyz": "ok", "whoami": "FAILED"}
    assert re.search(r"^whoami +FAILED +401 \(expected 200\)", result.stdout, re.MULTILINE)
    assert "smoke FAILED (whoami): 2/3 checks ok" in result.stdout


def test_a_wrong_client_secret_fails_at_the_token_endpoint(dev: DevFlyswatter) -> None:
    result = smoke(
        dev.base_url,
        "--client-id",
        SERVICE_CLIENT,
        "--token-url",
        dev.token_url,
        FLYSWATTER_SMOKE_CLIENT_SECRET="wrong-secret",
    )
    assert result.returncode == 1
    assert re.search(r"^token +FAILED +token endpoint answered 401", result.stdout, re.MULTILINE)
    assert "wrong-secret" not in result.stdout + result.stderr


def test_no_credentials_is_a_usage_error_naming_the_options(dev: DevFlyswatter) -> None:
    result = smoke(dev.base_url)
    assert result.returncode != 0
    assert "--token" in result.stderr
    assert "--client-id" in result.stderr
    assert result.stdout == ""


def test_a_service_whose_readyz_fails_fails_the_smoke_with_its_reason(tmp_path: Path) -> None:
    # Nothing listens where its Keycloak should be: it lives, and never gets ready.
    database_url = f"sqlite:///{tmp_path / 'unready.db'}"
    migrations.upgrade(Settings(database_url=database_url))
    served = ServedFlyswatter(
        database_url=database_url,
        keycloak_url=f"http://127.0.0.1:{free_port()}",
        log_path=tmp_path / "serve.log",
        redis_url=None,
        workers=1,
    )
    try:
        served.start(probe="/healthz")
        result = smoke(served.base_url, "--token", "any-token")
    finally:
        served.stop()
    assert result.returncode == 1
    assert verdicts(result.stdout) == {"healthz": "ok", "readyz": "FAILED"}
    assert re.search(
        r"^readyz +FAILED +503 \(expected 200\): the token signing keys are not loaded yet",
        result.stdout,
        re.MULTILINE,
    )
    assert "smoke FAILED (readyz): 1/2 checks ok" in result.stdout
