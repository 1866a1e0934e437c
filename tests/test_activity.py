"""Activity history: every change recorded, by whom, from which client and request, in the
same transaction as the change itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event

from flyswatter.issues.models import Activity
from tests.support.api import Api, AuthedClient, Team, make_team, walk_pages

ACTIVITY = "/api/v1/issues/FLY-1/activity"


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


def summary(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (
        entry["action"],
        entry["field"],
        entry["old_value"],
        entry["new_value"],
        entry["actor"]["username"],
    )


async def history(client: AuthedClient, limit: int = 50) -> list[dict[str, Any]]:
    return await walk_pages(client, f"{ACTIVITY}?limit={limit}")


class TestRecorded:
    async def test_every_kind_of_change_is_recorded_oldest_first(self, team: Team) -> None:
        await team.label("ui")
        await team.label("bug")
        dev, dev_id = team["developer"], team.ids["developer"]
        await team.issue(title="Crash")
        await dev.patch("/api/v1/issues/FLY-1", json={"title": "Crash on save", "priority": "high"})
        await dev.patch("/api/v1/issues/FLY-1", json={"assignee_id": dev_id})
        await dev.patch("/api/v1/issues/FLY-1", json={"assignee_id": None})
        await dev.post("/api/v1/issues/FLY-1/transitions", json={"to": "in_progress"})
        await dev.post("/api/v1/issues/FLY-1/labels/ui")
        await dev.patch("/api/v1/issues/FLY-1", json={"labels": ["bug"]})
        await dev.delete("/api/v1/issues/FLY-1/labels/bug")
        comment = (await dev.post("/api/v1/issues/FLY-1/comments", json={"body": "on it"})).json()
        await dev.patch(f"/api/v1/comments/{comment['id']}", json={"body": "on it, today"})
        await dev.delete(f"/api/v1/comments/{comment['id']}")
        await dev.patch("/api/v1/issues/FLY-1", json={"description": "Steps", "type": "task"})

        entries = await history(team["viewer"], limit=3)
        assert [summary(entry) for entry in entries] == [
            ("created", "key", None, "FLY-1", "reporter"),
            ("updated", "title", "Crash", "Crash on save", "developer"),
            ("updated", "priority", "medium", "high", "developer"),
            ("assigned", "assignee_id", None, dev_id, "developer"),
            ("assigned", "assignee_id", dev_id, None, "developer"),
            ("transitioned", "status", "open", "in_progress", "developer"),
            ("labeled", "label", None, "ui", "developer"),
            ("labeled", "label", None, "bug", "developer"),
            ("unlabeled", "label", "ui", None, "developer"),
            ("unlabeled", "label", "bug", None, "developer"),
            ("commented", "comment_id", None, comment["id"], "developer"),
            ("comment_edited", "comment_id", None, comment["id"], "developer"),
            ("comment_deleted", "comment_id", comment["id"], None, "developer"),
            ("updated", "description", "", "Steps", "developer"),
            ("updated", "type", "bug", "task", "developer"),
        ]
        assert [entry["id"] for entry in entries] == sorted(entry["id"] for entry in entries)
        assert all(entry["client_id"] is None for entry in entries)
        times = [entry["created_at"] for entry in entries]
        assert times == sorted(times)
        assert all(time.endswith("Z") for time in times)

    async def test_a_change_that_changes_nothing_records_nothing(self, team: Team) -> None:
        await team.issue()
        await team["developer"].patch("/api/v1/issues/FLY-1", json={"title": "Crash on save"})
        await team["developer"].post("/api/v1/issues/FLY-1/labels/nope")
        await team["developer"].post("/api/v1/issues/FLY-1/transitions", json={"to": "resolved"})
        assert [entry["action"] for entry in await history(team["viewer"])] == ["created"]

    async def test_request_id_of_each_change_is_kept(self, team: Team) -> None:
        response = await team["reporter"].post(
            "/api/v1/projects/FLY/issues",
            json={"title": "x"},
            headers={"X-Request-ID": "req-create-1"},
        )
        assert response.status_code == 201
        await team["developer"].post(
            "/api/v1/issues/FLY-1/transitions",
            json={"to": "closed"},
            headers={"X-Request-ID": "req-close-2"},
        )
        await team["developer"].patch("/api/v1/issues/FLY-1", json={"title": "y"})
        entries = await history(team["viewer"])
        assert [entry["request_id"] for entry in entries[:2]] == ["req-create-1", "req-close-2"]
        generated = entries[2]["request_id"]
        assert generated
        assert generated not in {"req-create-1", "req-close-2"}

    async def test_service_account_changes_carry_the_client_id(self, team: Team, api: Api) -> None:
        bot = api.as_service("ci-bot")
        bot_id = await bot.sign_in()
        member = await team["maintainer"].put(
            f"/api/v1/projects/FLY/members/{bot_id}", json={"role": "developer"}
        )
        assert member.status_code == 201
        created = await bot.post("/api/v1/projects/FLY/issues", json={"title": "Nightly failed"})
        assert created.status_code == 201
        await bot.post("/api/v1/issues/FLY-1/transitions", json={"to": "in_progress"})
        await team["developer"].patch("/api/v1/issues/FLY-1", json={"priority": "high"})
        entries = await history(team["viewer"])
        assert [(e["actor"]["username"], e["client_id"]) for e in entries] == [
            ("service-account-ci-bot", "ci-bot"),
            ("service-account-ci-bot", "ci-bot"),
            ("developer", None),
        ]
        assert entries[0]["actor"]["is_service_account"] is True

    async def test_a_related_issue_of_a_project_the_reader_cannot_see_is_hidden(
        self, team: Team, api: Api
    ) -> None:
        stranger = api.as_user("stranger")
        await stranger.sign_in()
        assert (
            await stranger.post("/api/v1/projects", json={"key": "SEC", "name": "S"})
        ).is_success
        maintainer_id = team.ids["maintainer"]
        await stranger.put(
            f"/api/v1/projects/SEC/members/{maintainer_id}", json={"role": "developer"}
        )
        await stranger.post("/api/v1/projects/SEC/issues", json={"title": "secret"})
        await team.issue()
        await team.issue()
        owner = team["maintainer"]
        for target in ("SEC-1", "FLY-2"):
            relation = {"kind": "blocks", "target": target}
            assert (await owner.post(f"{ACTIVITY[:-9]}/relations", json=relation)).is_success
        assert (await owner.delete(f"{ACTIVITY[:-9]}/relations/blocks/SEC-1")).is_success
        related = [
            summary(entry)[:4]
            for entry in await history(team["viewer"])
            if entry["action"] in ("related", "unrelated")
        ]
        assert related == [
            ("related", "blocks", None, "(hidden)"),
            ("related", "blocks", None, "FLY-2"),
            ("unrelated", "blocks", "(hidden)", None),
        ]
        # Who may see both projects reads the key, and so does an admin.
        admin = api.as_user("root", roles=["flyswatter-admin"])
        for reader in (owner, admin):
            named = [e["new_value"] for e in await history(reader) if e["action"] == "related"]
            assert named == ["SEC-1", "FLY-2"]

    async def test_history_is_readable_by_viewers_only_within_the_project(self, team: Team) -> None:
        await team.issue()
        assert (await team["viewer"].get(ACTIVITY)).status_code == 200
        assert (await team.outsider.get(ACTIVITY)).status_code == 404
        assert (await team["viewer"].get("/api/v1/issues/FLY-2/activity")).status_code == 404

    async def test_history_is_append_only_through_the_api(self, team: Team) -> None:
        await team.issue()
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = await team["maintainer"].request(method, ACTIVITY, json={})
            assert response.status_code == 405

    async def test_bad_cursor_is_a_400(self, team: Team) -> None:
        await team.issue()
        assert (await team["viewer"].get(f"{ACTIVITY}?cursor=nonsense")).status_code == 400


@pytest.fixture
def failing_activity_insert(app: FastAPI) -> Iterator[None]:
    """Every insert into the history fails, after the change it records was already written
    (the history goes in at commit, in one statement of its own)."""
    table = Activity.__tablename__

    def fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()} "):
            raise RuntimeError("activity store unavailable")

    engine = app.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", fail)


class TestAtomicity:
    async def snapshot(self, team: Team) -> dict[str, Any]:
        viewer = team["viewer"]
        return {
            "issue": (await viewer.get("/api/v1/issues/FLY-1")).json(),
            "history": await history(viewer),
            "comments": (await viewer.get("/api/v1/issues/FLY-1/comments")).json(),
        }

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("PATCH", "/api/v1/issues/FLY-1", {"title": "new", "priority": "critical"}),
            ("PATCH", "/api/v1/issues/FLY-1", {"assignee_id": "developer"}),
            ("PATCH", "/api/v1/issues/FLY-1", {"labels": ["ui"]}),
            ("POST", "/api/v1/issues/FLY-1/transitions", {"to": "closed"}),
            ("POST", "/api/v1/issues/FLY-1/labels/ui", None),
            ("POST", "/api/v1/issues/FLY-1/comments", {"body": "lost"}),
        ],
    )
    async def test_failed_history_write_undoes_the_whole_change(
        self,
        team: Team,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        request: pytest.FixtureRequest,
    ) -> None:
        await team.label("ui")
        await team.issue()
        if body and body.get("assignee_id"):
            body = {"assignee_id": team.ids[body["assignee_id"]]}
        before = await self.snapshot(team)
        # Only from here on: reading back afterwards inserts no activity.
        request.getfixturevalue("failing_activity_insert")
        response = await team["developer"].request(method, path, json=body)
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert "activity store" not in response.text
        assert await self.snapshot(team) == before
