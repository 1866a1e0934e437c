"""Helpers shared by the issue-tracking tests: a project with people in every role."""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import Api, AuthedClient

ROLES = ("viewer", "reporter", "developer", "maintainer")


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
