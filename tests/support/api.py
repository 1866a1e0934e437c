"""Calling the API as someone: real signed tokens, a project with people in every role, and
walking every page of a list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.identity import TokenFactory

ROLES = ("viewer", "reporter", "developer", "maintainer")


class Api:
    """A thin caller: ``api.as_user("alice").post(...)`` with a real signed token."""

    def __init__(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        self.client = client
        self.tokens = tokens

    def as_user(
        self, username: str, *, scopes: list[str] | None = None, **claims: Any
    ) -> AuthedClient:
        token = self.tokens.user_token(username, scopes=scopes, **claims)
        return AuthedClient(self.client, token)

    def as_service(self, client_id: str, *, scopes: list[str] | None = None) -> AuthedClient:
        return AuthedClient(self.client, self.tokens.service_token(client_id, scopes=scopes))


class AuthedClient:
    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.token = token

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(method, url, headers=self._headers(headers), **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    async def sign_in(self) -> str:
        """Call the API once so Flyswatter mirrors this identity; returns its user id."""
        response = await self.get("/api/v1/users/me")
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


@dataclass
class Team:
    """Project FLY with one member per role (``maintainer`` created it) and an outsider."""

    api: Api
    members: dict[str, AuthedClient]
    ids: dict[str, str]
    outsider: AuthedClient

    def __getitem__(self, role: str) -> AuthedClient:
        return self.members[role]

    async def issue(self, author: str = "reporter", **fields: object) -> dict:
        body = {"title": "Crash on save", **fields}
        response = await self.members[author].post("/api/v1/projects/FLY/issues", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def label(self, name: str, color: str = "#d73a4a") -> dict:
        response = await self.members["maintainer"].post(
            "/api/v1/projects/FLY/labels", json={"name": name, "color": color}
        )
        assert response.status_code == 201, response.text
        return response.json()


async def make_team(api: Api, key: str = "FLY") -> Team:
    members = {role: api.as_user(role) for role in ROLES}
    ids = {role: await client.sign_in() for role, client in members.items()}
    owner = members["maintainer"]
    created = await owner.post("/api/v1/projects", json={"key": key, "name": "Flyswatter"})
    assert created.status_code == 201, created.text
    for role in ("viewer", "reporter", "developer"):
        response = await owner.put(
            f"/api/v1/projects/{key}/members/{ids[role]}", json={"role": role}
        )
        assert response.status_code == 201, response.text
    outsider = api.as_user("outsider")
    ids["outsider"] = await outsider.sign_in()
    return Team(api=api, members=members, ids=ids, outsider=outsider)


async def walk_pages(client: AuthedClient, url: str, *, max_pages: int = 100) -> list[dict]:
    """Every item of a list, following ``Link: rel="next"`` until the last page.

    Checks on the way that ``next_cursor`` and the ``Link`` header agree on every page.
    """
    items: list[dict] = []
    next_url: str | None = url
    for _ in range(max_pages):
        if next_url is None:
            return items
        response = await client.get(next_url)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        link = response.headers.get("Link")
        if page["next_cursor"] is None:
            assert link is None
            next_url = None
        else:
            assert link is not None
            assert link.endswith('>; rel="next"')
            next_url = link[1 : link.index(">")]
            assert f"cursor={page['next_cursor']}" in next_url
    raise AssertionError(f"more than {max_pages} pages")
