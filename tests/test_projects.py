"""Projects and members: creation, visibility, management by role, pagination."""

from __future__ import annotations

import pytest

from tests.support.api import Api, AuthedClient

PROJECTS = "/api/v1/projects"


async def create_project(caller: AuthedClient, key: str = "FLY", **fields: str) -> dict:
    response = await caller.post(PROJECTS, json={"key": key, "name": f"Project {key}", **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def add_member(owner: AuthedClient, key: str, member: AuthedClient, role: str) -> str:
    user_id = await member.sign_in()
    response = await owner.put(f"{PROJECTS}/{key}/members/{user_id}", json={"role": role})
    assert response.status_code in (200, 201), response.text
    return user_id


class TestCreateProject:
    async def test_creator_becomes_maintainer_and_location_points_at_it(self, api: Api) -> None:
        alice = api.as_user("alice")
        response = await alice.post(
            PROJECTS, json={"key": "FLY", "name": "Flyswatter", "description": "bugs"}
        )
        assert response.status_code == 201
        assert response.headers["Location"] == "/api/v1/projects/FLY"
        body = response.json()
        assert body["key"] == "FLY"
        assert body["role"] == "maintainer"
        assert body["archived"] is False
        assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")

        members = (await alice.get(f"{PROJECTS}/FLY/members")).json()["items"]
        assert [(m["username"], m["role"]) for m in members] == [("alice", "maintainer")]

    @pytest.mark.parametrize("key", ["F", "fly", "FLY-1", "1FLY", "ABCDEFGHIJK", "FL Y", ""])
    async def test_malformed_key_is_rejected_with_422(self, api: Api, key: str) -> None:
        response = await api.as_user("alice").post(PROJECTS, json={"key": key, "name": "x"})
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["loc"] == ["body", "key"]

    @pytest.mark.parametrize("name", ["", " ", "   ", "\u3000", "\u00a0 "])
    async def test_blank_name_is_a_422_naming_the_field(self, api: Api, name: str) -> None:
        alice = api.as_user("alice")
        response = await alice.post(PROJECTS, json={"key": "BLANK", "name": name})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "name"]
        assert (await alice.get(f"{PROJECTS}/BLANK")).status_code == 404

    async def test_name_is_stored_without_surrounding_whitespace_like_a_title(
        self, api: Api
    ) -> None:
        created = await create_project(api.as_user("alice"), "FLY", name="  Flyswatter ")
        assert created["name"] == "Flyswatter"

    async def test_duplicate_key_is_a_409_and_changes_nothing(self, api: Api) -> None:
        alice, bob = api.as_user("alice"), api.as_user("bob")
        await create_project(alice, "FLY")
        response = await bob.post(PROJECTS, json={"key": "FLY", "name": "again"})
        assert response.status_code == 409
        assert response.json()["title"] == "Conflict"
        assert (await bob.get(PROJECTS)).json()["items"] == []
        assert (await alice.get(f"{PROJECTS}/FLY")).json()["name"] == "Project FLY"

    async def test_unknown_fields_are_rejected(self, api: Api) -> None:
        response = await api.as_user("alice").post(
            PROJECTS, json={"key": "FLY", "name": "x", "created_by": "someone-else"}
        )
        assert response.status_code == 422


class TestVisibility:
    async def test_non_member_gets_404_for_an_existing_project(self, api: Api) -> None:
        await create_project(api.as_user("alice"), "FLY")
        stranger = api.as_user("mallory")
        for method, path in [
            ("GET", f"{PROJECTS}/FLY"),
            ("GET", f"{PROJECTS}/FLY/members"),
            ("PATCH", f"{PROJECTS}/FLY"),
            ("DELETE", f"{PROJECTS}/FLY"),
        ]:
            kwargs = {"json": {"name": "pwned"}} if method == "PATCH" else {}
            response = await stranger.request(method, path, **kwargs)
            assert response.status_code == 404, (method, path)
            assert response.json()["detail"] == "project FLY not found"

        missing = await stranger.get(f"{PROJECTS}/NOPE")
        assert missing.json()["detail"] == "project NOPE not found"

    async def test_list_shows_only_projects_the_caller_belongs_to(self, api: Api) -> None:
        alice, bob = api.as_user("alice"), api.as_user("bob")
        await create_project(alice, "AAA")
        await create_project(bob, "BBB")
        await create_project(alice, "CCC")
        await add_member(alice, "CCC", bob, "viewer")
        keys = [p["key"] for p in (await bob.get(PROJECTS)).json()["items"]]
        assert keys == ["BBB", "CCC"]
        roles = {p["key"]: p["role"] for p in (await bob.get(PROJECTS)).json()["items"]}
        assert roles == {"BBB": "maintainer", "CCC": "viewer"}

    async def test_admin_sees_every_project(self, api: Api) -> None:
        await create_project(api.as_user("alice"), "AAA")
        admin = api.as_user("root", roles=["flyswatter-admin"])
        body = (await admin.get(PROJECTS)).json()
        assert [p["key"] for p in body["items"]] == ["AAA"]
        assert body["items"][0]["role"] is None
        assert (await admin.patch(f"{PROJECTS}/AAA", json={"name": "by admin"})).status_code == 200

    async def test_archived_projects_are_listed_only_on_request(self, api: Api) -> None:
        alice = api.as_user("alice")
        await create_project(alice, "OLD")
        await create_project(alice, "NEW")
        archived = await alice.patch(f"{PROJECTS}/OLD", json={"archived": True})
        assert archived.json()["archived"] is True
        assert [p["key"] for p in (await alice.get(PROJECTS)).json()["items"]] == ["NEW"]
        everything = (await alice.get(PROJECTS, params={"include_archived": "true"})).json()
        assert [(p["key"], p["archived"]) for p in everything["items"]] == [
            ("NEW", False),
            ("OLD", True),
        ]
        assert (await alice.get(f"{PROJECTS}/OLD")).json()["archived"] is True


class TestPagination:
    async def test_cursor_walks_every_project_once_with_link_headers(self, api: Api) -> None:
        alice = api.as_user("alice")
        keys = [f"P{i:02d}" for i in range(7)]
        for key in keys:
            await create_project(alice, key)
        seen: list[str] = []
        url: str | None = f"{PROJECTS}?limit=3"
        pages = 0
        while url:
            response = await alice.get(url)
            assert response.status_code == 200
            body = response.json()
            seen += [p["key"] for p in body["items"]]
            pages += 1
            if body["next_cursor"]:
                link = response.headers["Link"]
                assert link.endswith('>; rel="next"')
                assert "limit=3" in link
                url = link[1 : link.index(">")].removeprefix("http://testserver")
            else:
                assert "Link" not in response.headers
                url = None
        assert seen == keys
        assert pages == 3

    async def test_total_only_when_asked(self, api: Api) -> None:
        alice = api.as_user("alice")
        for key in ("AA", "BB"):
            await create_project(alice, key)
        assert (await alice.get(PROJECTS, params={"limit": 1})).json()["total"] is None
        counted = (await alice.get(PROJECTS, params={"limit": 1, "count": "true"})).json()
        assert counted["total"] == 2
        assert len(counted["items"]) == 1

    @pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "WyJ1c2VyIiwiYSJd", "%%%"])
    async def test_invalid_cursor_is_a_400(self, api: Api, cursor: str) -> None:
        response = await api.as_user("alice").get(PROJECTS, params={"cursor": cursor})
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize("limit", [0, -1, 201, "many"])
    async def test_limit_outside_1_to_200_is_a_422(self, api: Api, limit: object) -> None:
        response = await api.as_user("alice").get(PROJECTS, params={"limit": limit})
        assert response.status_code == 422


