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
