"""Optimistic concurrency on issues: ETags, conditional reads and writes, parallel writers
that neither lose updates nor apply stale ones, and writes racing a member's removal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from flyswatter.config import Settings
from tests.support.api import Api, Team, make_team

ISSUE = "/api/v1/issues/FLY-1"
PARALLEL = 8


@pytest.fixture
async def team(api: Api) -> Team:
    team = await make_team(api)
    await team.issue()
    return team


async def current(team: Team) -> tuple[dict[str, Any], str]:
    response = await team["viewer"].get(ISSUE)
    assert response.status_code == 200
    return response.json(), response.headers["ETag"]


class TestConditionalRead:
    async def test_etag_follows_the_version(self, team: Team) -> None:
        _, etag = await current(team)
        assert etag.startswith('"issue-')
        assert etag.endswith('-v1"')
        changed = await team["developer"].patch(ISSUE, json={"title": "x"})
        assert changed.headers["ETag"] != etag
        assert changed.headers["ETag"].endswith('-v2"')
        assert (await current(team))[1] == changed.headers["ETag"]

    async def test_if_none_match_with_the_current_etag_is_a_304(self, team: Team) -> None:
        _, etag = await current(team)
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            response = await team["viewer"].get(ISSUE, headers={"If-None-Match": header})
            assert response.status_code == 304, header
            assert response.headers["ETag"] == etag
            assert response.content == b""

    async def test_if_none_match_with_an_old_etag_gets_the_issue(self, team: Team) -> None:
        _, etag = await current(team)
        await team["developer"].patch(ISSUE, json={"title": "x"})
        response = await team["viewer"].get(ISSUE, headers={"If-None-Match": etag})
        assert response.status_code == 200
        assert response.json()["title"] == "x"

    async def test_a_conditional_read_still_checks_access(self, team: Team) -> None:
        _, etag = await current(team)
        response = await team.outsider.get(ISSUE, headers={"If-None-Match": etag})
        assert response.status_code == 404


class TestConditionalWrite:
    @pytest.mark.parametrize(
        ("who", "method", "path", "body"),
        [
            ("developer", "PATCH", ISSUE, {"title": "stale"}),
            ("developer", "POST", f"{ISSUE}/transitions", {"to": "closed"}),
            ("developer", "POST", f"{ISSUE}/labels/ui", None),
            ("maintainer", "DELETE", ISSUE, None),
        ],
    )
    async def test_stale_if_match_is_rejected_with_412_and_nothing_changes(
        self, team: Team, who: str, method: str, path: str, body: dict[str, Any] | None
    ) -> None:
        await team.label("ui")
        _, stale = await current(team)
        await team["developer"].patch(ISSUE, json={"priority": "high"})
        before, now = await current(team)
        response = await team[who].request(method, path, json=body, headers={"If-Match": stale})
        assert response.status_code == 412
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["current_etag"] == now
        assert response.headers["ETag"] == now
        assert await current(team) == (before, now)

    @pytest.mark.parametrize(
        ("who", "method", "path", "body", "expected"),
        [
            ("developer", "PATCH", ISSUE, {"title": "fresh"}, 200),
            ("developer", "POST", f"{ISSUE}/transitions", {"to": "closed"}, 200),
            ("maintainer", "DELETE", ISSUE, None, 204),
        ],
    )
    async def test_current_if_match_applies(
        self,
        team: Team,
        who: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        expected: int,
    ) -> None:
        _, etag = await current(team)
        response = await team[who].request(method, path, json=body, headers={"If-Match": etag})
        assert response.status_code == expected

    async def test_if_match_star_or_a_list_holding_the_etag_applies(self, team: Team) -> None:
        first = await team["developer"].patch(ISSUE, json={"title": "a"}, headers={"If-Match": "*"})
        assert first.status_code == 200
        etag = first.headers["ETag"]
        listed = await team["developer"].patch(
            ISSUE, json={"title": "b"}, headers={"If-Match": f'"nope", {etag}'}
        )
        assert listed.status_code == 200

    async def test_conditional_write_by_an_outsider_is_a_404(self, team: Team) -> None:
        # A stranger learns nothing from a conditional write: not found, whatever the tag.
        response = await team.outsider.patch(
            ISSUE, json={"title": "x"}, headers={"If-Match": '"issue-1-v1"'}
        )
        assert response.status_code == 404


class TestParallelWriters:
    async def test_same_if_match_lets_exactly_one_writer_win(self, team: Team) -> None:
        _, etag = await current(team)

        async def write(i: int) -> int:
            response = await team["developer"].patch(
                ISSUE, json={"title": f"writer {i}"}, headers={"If-Match": etag}
            )
            return response.status_code

        statuses = await asyncio.gather(*(write(i) for i in range(PARALLEL)))
        assert sorted(statuses) == [200] + [412] * (PARALLEL - 1)
        issue, _ = await current(team)
        assert issue["version"] == 2
        assert issue["title"].startswith("writer ")

    async def test_unconditional_writers_lose_no_update(self, team: Team) -> None:
        names = [f"label-{i}" for i in range(PARALLEL)]
        for name in names:
            await team.label(name)

        async def attach(name: str) -> int:
            response = await team["developer"].post(f"{ISSUE}/labels/{name}")
            return response.status_code

        statuses = await asyncio.gather(*(attach(name) for name in names))
        assert statuses == [200] * PARALLEL
        issue, _ = await current(team)
        assert sorted(label["name"] for label in issue["labels"]) == sorted(names)
        assert issue["version"] == 1 + PARALLEL
        history = (await team["viewer"].get(f"{ISSUE}/activity?limit=50")).json()["items"]
        assert sorted(e["new_value"] for e in history if e["action"] == "labeled") == names

    async def test_parallel_field_edits_all_land(self, team: Team) -> None:
        edits = [
            {"title": "new title"},
            {"description": "new description"},
            {"priority": "critical"},
            {"type": "task"},
            {"assignee_id": team.ids["developer"]},
        ]
        responses = await asyncio.gather(
            *(team["developer"].patch(ISSUE, json=edit) for edit in edits)
        )
        assert [response.status_code for response in responses] == [200] * len(edits)
        issue, _ = await current(team)
        assert issue["title"] == "new title"
        assert issue["description"] == "new description"
        assert (issue["priority"], issue["type"]) == ("critical", "task")
        assert issue["assignee"]["id"] == team.ids["developer"]
        assert issue["version"] == 1 + len(edits)
        assert sorted(r.json()["version"] for r in responses) == list(range(2, 2 + len(edits)))

    async def test_parallel_transitions_apply_one_at_a_time(self, team: Team) -> None:
        responses = await asyncio.gather(
            *(
                team["developer"].post(f"{ISSUE}/transitions", json={"to": "in_progress"})
                for _ in range(PARALLEL)
            )
        )
        # The first moves it; the rest find it already in progress, where "in_progress" is
        # not a move the workflow offers.
        assert sorted(r.status_code for r in responses) == [200] + [409] * (PARALLEL - 1)
        issue, _ = await current(team)
        assert (issue["status"], issue["version"]) == ("in_progress", 2)


@pytest.mark.postgres_only
async def test_an_assignment_racing_the_assignees_removal_is_refused(
    team: Team, settings: Settings
) -> None:
    await team.issue()
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as removal:
            # The removal's first step, not yet committed: the member row is deleted.
            removal.execute(
                sa.text("DELETE FROM project_member WHERE user_id = :user"),
                {"user": team.ids["reporter"]},
            )
            assign = asyncio.create_task(
                team["developer"].patch(
                    "/api/v1/issues/FLY-1", json={"assignee_id": team.ids["reporter"]}
                )
            )
            await waiting_on_a_lock(engine, assign)
            removal.commit()
        response = await assign
    finally:
        engine.dispose()
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "assignee_id"]
    issue = (await team["developer"].get("/api/v1/issues/FLY-1")).json()
    assert issue["assignee"] is None


async def waiting_on_a_lock(engine: sa.Engine, request: asyncio.Task[Any]) -> None:
    """Until another backend waits on a row lock (the request under test), or the request
    is answered without waiting."""
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    for _ in range(200):
        if request.done():
            return
        with engine.connect() as connection:
            if connection.execute(query).scalar_one():
                return
        await asyncio.sleep(0.05)
    raise AssertionError("no request came to wait on the lock")
