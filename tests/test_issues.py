"""Issues: creation, addressing by key, editing, assignment, workflow, deletion."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.api import Api, Team, make_team


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


class TestCreate:
    async def test_created_issue_has_key_number_defaults_and_location(self, team: Team) -> None:
        response = await team["reporter"].post(
            "/api/v1/projects/FLY/issues",
            json={"title": "  Crash on save  ", "description": "Steps:\n1. save"},
        )
        assert response.status_code == 201
        issue = response.json()
        assert response.headers["Location"] == "/api/v1/issues/FLY-1"
        assert response.headers["ETag"]
        assert issue["key"] == "FLY-1"
        assert issue["number"] == 1
        assert issue["title"] == "Crash on save"
        assert (issue["status"], issue["type"], issue["priority"]) == ("open", "bug", "medium")
        assert issue["reporter"]["username"] == "reporter"
        assert issue["assignee"] is None
        assert issue["labels"] == []
        assert issue["closed_at"] is None
        assert issue["version"] == 1
        assert issue["created_at"].endswith("Z")

    async def test_numbers_are_per_project_and_consecutive(self, team: Team, api: Api) -> None:
        other = api.as_user("other-owner")
        await other.post("/api/v1/projects", json={"key": "OTH", "name": "Other"})
        keys = [(await team.issue())["key"] for _ in range(3)]
        other_issue = await other.post("/api/v1/projects/OTH/issues", json={"title": "x"})
        assert keys == ["FLY-1", "FLY-2", "FLY-3"]
        assert other_issue.json()["key"] == "OTH-1"

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"title": ""},
            {"title": "   "},
            {"title": "x" * 201},
            {"title": "ok", "type": "epic"},
            {"title": "ok", "priority": "urgent"},
            {"title": "ok", "status": "closed"},
            {"title": "ok", "number": 7},
            {"title": "ok", "description": "x" * 65_537},
            {"title": "ok", "labels": "bug"},
        ],
    )
    async def test_invalid_body_is_a_422_and_creates_nothing(self, team: Team, body: dict) -> None:
        response = await team["reporter"].post("/api/v1/projects/FLY/issues", json=body)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        listing = await team["reporter"].get("/api/v1/projects/FLY/issues")
        assert listing.json()["items"] == []

    async def test_unknown_label_is_a_422(self, team: Team) -> None:
        response = await team["reporter"].post(
            "/api/v1/projects/FLY/issues", json={"title": "x", "labels": ["nope"]}
        )
        assert response.status_code == 422
        assert "nope" in response.json()["detail"]

    async def test_labels_given_at_creation_are_attached(self, team: Team) -> None:
        await team.label("bug")
        await team.label("ui", "#00ff00")
        issue = await team.issue(labels=["ui", "bug", "ui"])
        assert [label["name"] for label in issue["labels"]] == ["bug", "ui"]

    async def test_viewer_cannot_report_and_outsider_gets_404(self, team: Team) -> None:
        body = {"title": "x"}
        viewer = await team["viewer"].post("/api/v1/projects/FLY/issues", json=body)
        assert viewer.status_code == 403
        outsider = await team.outsider.post("/api/v1/projects/FLY/issues", json=body)
        assert outsider.status_code == 404

    async def test_archived_project_is_read_only(self, team: Team) -> None:
        await team.issue()
        archive = await team["maintainer"].patch("/api/v1/projects/FLY", json={"archived": True})
        assert archive.status_code == 200
        create = await team["reporter"].post("/api/v1/projects/FLY/issues", json={"title": "x"})
        assert create.status_code == 409
        edit = await team["developer"].patch("/api/v1/issues/FLY-1", json={"title": "y"})
        assert edit.status_code == 409
        assert (await team["viewer"].get("/api/v1/issues/FLY-1")).status_code == 200

    @pytest.mark.postgres_only
    async def test_fifty_concurrent_creates_get_fifty_consecutive_numbers(self, team: Team) -> None:
        async def create(i: int) -> int:
            response = await team["reporter"].post(
                "/api/v1/projects/FLY/issues", json={"title": f"race {i}"}
            )
            assert response.status_code == 201, response.text
            return int(response.json()["number"])

        numbers = await asyncio.gather(*(create(i) for i in range(50)))
        assert sorted(numbers) == list(range(1, 51))


class TestGetByKey:
    async def test_key_is_case_insensitive(self, team: Team) -> None:
        await team.issue()
        response = await team["viewer"].get("/api/v1/issues/fly-1")
        assert response.status_code == 200
        assert response.json()["key"] == "FLY-1"

    @pytest.mark.parametrize("key", ["FLY-2", "NOPE-1"])
    async def test_missing_issue_is_a_404(self, team: Team, key: str) -> None:
        await team.issue()
        assert (await team["viewer"].get(f"/api/v1/issues/{key}")).status_code == 404

    @pytest.mark.parametrize("key", ["FLY-0", "FLY", "FLY-01", "F-1", "FLY-x"])
    async def test_malformed_key_is_a_422(self, team: Team, key: str) -> None:
        assert (await team["viewer"].get(f"/api/v1/issues/{key}")).status_code == 422

    async def test_outsider_cannot_tell_whether_an_issue_exists(self, team: Team) -> None:
        await team.issue()
        existing = await team.outsider.get("/api/v1/issues/FLY-1")
        missing = await team.outsider.get("/api/v1/issues/FLY-99")
        assert existing.status_code == missing.status_code == 404


class TestEdit:
    async def test_developer_edits_fields_and_version_moves(self, team: Team) -> None:
        await team.issue()
        response = await team["developer"].patch(
            "/api/v1/issues/FLY-1",
            json={"title": "Crash on save (Windows)", "priority": "critical", "type": "bug"},
        )
        assert response.status_code == 200
        issue = response.json()
        assert issue["title"] == "Crash on save (Windows)"
        assert issue["priority"] == "critical"
        assert issue["version"] == 2
        assert issue["updated_at"] > issue["created_at"]

    async def test_patch_that_changes_nothing_keeps_the_version(self, team: Team) -> None:
        await team.issue()
        response = await team["developer"].patch(
            "/api/v1/issues/FLY-1", json={"title": "Crash on save"}
        )
        assert response.json()["version"] == 1

    async def test_reporter_edits_text_of_own_issue_only(self, team: Team) -> None:
        await team.issue(author="reporter")
        await team.issue(author="developer")
        own = await team["reporter"].patch("/api/v1/issues/FLY-1", json={"description": "more"})
        assert own.status_code == 200
        others = await team["reporter"].patch("/api/v1/issues/FLY-2", json={"description": "x"})
        assert others.status_code == 403
        priority = await team["reporter"].patch("/api/v1/issues/FLY-1", json={"priority": "high"})
        assert priority.status_code == 403

    async def test_reporter_may_send_back_unchanged_fields_it_may_not_change(
        self, team: Team
    ) -> None:
        # An edit form sends the whole issue: the fields sent as they are change nothing, so
        # they need no role; changing one of them still needs a developer.
        await team.label("bug")
        issue = await team.issue(author="reporter", labels=["bug"])
        await team.issue(author="developer")
        unchanged = {
            "type": issue["type"],
            "priority": issue["priority"],
            "assignee_id": None,
            "labels": ["bug"],
        }
        own = await team["reporter"].patch(
            "/api/v1/issues/FLY-1", json={"title": "Edited", **unchanged}
        )
        assert own.status_code == 200, own.text
        assert (own.json()["title"], own.json()["version"]) == ("Edited", 2)
        changed = await team["reporter"].patch(
            "/api/v1/issues/FLY-1", json={**unchanged, "priority": "high"}
        )
        assert changed.status_code == 403, changed.text
        others = await team["reporter"].patch(
            "/api/v1/issues/FLY-2", json={"title": "Edited", "priority": "medium"}
        )
        assert others.status_code == 403, others.text

    async def test_a_bulk_change_weighs_unchanged_fields_as_a_patch_does(self, team: Team) -> None:
        # A bulk change is checked as each issue's single change would be: the priority the
        # reporter's issue already has needs no developer there either.
        await team["maintainer"].post("/api/v1/projects/FLY/milestones", json={"title": "1.0"})
        await team.issue(author="reporter")
        change = {"priority": "medium", "assignee_id": None, "milestone": "1.0"}
        response = await team["reporter"].patch(
            "/api/v1/projects/FLY/issues", json={"issues": ["FLY-1"], "change": change}
        )
        assert response.status_code == 200, response.text
        (item,) = response.json()["items"]
        assert (item["outcome"], item["issue"]["milestone_id"]) == ("applied", 1)
        change["priority"] = "high"
        refused = await team["reporter"].patch(
            "/api/v1/projects/FLY/issues", json={"issues": ["FLY-1"], "change": change}
        )
        assert refused.status_code == 403, refused.text

    async def test_an_empty_description_and_no_labels_clear_them(self, team: Team) -> None:
        await team.label("ui")
        await team.issue(description="steps", labels=["ui"])
        response = await team["developer"].patch(
            "/api/v1/issues/FLY-1", json={"description": "", "labels": []}
        )
        assert response.status_code == 200, response.text
        assert (response.json()["description"], response.json()["labels"]) == ("", [])

    async def test_status_cannot_be_patched(self, team: Team) -> None:
        await team.issue()
        response = await team["developer"].patch("/api/v1/issues/FLY-1", json={"status": "closed"})
        assert response.status_code == 422


class TestAssignment:
    async def test_assign_to_self_and_to_another_member_then_unassign(self, team: Team) -> None:
        await team.issue()
        dev = team["developer"]
        me = await dev.patch("/api/v1/issues/FLY-1", json={"assignee_id": team.ids["developer"]})
        assert me.json()["assignee"]["username"] == "developer"
        other = await dev.patch("/api/v1/issues/FLY-1", json={"assignee_id": team.ids["viewer"]})
        assert other.json()["assignee"]["username"] == "viewer"
        cleared = await dev.patch("/api/v1/issues/FLY-1", json={"assignee_id": None})
        assert cleared.json()["assignee"] is None

    async def test_non_member_assignee_is_a_422(self, team: Team) -> None:
        await team.issue()
        response = await team["developer"].patch(
            "/api/v1/issues/FLY-1", json={"assignee_id": team.ids["outsider"]}
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "assignee_id"]
        unknown = await team["developer"].patch(
            "/api/v1/issues/FLY-1", json={"assignee_id": "no-such-user"}
        )
        assert unknown.status_code == 422

    async def test_reporter_may_self_assign_at_creation_but_not_assign_others(
        self, team: Team
    ) -> None:
        mine = await team.issue(assignee_id=team.ids["reporter"])
        assert mine["assignee"]["username"] == "reporter"
        response = await team["reporter"].post(
            "/api/v1/projects/FLY/issues", json={"title": "x", "assignee_id": team.ids["viewer"]}
        )
        assert response.status_code == 403


class TestWorkflow:
    async def move(self, team: Team, to: str, who: str = "developer") -> tuple[int, dict]:
        response = await team[who].post("/api/v1/issues/FLY-1/transitions", json={"to": to})
        return response.status_code, response.json()

    async def test_full_cycle_keeps_closed_at_right(self, team: Team) -> None:
        await team.issue()
        for to in ("in_progress", "resolved"):
            status, issue = await self.move(team, to)
            assert (status, issue["status"], issue["closed_at"]) == (200, to, None)
        status, closed = await self.move(team, "closed")
        assert closed["status"] == "closed"
        assert closed["closed_at"] is not None
        status, reopened = await self.move(team, "open")
        assert (reopened["status"], reopened["closed_at"]) == ("open", None)

    @pytest.mark.parametrize(
        ("path", "illegal"),
        [([], "resolved"), (["in_progress"], "closed"), (["closed"], "resolved"), ([], "open")],
    )
    async def test_illegal_move_is_a_409_naming_the_allowed_ones(
        self, team: Team, path: list[str], illegal: str
    ) -> None:
        await team.issue()
        for to in path:
            assert (await self.move(team, to))[0] == 200
        before = (await team["viewer"].get("/api/v1/issues/FLY-1")).json()
        status, problem = await self.move(team, illegal)
        assert status == 409
        assert problem["from"] == before["status"]
        assert illegal not in problem["allowed"]
        assert all(name in problem["detail"] for name in problem["allowed"])
        after = (await team["viewer"].get("/api/v1/issues/FLY-1")).json()
        assert after == before

    async def test_reporter_cannot_transition(self, team: Team) -> None:
        await team.issue()
        assert (await self.move(team, "in_progress", who="reporter"))[0] == 403

    async def test_unknown_status_is_a_422(self, team: Team) -> None:
        await team.issue()
        assert (await self.move(team, "done"))[0] == 422


class TestDelete:
    async def test_only_maintainers_delete(self, team: Team) -> None:
        await team.issue()
        assert (await team["developer"].delete("/api/v1/issues/FLY-1")).status_code == 403
        assert (await team["maintainer"].delete("/api/v1/issues/FLY-1")).status_code == 204
        assert (await team["viewer"].get("/api/v1/issues/FLY-1")).status_code == 404

    async def test_numbers_are_not_reused_after_delete(self, team: Team) -> None:
        await team.issue()
        await team["maintainer"].delete("/api/v1/issues/FLY-1")
        assert (await team.issue())["key"] == "FLY-2"
