"""The deployment files (Dockerfile, docker-compose.yml) checked where no Docker engine runs.

Each test pins one way a ``docker compose up`` would break or come up wrong: an invalid file,
a missing mount, an API that trusts another issuer than the browser's, a Prometheus scraping
the wrong host, an image whose start command does not exist.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from flyswatter import migrations
from flyswatter.app import create_app
from flyswatter.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
REALM_FILE = ROOT / "keycloak" / "flyswatter-realm.json"
PROMETHEUS_CONFIG = ROOT / "grafana" / "prometheus.yml"

DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with nothing set in the environment: the default."""
    return _INTERPOLATION.sub(lambda match: match.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    return dict(json.loads(REALM_FILE.read_text()))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host source, container target) of every bind mount given in short syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.removeprefix("**/")):
            excluded = not negated
    return excluded


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    # The Compose specification's JSON schema, as vendored by check-jsonschema.
    schema_text = (
        files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    ).read_text()
    schema = json.loads(schema_text)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator_class(schema).iter_errors(compose)
    ]
    assert errors == []


def test_every_file_a_service_mounts_or_builds_from_exists(
    services: dict[str, dict[str, Any]],
) -> None:
    missing = []
    for name, service in services.items():
        for source, _target in bind_mounts(service):
            if not (ROOT / source).exists():
                missing.append(f"{name}: volume {source}")
        build = service.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            dockerfile = Path(build.get("context", ".")) / build.get("dockerfile", "Dockerfile")
            if not (ROOT / dockerfile).is_file():
                missing.append(f"{name}: build {dockerfile}")
        for env_file in service.get("env_file", []):
            if not (ROOT / env_file).is_file():
                missing.append(f"{name}: env_file {env_file}")
    assert missing == []


