"""Prometheus metrics: route templates, what is not traffic, failures by reason, multiprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from flyswatter.http.context import request_context
from flyswatter.observability.exposition import render_metrics
from flyswatter.observability.http_metrics import HttpMetricsMiddleware
from flyswatter.observability.multiprocess import MULTIPROC_DIR_ENV, prepare_multiprocess_dir
from tests.support.api import Api, make_team
from tests.support.identity import TokenFactory, new_signing_key
from tests.support.servers import system_program


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests_total(method: str, route: str, status: str) -> float:
    return sample("flyswatter_http_requests_total", method=method, route=route, status=status)


async def test_requests_are_counted_by_route_template_never_raw_path(api: Api) -> None:
    alice = api.as_user("alice")
    template = "/api/v1/projects/{key}"
    before = requests_total("GET", template, "404")
    latency_before = sample(
        "flyswatter_http_request_duration_seconds_count", method="GET", route=template
    )

    for key in ("ONE", "TWO", "THREE"):
        assert (await alice.get(f"/api/v1/projects/{key}")).status_code == 404

    assert requests_total("GET", template, "404") == before + 3
    assert (
        sample("flyswatter_http_request_duration_seconds_count", method="GET", route=template)
        == latency_before + 3
    )
    exposed = (await api.client.get("/metrics")).text
    assert "/api/v1/projects/ONE" not in exposed


async def test_paths_no_route_matches_share_one_bucket(client: httpx.AsyncClient) -> None:
    before = requests_total("GET", "<unmatched>", "404")
    for path in ("/nope", "/api/v1/nope/123", "/wp-login.php"):
        assert (await client.get(path)).status_code == 404
    assert requests_total("GET", "<unmatched>", "404") == before + 3


async def test_a_wrong_method_is_counted_under_the_route_it_names(api: Api) -> None:
    before = requests_total("PUT", "/api/v1/projects", "405")
    assert (await api.as_user("alice").put("/api/v1/projects", json={})).status_code == 405
    assert requests_total("PUT", "/api/v1/projects", "405") == before + 1


async def test_an_unknown_method_does_not_become_a_label(client: httpx.AsyncClient) -> None:
    before = requests_total("OTHER", "/api/v1/projects", "405")
    await client.request("BREW", "/api/v1/projects")
    assert requests_total("OTHER", "/api/v1/projects", "405") == before + 1


async def test_scrapes_and_health_probes_are_not_counted_as_traffic(
    client: httpx.AsyncClient,
) -> None:
    def counted() -> float:
        families = text_string_to_metric_families(render_metrics().decode())
        return sum(
            s.value
            for family in families
            if family.name == "flyswatter_http_requests"
            for s in family.samples
            if s.name == "flyswatter_http_requests_total"
        )

    before = counted()
    for path in ("/metrics", "/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status_code == 200
    assert counted() == before
    exposed = (await client.get("/metrics")).text
    for path in ("/metrics", "/healthz", "/readyz"):
        assert f'route="{path}"' not in exposed


async def test_metrics_endpoint_serves_the_prometheus_text_format(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "flyswatter_http_requests",
        "flyswatter_http_request_duration_seconds",
        "flyswatter_http_requests_in_progress",
        "flyswatter_issues_created",
        "flyswatter_comments_created",
    } <= names


async def test_auth_failures_are_counted_by_reason(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    cases = {
        "missing": {},
        "malformed": {"Authorization": "Bearer not-a-jwt"},
        "expired": {
            "Authorization": "Bearer " + tokens.user_token("alice", exp=1_000_000, iat=999_000)
        },
        "unknown_key": {
            "Authorization": "Bearer "
            + tokens.sign(tokens.claims(sub="x"), key=new_signing_key("never-published"))
        },
    }
    before = {reason: sample("flyswatter_auth_failures_total", reason=reason) for reason in cases}
    for headers in cases.values():
        assert (await client.get("/api/v1/projects", headers=headers)).status_code == 401
    for reason in cases:
        assert sample("flyswatter_auth_failures_total", reason=reason) == before[reason] + 1


async def test_jwks_fetches_are_counted(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    before = sample("flyswatter_jwks_refreshes_total", outcome="success")
    unknown = tokens.sign(tokens.claims(sub="x"), key=new_signing_key("not-there"))
    await client.get("/api/v1/projects", headers={"Authorization": f"Bearer {unknown}"})
    assert sample("flyswatter_jwks_refreshes_total", outcome="success") == before + 1


async def test_business_counters_follow_issues_transitions_and_comments(api: Api) -> None:
    team = await make_team(api)
    created = sample("flyswatter_issues_created_total")
    resolved = sample("flyswatter_issue_transitions_total", to="in_progress")
    comments = sample("flyswatter_comments_created_total")

    issue = await team.issue()
    moved = await team["developer"].post(
        f"/api/v1/issues/{issue['key']}/transitions", json={"to": "in_progress"}
    )
    commented = await team["reporter"].post(
        f"/api/v1/issues/{issue['key']}/comments", json={"body": "Still broken"}
    )

    assert moved.status_code == 200, moved.text
    assert commented.status_code == 201, commented.text
    assert sample("flyswatter_issues_created_total") == created + 1
    assert sample("flyswatter_issue_transitions_total", to="in_progress") == resolved + 1
    assert sample("flyswatter_comments_created_total") == comments + 1


def _probe_app(endpoint_status: int, **noted: object) -> Starlette:
    """A bare app behind the middleware, answering one route as the error handlers would."""
    seen: dict[str, float] = {}

    async def endpoint(request: Request) -> PlainTextResponse:
        seen["in_progress"] = sample(
            "flyswatter_http_requests_in_progress", method="GET", route="/probe/{id}"
        )
        context = request_context(request.scope)
        for name, value in noted.items():
            setattr(context, name, value)
        return PlainTextResponse("ok", status_code=endpoint_status)

    app = Starlette(routes=[Route("/probe/{id}", endpoint)])
    app.add_middleware(HttpMetricsMiddleware)
    app.state.seen = seen
    return app


async def test_in_progress_gauge_counts_a_request_while_it_runs() -> None:
    app = _probe_app(200)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        baseline = sample("flyswatter_http_requests_in_progress", method="GET", route="/probe/{id}")
        assert (await c.get("/probe/1")).status_code == 200
    assert app.state.seen["in_progress"] == baseline + 1
    assert (
        sample("flyswatter_http_requests_in_progress", method="GET", route="/probe/{id}")
        == baseline
    )


@pytest.mark.parametrize(
    ("status", "kind"), [(503, "unavailable"), (409, "integrity"), (409, "rollback")]
)
async def test_database_errors_are_counted_by_kind(status: int, kind: str) -> None:
    app = _probe_app(status, database_error=kind)
    before = sample("flyswatter_database_errors_total", kind=kind)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/probe/2")).status_code == status
    assert sample("flyswatter_database_errors_total", kind=kind) == before + 1


def test_metrics_output_passes_promtool_check(project_root: Path) -> None:
    promtool = system_program("promtool", "prometheus")
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=render_metrics(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == b""
    assert checked.stderr == b""


WORKER = """
import os, sys
from flyswatter.observability.metrics import HTTP_IN_PROGRESS, HTTP_REQUESTS
HTTP_REQUESTS.labels("GET", "/api/v1/projects", "200").inc(int(sys.argv[1]))
HTTP_IN_PROGRESS.labels("GET", "/api/v1/projects").inc()
"""


def _exposed(directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(directory))
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(render_metrics().decode()):
        for s in family.samples:
            if s.labels.get("route") == "/api/v1/projects":
                values[s.name] = values.get(s.name, 0) + s.value
    return values


def test_dead_workers_keep_their_counts_and_lose_their_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {**os.environ, MULTIPROC_DIR_ENV: str(tmp_path)}
    for requests in (3, 4):  # two workers that served requests, then died
        subprocess.run(
            [sys.executable, "-c", WORKER, str(requests)], env=environment, check=True, timeout=60
        )
    assert len(list(tmp_path.glob("gauge_livesum_*.db"))) == 2

    exposed = _exposed(tmp_path, monkeypatch)

    assert exposed["flyswatter_http_requests_total"] == 7
    assert exposed.get("flyswatter_http_requests_in_progress", 0) == 0
    assert list(tmp_path.glob("gauge_livesum_*.db")) == []
    assert len(list(tmp_path.glob("counter_*.db"))) == 2


def test_serve_with_several_workers_gets_a_fresh_metrics_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    assert prepare_multiprocess_dir(1) is None
    assert MULTIPROC_DIR_ENV not in os.environ

    directory = prepare_multiprocess_dir(2)
    try:
        assert directory is not None
        assert os.environ[MULTIPROC_DIR_ENV] == str(directory)
        assert list(directory.iterdir()) == []
    finally:
        monkeypatch.delenv(MULTIPROC_DIR_ENV)
        if directory is not None:
            shutil.rmtree(directory)


def test_a_configured_metrics_directory_is_cleared_of_the_previous_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old samples")
    (tmp_path / "gauge_livesum_123.db").write_bytes(b"old samples")
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))

    assert prepare_multiprocess_dir(4) == tmp_path

    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def test_the_dashboard_is_provisionable_as_is(project_root: Path) -> None:
    dashboard = json.loads((project_root / "grafana/dashboards/flyswatter.json").read_text())
    datasource = yaml.safe_load(
        (project_root / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert dashboard["uid"] == "flyswatter-overview"
    assert "__inputs" not in dashboard
    panel_sources = [panel["datasource"] for panel in dashboard["panels"] if panel.get("targets")]
    assert panel_sources
    assert all(
        source == {"type": "prometheus", "uid": datasource["uid"]} for source in panel_sources
    )
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_compose_scrape_config_passes_promtool_check(project_root: Path) -> None:
    promtool = system_program("promtool", "prometheus")
    checked = subprocess.run(
        [promtool, "check", "config", str(project_root / "grafana/prometheus.yml")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