class TestManageProject:
    async def test_maintainer_updates_name_and_description(self, api: Api) -> None:
        alice = api.as_user("alice")
        before = await create_project(alice, "FLY")
        response = await alice.patch(f"{PROJECTS}/FLY", json={"description": "new"})
        assert response.status_code == 200
        body = response.json()
        assert body["description"] == "new"
        assert body["name"] == before["name"]
        assert body["updated_at"] >= before["updated_at"]

    @pytest.mark.parametrize("name", ["", " ", "   "])
    async def test_renaming_to_a_blank_name_is_a_422_and_changes_nothing(
        self, api: Api, name: str
    ) -> None:
        alice = api.as_user("alice")
        before = await create_project(alice, "FLY")
        response = await alice.patch(f"{PROJECTS}/FLY", json={"name": name})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "name"]
        assert (await alice.get(f"{PROJECTS}/FLY")).json()["name"] == before["name"]

    async def test_rename_strips_surrounding_whitespace(self, api: Api) -> None:
        alice = api.as_user("alice")
        await create_project(alice, "FLY")
        response = await alice.patch(f"{PROJECTS}/FLY", json={"name": " Renamed  "})
        assert response.status_code == 200
        assert response.json()["name"] == "Renamed"

    @pytest.mark.parametrize("role", ["viewer", "reporter", "developer"])
    async def test_only_maintainers_manage_the_project(self, api: Api, role: str) -> None:
        alice, bob = api.as_user("alice"), api.as_user("bob")
        await create_project(alice, "FLY")
        bob_id = await add_member(alice, "FLY", bob, role)
        assert (await bob.get(f"{PROJECTS}/FLY")).status_code == 200
        attempts = [
            await bob.patch(f"{PROJECTS}/FLY", json={"name": "x"}),
            await bob.delete(f"{PROJECTS}/FLY"),
            await bob.put(f"{PROJECTS}/FLY/members/{bob_id}", json={"role": "maintainer"}),
        ]
        assert [r.status_code for r in attempts] == [403, 403, 403]
        assert (await alice.get(f"{PROJECTS}/FLY")).json()["name"] == "Project FLY"

    async def test_archive_is_reversible_with_patch(self, api: Api) -> None:
        alice = api.as_user("alice")
        await create_project(alice, "FLY")
        assert (await alice.patch(f"{PROJECTS}/FLY", json={"archived": True})).status_code == 200
        response = await alice.patch(f"{PROJECTS}/FLY", json={"archived": False})
        assert response.json()["archived"] is False


