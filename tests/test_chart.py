"""The Helm chart (``charts/flyswatter``) checked where no cluster runs.

``helm lint`` is clean, and every manifest ``helm template`` renders, with the default values
and with the production ones, validates against the Kubernetes API schemas of a pinned
version (kubernetes-validate). The other tests pin what a release must hold: pods that run
non-root on a read-only root filesystem, metrics samples on a memory ``emptyDir``, migrations
as a pre-install/pre-upgrade hook, exactly one beat, secrets only by reference, and commands
and settings the ``flyswatter`` CLI and its Settings know.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flyswatter.cli import build_parser
from flyswatter.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "flyswatter"
VALUES = {"default": CHART / "values.yaml", "production": CHART / "ci" / "production-values.yaml"}
# Where .ci/run builds the pinned helm when the machine has none on PATH.
CI_HELM = ROOT / ".ci-tools" / "bin" / "helm"
# The oldest Kubernetes release still supported upstream when the chart was written.
KUBERNETES_VERSION = "1.33.0"
RELEASE = "tracker"
# The Prometheus Operator's kind: a CRD, absent from the Kubernetes API schemas.
CUSTOM_KINDS = {"ServiceMonitor"}
SECRET_SETTINGS = {
    "FLYSWATTER_DATABASE_URL",
    "FLYSWATTER_REDIS_URL",
    "FLYSWATTER_CURSOR_SECRET",
    "FLYSWATTER_WEBHOOK_SECRET_KEYS",
    "FLYSWATTER_S3_ACCESS_KEY_ID",
    "FLYSWATTER_S3_SECRET_ACCESS_KEY",
    "FLYSWATTER_SENTRY_DSN",
}


@pytest.fixture(scope="module")
def helm() -> str:
    # The pinned build first, where there is one: CI renders with the version it pinned.
    found = str(CI_HELM) if CI_HELM.exists() else shutil.which("helm")
    if found is None:
        pytest.skip(f"needs helm (on PATH, or built by .ci/run into {CI_HELM.parent})")
    return found


def run_helm(helm: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def template(helm: str, values: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # The Kubernetes version is named: the chart's kubeVersion is checked against it.
    return run_helm(
        helm, "template", RELEASE, str(CHART), "--namespace", "flyswatter", "-f", str(values),
        "--kube-version", KUBERNETES_VERSION, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module", params=sorted(VALUES))
def manifests(request: pytest.FixtureRequest, helm: str) -> list[dict[str, Any]]:
    rendered = template(helm, VALUES[request.param])
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod the release runs: the Deployments', the migration Job's, the test Pod."""
    specs = {}
    for doc in manifests:
        if doc["kind"] in ("Deployment", "Job"):
            specs[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            specs[doc["metadata"]["name"]] = doc["spec"]
    return specs


def workloads(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The API, worker and beat containers, by component."""
    return {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc["spec"]["template"]["spec"]
        for doc in of_kind(manifests, "Deployment").values()
    }


@pytest.mark.parametrize("values", sorted(VALUES))
def test_helm_lint_is_clean(helm: str, values: str) -> None:
    linted = run_helm(
        helm, "lint", "--strict", str(CHART), "-f", str(VALUES[values]),
        "--kube-version", KUBERNETES_VERSION,
    )  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 chart(s) failed" in linted.stdout


def test_every_manifest_validates_against_the_kubernetes_api_schemas(
    manifests: list[dict[str, Any]],
) -> None:
    kinds = set()
    for doc in manifests:
        kinds.add(doc["kind"])
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    expected = {"ConfigMap", "Deployment", "Job", "Service", "HorizontalPodAutoscaler"}
    expected |= {"PodDisruptionBudget", "NetworkPolicy", "Pod"}
    assert expected <= kinds


def test_every_pod_runs_non_root_on_a_read_only_root_filesystem(
    manifests: list[dict[str, Any]],
) -> None:
    specs = pod_specs(manifests)
    assert len(specs) == 5  # api, worker, beat, migrate, smoke
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the image's user
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert set(container["resources"]) == {"requests", "limits"}, name


def test_metrics_samples_live_on_a_memory_emptydir_and_tmp_is_writable(
    manifests: list[dict[str, Any]],
) -> None:
    for component, spec in workloads(manifests).items():
        (container,) = spec["containers"]
        environment = {env["name"]: env.get("value") for env in container["env"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        multiproc = volumes[mounts[environment["PROMETHEUS_MULTIPROC_DIR"]]]
        assert multiproc["emptyDir"]["medium"] == "Memory", component
        assert "emptyDir" in volumes[mounts["/tmp"]], component


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(
    manifests: list[dict[str, Any]],
) -> None:
    (job,) = of_kind(manifests, "Job").values()
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["flyswatter", "migrate", "upgrade"]
    # Before install, the chart's ConfigMap does not exist yet: the Job must not need it.
    assert "envFrom" not in container


def test_beat_is_one_replica_replaced_never_surged(manifests: list[dict[str, Any]]) -> None:
    deployments = {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc
        for doc in of_kind(manifests, "Deployment").values()
    }
    beat = deployments["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    beats = [
        component
        for component, doc in deployments.items()
        if "--beat" in doc["spec"]["template"]["spec"]["containers"][0]["command"]
    ]
    assert beats == ["beat"]


def test_secrets_are_read_from_the_existing_secret_never_inlined(
    manifests: list[dict[str, Any]], helm: str
) -> None:
    assert not of_kind(manifests, "Secret")
    (config_map,) = of_kind(manifests, "ConfigMap").values()
    assert not SECRET_SETTINGS & set(config_map["data"])
    for name, spec in pod_specs(manifests).items():
        for env in spec["containers"][0].get("env", []):
            if env["name"] in SECRET_SETTINGS or "SECRET" in env["name"]:
                reference = env["valueFrom"]["secretKeyRef"]
                assert reference["name"] in ("flyswatter", "flyswatter-production"), name
                assert "value" not in env, name
    # A secret put among the settings by mistake stops the release instead of leaking.
    refused = template(helm, VALUES["default"], "--set", "settings.database_url=postgresql://x")
    assert refused.returncode != 0
    assert "settings.database_url is a secret" in refused.stderr


def test_settings_from_values_are_flyswatter_settings_it_accepts(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    (config_map,) = of_kind(manifests, "ConfigMap").values()
    known = {f"FLYSWATTER_{name.upper()}" for name in Settings.model_fields}
    assert set(config_map["data"]) <= known
    # Read from the environment as the pods read them: every value parses.
    for name, value in config_map["data"].items():
        monkeypatch.setenv(name, value)
    settings = Settings(database_url="postgresql://db.example.org/flyswatter")
    assert settings.keycloak_url
    assert settings.storage_backend == "s3"


def test_api_probes_liveness_on_healthz_and_readiness_on_readyz(
    manifests: list[dict[str, Any]],
) -> None:
    (api,) = workloads(manifests)["api"]["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for component in ("worker", "beat"):
        (worker,) = workloads(manifests)[component]["containers"]
        assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_every_command_is_one_the_flyswatter_cli_accepts(manifests: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(manifests).items():
        command = spec["containers"][0]["command"]
        assert command[0] == "flyswatter", name
        build_parser().parse_args(command[1:])


def test_helm_test_pod_runs_flyswatter_smoke_against_the_release_service(
    manifests: list[dict[str, Any]],
) -> None:
    (pod,) = of_kind(manifests, "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["flyswatter", "smoke"]
    (service,) = (s for s in of_kind(manifests, "Service").values() if "clusterIP" not in s["spec"])
    port = service["spec"]["ports"][0]["port"]
    assert command[command.index("--url") + 1] == f"http://{service['metadata']['name']}:{port}"
    secret = {env["name"]: env for env in container["env"]}["FLYSWATTER_SMOKE_CLIENT_SECRET"]
    assert "secretKeyRef" in secret["valueFrom"]
    assert "--client-secret" not in command


def test_ingress_and_service_monitor_only_when_asked(
    manifests: list[dict[str, Any]], request: pytest.FixtureRequest
) -> None:
    production = request.node.callspec.params["manifests"] == "production"
    assert bool(of_kind(manifests, "Ingress")) == production
    assert bool(of_kind(manifests, "ServiceMonitor")) == production
    assert of_kind(manifests, "HorizontalPodAutoscaler")
    assert len(of_kind(manifests, "PodDisruptionBudget")) == 2
    assert len(of_kind(manifests, "NetworkPolicy")) == 3
