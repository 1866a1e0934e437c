"""DELETE means gone: after it, the resource and everything beneath it answer 404 on every
route; a deleted project's rows stay for an admin to restore. Archiving is a PATCH."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Api, AuthedClient

PROJECTS = "/api/v1/projects"


@pytest.fixture
async def world(api: Api) -> dict[str, Any]:
    owner = api.as_user("owner")
    member = api.as_user("member")
    member_id = await member.sign_in()
    assert (await owner.post(PROJECTS, json={"key": "FLY", "name": "F"})).status_code == 201
    await owner.put(f"{PROJECTS}/FLY/members/{member_id}", json={"role": "developer"})
    await owner.post(f"{PROJECTS}/FLY/labels", json={"name": "bug", "color": "#d73a4a"})
    await owner.post(f"{PROJECTS}/FLY/issues", json={"title": "first", "labels": ["bug"]})
    comment = await owner.post("/api/v1/issues/FLY-1/comments", json={"body": "hello"})
    return {"owner": owner, "member": member, "member_id": member_id, "comment": comment.json()}


def routes_beneath_the_project(world: dict[str, Any]) -> list[tuple[str, str, Any]]:
    comment, member_id = world["comment"]["id"], world["member_id"]
    return [
        ("GET", f"{PROJECTS}/FLY", None),
        ("PATCH", f"{PROJECTS}/FLY", {"name": "x"}),
        ("DELETE", f"{PROJECTS}/FLY", None),
        ("GET", f"{PROJECTS}/FLY/members", None),
        ("PUT", f"{PROJECTS}/FLY/members/{member_id}", {"role": "viewer"}),
        ("DELETE", f"{PROJECTS}/FLY/members/{member_id}", None),
        ("GET", f"{PROJECTS}/FLY/labels", None),
        ("POST", f"{PROJECTS}/FLY/labels", {"name": "new", "color": "#000000"}),
        ("PATCH", f"{PROJECTS}/FLY/labels/bug", {"color": "#000000"}),
        ("DELETE", f"{PROJECTS}/FLY/labels/bug", None),
        ("GET", f"{PROJECTS}/FLY/issues", None),
        ("POST", f"{PROJECTS}/FLY/issues", {"title": "t"}),
        ("GET", "/api/v1/issues/FLY-1", None),
        ("PATCH", "/api/v1/issues/FLY-1", {"title": "t"}),
        ("DELETE", "/api/v1/issues/FLY-1", None),
        ("POST", "/api/v1/issues/FLY-1/transitions", {"to": "in_progress"}),
        ("POST", "/api/v1/issues/FLY-1/labels/bug", None),
        ("DELETE", "/api/v1/issues/FLY-1/labels/bug", None),
        ("GET", "/api/v1/issues/FLY-1/activity", None),
        ("GET", "/api/v1/issues/FLY-1/comments", None),
        ("POST", "/api/v1/issues/FLY-1/comments", {"body": "b"}),
        ("GET", f"/api/v1/comments/{comment}", None),
        ("PATCH", f"/api/v1/comments/{comment}", {"body": "b"}),
        ("DELETE", f"/api/v1/comments/{comment}", None),
    ]


async def statuses(client: AuthedClient, routes: list[tuple[str, str, Any]]) -> dict[str, int]:
    return {
        f"{method} {path}": (await client.request(method, path, json=body)).status_code
        for method, path, body in routes
    }


class TestDeletedProject:
    async def test_every_route_beneath_a_deleted_project_is_a_404(
        self, api: Api, world: dict[str, Any]
    ) -> None:
        assert (await world["owner"].delete(f"{PROJECTS}/FLY")).status_code == 204
        admin = api.as_user("root", roles=["flyswatter-admin"])
        for who in (world["owner"], world["member"], admin):
            answers = await statuses(who, routes_beneath_the_project(world))
            assert set(answers.values()) == {404}, answers

    async def test_a_deleted_project_is_listed_nowhere(
        self, api: Api, world: dict[str, Any]
    ) -> None:
        await world["owner"].delete(f"{PROJECTS}/FLY")
        admin = api.as_user("root", roles=["flyswatter-admin"])
        for who in (world["owner"], admin):
            for query in ({}, {"include_archived": "true"}):
                assert (await who.get(PROJECTS, params=query)).json()["items"] == []

    async def test_its_key_stays_taken_until_it_is_restored(self, world: dict[str, Any]) -> None:
        await world["owner"].delete(f"{PROJECTS}/FLY")
        again = await world["owner"].post(PROJECTS, json={"key": "FLY", "name": "again"})
        assert again.status_code == 409

    async def test_an_admin_restores_it_with_everything_in_it(
        self, api: Api, world: dict[str, Any]
    ) -> None:
        owner = world["owner"]
        await owner.delete(f"{PROJECTS}/FLY")
        admin = api.as_user("root", roles=["flyswatter-admin"])
        restored = await admin.post(f"{PROJECTS}/FLY/restore")
        assert restored.status_code == 200, restored.text
        assert restored.json()["key"] == "FLY"
        issue = await owner.get("/api/v1/issues/FLY-1")
        assert issue.status_code == 200
        assert [label["name"] for label in issue.json()["labels"]] == ["bug"]
        assert (await owner.get(f"/api/v1/comments/{world['comment']['id']}")).status_code == 200
        members = (await owner.get(f"{PROJECTS}/FLY/members")).json()["items"]
        assert {m["user_id"] for m in members} >= {world["member_id"]}

    async def test_only_admins_may_restore_and_only_what_was_deleted(
        self, api: Api, world: dict[str, Any]
    ) -> None:
        owner = world["owner"]
        admin = api.as_user("root", roles=["flyswatter-admin"])
        assert (await admin.post(f"{PROJECTS}/FLY/restore")).status_code == 404  # not deleted
        await owner.delete(f"{PROJECTS}/FLY")
        assert (await owner.post(f"{PROJECTS}/FLY/restore")).status_code == 404
        assert (await admin.post(f"{PROJECTS}/NONE/restore")).status_code == 404
        assert (await owner.get(f"{PROJECTS}/FLY")).status_code == 404

    async def test_archiving_is_a_patch_and_keeps_it_readable(self, world: dict[str, Any]) -> None:
        owner = world["owner"]
        archived = await owner.patch(f"{PROJECTS}/FLY", json={"archived": True})
        assert archived.json()["archived"] is True
        assert (await owner.get("/api/v1/issues/FLY-1")).status_code == 200
        edit = await owner.patch("/api/v1/issues/FLY-1", json={"title": "frozen"})
        assert edit.status_code == 409
        listed = await owner.get(PROJECTS, params={"include_archived": "true"})
        assert [p["key"] for p in listed.json()["items"]] == ["FLY"]


class TestDeletedChildren:
    async def test_a_deleted_issue_and_its_comments_are_gone(self, world: dict[str, Any]) -> None:
        owner, comment = world["owner"], world["comment"]["id"]
        assert (await owner.delete("/api/v1/issues/FLY-1")).status_code == 204
        gone = [
            ("GET", "/api/v1/issues/FLY-1", None),
            ("PATCH", "/api/v1/issues/FLY-1", {"title": "t"}),
            ("DELETE", "/api/v1/issues/FLY-1", None),
            ("POST", "/api/v1/issues/FLY-1/transitions", {"to": "closed"}),
            ("POST", "/api/v1/issues/FLY-1/labels/bug", None),
            ("GET", "/api/v1/issues/FLY-1/activity", None),
            ("GET", "/api/v1/issues/FLY-1/comments", None),
            ("POST", "/api/v1/issues/FLY-1/comments", {"body": "b"}),
            ("GET", f"/api/v1/comments/{comment}", None),
            ("PATCH", f"/api/v1/comments/{comment}", {"body": "b"}),
            ("DELETE", f"/api/v1/comments/{comment}", None),
        ]
        answers = await statuses(owner, gone)
        assert set(answers.values()) == {404}, answers
        assert (await owner.get(f"{PROJECTS}/FLY/issues")).json()["items"] == []

    async def test_a_deleted_comment_is_gone(self, world: dict[str, Any]) -> None:
        owner, comment = world["owner"], world["comment"]["id"]
        assert (await owner.delete(f"/api/v1/comments/{comment}")).status_code == 204
        answers = await statuses(
            owner,
            [
                ("GET", f"/api/v1/comments/{comment}", None),
                ("PATCH", f"/api/v1/comments/{comment}", {"body": "b"}),
                ("DELETE", f"/api/v1/comments/{comment}", None),
            ],
        )
        assert set(answers.values()) == {404}, answers
        assert (await owner.get("/api/v1/issues/FLY-1/comments")).json()["items"] == []

    async def test_a_deleted_label_is_gone_from_the_project_and_its_issues(
        self, world: dict[str, Any]
    ) -> None:
        owner = world["owner"]
        assert (await owner.delete(f"{PROJECTS}/FLY/labels/bug")).status_code == 204
        answers = await statuses(
            owner,
            [
                ("PATCH", f"{PROJECTS}/FLY/labels/bug", {"color": "#000000"}),
                ("DELETE", f"{PROJECTS}/FLY/labels/bug", None),
                ("DELETE", "/api/v1/issues/FLY-1/labels/bug", None),
            ],
        )
        assert set(answers.values()) == {404}, answers
        assert (await owner.get("/api/v1/issues/FLY-1")).json()["labels"] == []

    async def test_a_removed_member_is_gone(self, world: dict[str, Any]) -> None:
        owner, member_id = world["owner"], world["member_id"]
        path = f"{PROJECTS}/FLY/members/{member_id}"
        assert (await owner.delete(path)).status_code == 204
        assert (await owner.delete(path)).status_code == 404
        members = (await owner.get(f"{PROJECTS}/FLY/members")).json()["items"]
        assert member_id not in {m["user_id"] for m in members}
        assert (await world["member"].get(f"{PROJECTS}/FLY")).status_code == 404
