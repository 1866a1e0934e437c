"""The scope matrix, generated from the app's own routes.

Every ``/api/v1`` route must declare scopes (or be listed here as open to any valid token):
no token is a 401, a token missing the route's scopes is a 403, and a caller outside the
project gets a 404. A new route without a scope fails ``test_every_route_declares_scopes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from flyswatter.app import create_app
from flyswatter.auth.scopes import Scope
from flyswatter.config import Settings
from tests.support.api import Api

# Routes any authenticated caller may use, whatever its scopes.
OPEN_TO_ANY_TOKEN = {("GET", "/api/v1/users/me")}
# Routes not inside one project: membership cannot hide them.
NOT_PROJECT_SCOPED = {
    ("GET", "/api/v1/users/me"),
    # The people of every project the caller may see (itself only, for a stranger).
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/projects"),
    ("POST", "/api/v1/projects"),
    # Lists the jobs of every project the caller may see (none, for a stranger).
    ("GET", "/api/v1/jobs"),
    # The caller's own: the issues it follows (in projects it may see), its preferences.
    ("GET", "/api/v1/users/me/watching"),
    ("GET", "/api/v1/users/me/preferences"),
    ("PATCH", "/api/v1/users/me/preferences"),
}
ALL_SCOPES = [scope.value for scope in Scope]


@dataclass(frozen=True)
class RouteCase:
    method: str
    path: str
    scopes: frozenset[str]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def all_cases() -> list[RouteCase]:
    """Every API operation with the scopes its OpenAPI entry declares."""
    schema = create_app(Settings(keycloak_url="http://127.0.0.1:9")).openapi()
    cases = []
    for path, operations in schema["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            scopes = frozenset(
                scope
                for requirement in operation.get("security", [])
                for scope in requirement.get("keycloak", [])
            )
            cases.append(RouteCase(method.upper(), path, scopes))
    return sorted(cases, key=str)


CASES = all_cases()
PROJECT_CASES = [case for case in CASES if (case.method, case.path) not in NOT_PROJECT_SCOPED]


class World:
    """A project FLY with one of everything, so every route has something to aim at."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {
            "key": "FLY",
            "issue_key": "FLY-1",
            "name": "bug",
            "kind": "relates_to",
            "target": "FLY-1",
        }

    def url(self, path: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: self.values.get(m.group(1), "1"), path)


# Valid bodies, so that what is checked is who may call, not what was sent.
SAMPLE_BODIES: dict[str, dict[str, object]] = {
    "PUT /api/v1/projects/{key}/members/{user_id}": {"role": "viewer"},
    "PATCH /api/v1/projects/{key}": {"name": "renamed"},
    "POST /api/v1/projects": {"key": "NEW", "name": "New"},
    "POST /api/v1/projects/{key}/issues": {"title": "Another"},
    "PATCH /api/v1/issues/{issue_key}": {"title": "Renamed"},
    "POST /api/v1/issues/{issue_key}/transitions": {"to": "in_progress"},
    "POST /api/v1/issues/{issue_key}/comments": {"body": "more"},
    "PATCH /api/v1/comments/{id}": {"body": "edited"},
    "POST /api/v1/projects/{key}/labels": {"name": "ui", "color": "#00ff00"},
    "PATCH /api/v1/projects/{key}/labels/{name}": {"color": "#0000ff"},
    "POST /api/v1/projects/{key}/webhooks": {"url": "https://93.184.215.14/hook"},
    "PATCH /api/v1/projects/{key}/webhooks/{webhook_id}": {"description": "renamed"},
    "POST /api/v1/projects/{key}/milestones": {"title": "2.0"},
    "PATCH /api/v1/projects/{key}/milestones/{milestone_id}": {"state": "closed"},
    "PATCH /api/v1/projects/{key}/issues": {"issues": ["FLY-1"], "change": {"priority": "high"}},
    "POST /api/v1/issues/{issue_key}/relations": {"kind": "relates_to", "target": "FLY-1"},
    "POST /api/v1/issues/{issue_key}/close-as-duplicate": {"of": "FLY-1"},
    "POST /api/v1/issues/{issue_key}/move": {"project": "FLY"},
    "PATCH /api/v1/users/me/preferences": {"auto_follow": False},
}


def body_for(case: RouteCase) -> dict[str, object] | None:
    if case.method not in ("POST", "PUT", "PATCH"):
        return None
    return SAMPLE_BODIES.get(str(case), {})


@pytest.fixture
async def world(api: Api) -> World:
    owner = api.as_user("owner")
    world = World()
    world.values["user_id"] = await owner.sign_in()
    response = await owner.post("/api/v1/projects", json={"key": "FLY", "name": "Fly"})
    assert response.status_code == 201
    issue = await owner.post("/api/v1/projects/FLY/issues", json={"title": "It breaks"})
    if issue.status_code == 201:
        comment = await owner.post("/api/v1/issues/FLY-1/comments", json={"body": "seen"})
        world.values["id"] = str(comment.json()["id"])
        await owner.post("/api/v1/projects/FLY/labels", json={"name": "bug", "color": "#d73a4a"})
    milestone = await owner.post("/api/v1/projects/FLY/milestones", json={"title": "1.0"})
    if milestone.status_code == 201:
        world.values["milestone_id"] = str(milestone.json()["id"])
    report = await owner.post("/api/v1/projects/FLY/reports")
    if report.status_code == 202:
        world.values["job_id"] = str(report.json()["id"])
    return world


def test_every_route_declares_scopes() -> None:
    unscoped = [
        str(case)
        for case in CASES
        if not case.scopes and (case.method, case.path) not in OPEN_TO_ANY_TOKEN
    ]
    assert unscoped == [], "routes without a scope"
    for case in CASES:
        assert case.scopes <= set(ALL_SCOPES), f"{case} requires an unknown scope"


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_no_token_is_401(case: RouteCase, client: httpx.AsyncClient, world: World) -> None:
    response = await client.request(case.method, world.url(case.path), json=body_for(case))
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize(
    "case", [c for c in CASES if (c.method, c.path) not in OPEN_TO_ANY_TOKEN], ids=str
)
async def test_token_without_the_routes_scope_is_403(
    case: RouteCase, api: Api, world: World
) -> None:
    others = [scope for scope in ALL_SCOPES if scope not in case.scopes]
    caller = api.as_user("owner", scopes=others)
    response = await caller.request(case.method, world.url(case.path), json=body_for(case))
    assert response.status_code == 403, response.text
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("case", PROJECT_CASES, ids=str)
async def test_caller_outside_the_project_gets_404(case: RouteCase, api: Api, world: World) -> None:
    stranger = api.as_user("stranger")
    response = await stranger.request(case.method, world.url(case.path), json=body_for(case))
    assert response.status_code == 404, response.text