def test_api_starts_only_after_its_dependencies_are_healthy_and_migrated(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["api"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "keycloak": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    # The migration runs from the very image the API runs.
    assert services["migrate"]["image"] == services["api"]["image"]


def test_every_service_waited_on_as_healthy_has_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    image_has_healthcheck = any(
        keyword == "HEALTHCHECK" for keyword, _ in dockerfile_instructions()
    )
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            if condition.get("condition") != "service_healthy":
                continue
            target = services[dependency]
            built_here = target.get("build") is not None
            assert "healthcheck" in target or (built_here and image_has_healthcheck), (
                f"{name} waits for {dependency} to be healthy, which has no health check"
            )


def test_api_runs_several_workers_with_redis_backed_limits(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read as the container reads them: from its environment (JSON lists decoded).
    for name in os.environ:
        if name.startswith("FLYSWATTER_"):
            monkeypatch.delenv(name)
    for name, value in environment(services["api"]).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.workers > 1
    assert urlsplit(settings.redis_url).hostname == "redis"
    assert not settings.is_sqlite
    assert urlsplit(settings.database_url).hostname == "postgres"
    settings.check_production()


def test_api_keycloak_settings_match_the_realm_file_and_keycloak_hostname(
    services: dict[str, dict[str, Any]], realm: dict[str, Any]
) -> None:
    api = environment(services["api"])
    keycloak = services["keycloak"]
    keycloak_env = environment(keycloak)

    assert api.get("FLYSWATTER_KEYCLOAK_REALM", DEFAULTS["keycloak_realm"]) == realm["realm"]
    client_ids = {client["clientId"] for client in realm["clients"]}
    assert api.get("FLYSWATTER_AUDIENCE", DEFAULTS["audience"]) in client_ids
    assert {"flyswatter-web", "flyswatter-service"} <= client_ids

    # The back channel: the API reaches the keycloak service on its HTTP port.
    back_channel = urlsplit(api["FLYSWATTER_KEYCLOAK_URL"])
    assert back_channel.hostname == "keycloak"
    assert back_channel.port == int(keycloak_env.get("KC_HTTP_PORT", "8080"))

    # The front channel: tokens carry the issuer Keycloak's fixed hostname gives them.
    issuer = urlsplit(api["FLYSWATTER_ISSUER"])
    hostname = urlsplit(keycloak_env["KC_HOSTNAME"])
    assert (issuer.scheme, issuer.hostname, issuer.port) == (
        hostname.scheme,
        hostname.hostname,
        hostname.port,
    )
    assert issuer.path == f"/realms/{realm['realm']}"
    published = {str(port).split(":")[0] for port in keycloak.get("ports", [])}
    assert str(hostname.port) in published

    assert "--import-realm" in keycloak["command"]
    assert ("./keycloak", "/opt/keycloak/data/import") in bind_mounts(keycloak)
    assert keycloak_env.get("KC_HEALTH_ENABLED") == "true"


def test_keycloak_gets_every_variable_the_realm_import_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    # The realm file's own placeholders; Keycloak's message keys (${profileScopeConsentText})
    # are not environment variables.
    wanted = set(re.findall(r"\$\{(FLYSWATTER_[A-Z0-9_]+)", REALM_FILE.read_text()))
    assert wanted
    assert wanted <= set(environment(services["keycloak"]))


def test_compose_runs_the_keycloak_version_ci_tests_against(
    services: dict[str, dict[str, Any]],
) -> None:
    from tests.support.keycloak_server import KEYCLOAK_VERSION

    assert services["keycloak"]["image"] == f"quay.io/keycloak/keycloak:{KEYCLOAK_VERSION}"


def test_every_secret_in_compose_is_a_variable_the_readme_says_to_set(
    services: dict[str, dict[str, Any]],
) -> None:
    readme = (ROOT / "README.md").read_text()
    production = readme[readme.index("## Production") :]
    secret_key = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
    credentials_in_url = re.compile(r"://[^/@\s]+:[^/@\s]+@")
    checked = 0
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if not (secret_key.search(key) or credentials_in_url.search(str(value))):
                continue
            variables = [variable for variable, _ in _INTERPOLATION.findall(str(value))]
            assert variables, f"{name}.{key} is hard-coded; use ${{NAME:-dev-default}}"
            for variable in variables:
                assert f"`{variable}`" in production, f"README does not say to set {variable}"
            checked += 1
    assert checked >= 3


def test_prometheus_scrapes_the_api_service_on_its_port(
    services: dict[str, dict[str, Any]],
) -> None:
    assert ("./grafana/prometheus.yml", "/etc/prometheus/prometheus.yml") in bind_mounts(
        services["prometheus"]
    )
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    api_port = environment(services["api"]).get("FLYSWATTER_PORT", "8000")
    targets = {
        (target, job.get("metrics_path", "/metrics"))
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert (f"api:{api_port}", "/metrics") in targets
    container_ports = {str(port).rsplit(":", 1)[-1] for port in services["api"]["ports"]}
    assert api_port in container_ports


def test_grafana_is_provisioned_from_the_mounted_folders(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = dict(bind_mounts(services["grafana"]))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_target = mounts["./grafana/dashboards"]
    provisioning = ROOT / "grafana" / "provisioning"

    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text()).get("datasources", [])
    ]
    prometheus_port = int(str(services["prometheus"]["ports"][0]).rsplit(":", 1)[-1])
    assert any(
        source["type"] == "prometheus"
        and urlsplit(source["url"]).hostname == "prometheus"
        and (urlsplit(source["url"]).port or 80) == prometheus_port
        for source in datasources
    ), datasources

    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text()).get("providers", [])
    ]
    assert any(
        provider.get("options", {}).get("path", "").rstrip("/") == dashboards_target
        for provider in providers
    ), providers
    assert list((ROOT / "grafana" / "dashboards").glob("*.json"))


def test_dockerfile_is_multi_stage_non_root_and_caches_dependencies() -> None:
    instructions = dockerfile_instructions()
    stages = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert len(stages) >= 2
    assert stages[-1].startswith("python:3.11-slim")
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")

    # Dependencies are installed from pyproject.toml before the source is copied in.
    copies = [
        (index, arguments)
        for index, (keyword, arguments) in enumerate(instructions)
        if keyword == "COPY" and "--from" not in arguments
    ]
    pyproject_at = next(index for index, arguments in copies if "pyproject.toml" in arguments)
    source_at = next(index for index, arguments in copies if "flyswatter" in arguments.split())
    install_at = next(
        index
        for index, (keyword, arguments) in enumerate(instructions)
        if keyword == "RUN" and "pip install -r" in arguments
    )
    assert pyproject_at < install_at < source_at


def test_dockerfile_copies_only_files_that_exist_and_reach_the_build_context() -> None:
    for keyword, arguments in dockerfile_instructions():
        if keyword != "COPY" or "--from" in arguments:
            continue
        *sources, _destination = [word for word in shlex.split(arguments) if word[:2] != "--"]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerfile_runs_flyswatter_serve_and_probes_a_real_health_route() -> None:
    instructions = dict(dockerfile_instructions())
    command = json.loads(instructions["CMD"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts
    assert command == ["flyswatter", "serve"]
    assert "ENTRYPOINT" not in instructions

    healthcheck = instructions["HEALTHCHECK"]
    probed = re.search(r"http://127\.0\.0\.1:[^/]+(/[a-z]+)", healthcheck)
    assert probed is not None
    routes = {getattr(route, "path", None) for route in create_app(Settings()).routes}
    assert probed.group(1) in routes
    assert instructions["EXPOSE"] == "8000"


def test_image_keeps_the_migrations_where_flyswatter_finds_them() -> None:
    instructions = dockerfile_instructions()
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    runtime = instructions[last_from:]
    copies = [
        shlex.split(arguments)
        for keyword, arguments in runtime
        if keyword == "COPY" and "--from" not in arguments
    ]
    assert {words[0] for words in copies} >= {"alembic.ini", "alembic"}
    # The package lives in site-packages in the image; flyswatter/migrations.py then finds
    # alembic.ini in the working directory, where these copies put it.
    workdir = [arguments for keyword, arguments in runtime if keyword == "WORKDIR"][-1]
    assert workdir == "/app"
    assert all(words[-1].startswith("./") for words in copies)


def test_an_installed_package_finds_the_migrations_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As in the image: nothing beside the installed package, alembic.ini in the workdir.
    monkeypatch.setattr(migrations, "ALEMBIC_INI", tmp_path / "site-packages" / "alembic.ini")
    monkeypatch.chdir(ROOT)
    assert migrations.find_alembic_ini() == ROOT / "alembic.ini"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"alembic\.ini is missing"):
        migrations.find_alembic_ini()