class TestMembers:
    async def test_put_adds_then_changes_a_role(self, api: Api) -> None:
        alice, bob = api.as_user("alice"), api.as_user("bob")
        await create_project(alice, "FLY")
        bob_id = await bob.sign_in()
        added = await alice.put(f"{PROJECTS}/FLY/members/{bob_id}", json={"role": "reporter"})
        assert added.status_code == 201
        assert added.headers["Location"] == f"/api/v1/projects/FLY/members/{bob_id}"
        changed = await alice.put(f"{PROJECTS}/FLY/members/{bob_id}", json={"role": "developer"})
        assert changed.status_code == 200
        assert changed.json()["role"] == "developer"

    async def test_an_added_members_location_reads_the_membership(self, api: Api) -> None:
        # A 201's Location names what was made: following it must find it, not a 405.
        alice, bob, carol = api.as_user("alice"), api.as_user("bob"), api.as_user("carol")
        await create_project(alice, "FLY")
        bob_id = await bob.sign_in()
        await carol.sign_in()
        added = await alice.put(f"{PROJECTS}/FLY/members/{bob_id}", json={"role": "reporter"})
        read = await bob.get(added.headers["Location"])
        assert (read.status_code, read.json()) == (200, added.json())
        assert (await bob.get(f"{PROJECTS}/FLY/members/bob")).json() == added.json()
        # Someone known but no member, and a stranger to the project, are both not found.
        assert (await bob.get(f"{PROJECTS}/FLY/members/carol")).status_code == 404
        assert (await carol.get(added.headers["Location"])).status_code == 404

    async def test_unknown_role_is_a_422(self, api: Api) -> None:
        alice, bob = api.as_user("alice"), api.as_user("bob")
        await create_project(alice, "FLY")
        bob_id = await bob.sign_in()
        response = await alice.put(f"{PROJECTS}/FLY/members/{bob_id}", json={"role": "owner"})
        assert response.status_code == 422

    async def test_user_never_seen_cannot_be_added(self, api: Api) -> None:
        alice = api.as_user("alice")
        await create_project(alice, "FLY")
        response = await alice.put(f"{PROJECTS}/FLY/members/no-such-user", json={"role": "viewer"})
        assert response.status_code == 404

    async def test_service_accounts_are_recognised_and_can_be_members(self, api: Api) -> None:
        alice = api.as_user("alice")
        robot = api.as_service("ci-bot")
        me = (await robot.get("/api/v1/users/me")).json()
        assert me["is_service_account"] is True
        assert me["client_id"] == "ci-bot"
        assert me["username"] == "service-account-ci-bot"
        await create_project(alice, "FLY")
        await add_member(alice, "FLY", robot, "reporter")
        assert (await robot.get(f"{PROJECTS}/FLY")).json()["role"] == "reporter"

    async def test_last_maintainer_cannot_leave_or_be_demoted(self, api: Api) -> None:
        alice = api.as_user("alice")
        alice_id = await alice.sign_in()
        await create_project(alice, "FLY")
        demote = await alice.put(f"{PROJECTS}/FLY/members/{alice_id}", json={"role": "viewer"})
        assert demote.status_code == 409
        leave = await alice.delete(f"{PROJECTS}/FLY/members/{alice_id}")
        assert leave.status_code == 409
        assert (await alice.get(f"{PROJECTS}/FLY")).json()["role"] == "maintainer"

    async def test_member_may_leave_and_maintainer_may_remove(self, api: Api) -> None:
        alice, bob, carol = api.as_user("alice"), api.as_user("bob"), api.as_user("carol")
        await create_project(alice, "FLY")
        bob_id = await add_member(alice, "FLY", bob, "viewer")
        carol_id = await add_member(alice, "FLY", carol, "developer")
        assert (await bob.delete(f"{PROJECTS}/FLY/members/{bob_id}")).status_code == 204
        assert (await bob.get(f"{PROJECTS}/FLY")).status_code == 404
        assert (await alice.delete(f"{PROJECTS}/FLY/members/{carol_id}")).status_code == 204
        assert (await carol.get(f"{PROJECTS}/FLY")).status_code == 404

    async def test_members_list_is_paginated(self, api: Api) -> None:
        alice = api.as_user("alice")
        await create_project(alice, "FLY")
        for name in ("bob", "carol", "dave"):
            await add_member(alice, "FLY", api.as_user(name), "viewer")
        first = (await alice.get(f"{PROJECTS}/FLY/members", params={"limit": 2})).json()
        second = (
            await alice.get(
                f"{PROJECTS}/FLY/members", params={"limit": 2, "cursor": first["next_cursor"]}
            )
        ).json()
        names = [m["username"] for m in first["items"] + second["items"]]
        assert sorted(names) == ["alice", "bob", "carol", "dave"]
        assert second["next_cursor"] is None


class TestScopes:
    async def test_read_scope_cannot_write(self, api: Api) -> None:
        reader = api.as_user("alice", scopes=["projects:read"])
        response = await reader.post(PROJECTS, json={"key": "FLY", "name": "x"})
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
        assert response.json()["required_scopes"] == ["projects:write"]

    async def test_issue_scopes_do_not_open_projects(self, api: Api) -> None:
        caller = api.as_user("alice", scopes=["issues:read", "issues:write"])
        assert (await caller.get(PROJECTS)).status_code == 403

    async def test_no_token_is_a_401_with_bearer_challenge(self, api: Api) -> None:
        response = await api.client.get(PROJECTS)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert response.headers["content-type"] == "application/problem+json"
