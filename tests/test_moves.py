"""Moving an issue to another project: the next number there, the old key answering 301 to
readers and applying writes with Deprecation/Link headers, labels by name, history, comments
and relations kept, a chain of moves resolved in one lookup, both projects' roles checked."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy import select

from flyswatter.comments import service as comments_service
from flyswatter.config import Settings
from flyswatter.events.models import Event
from flyswatter.milestones.models import UNDATED_RANK
from tests.support.api import Api, AuthedClient, Team, make_team
from tests.test_concurrency import sent_while_held
from tests.test_no_n_plus_one import counted_statements


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


async def project(team: Team, key: str, **roles: str) -> None:
    """Another project of the team's maintainer, with these members (role name → role)."""
    owner = team["maintainer"]
    assert (await owner.post("/api/v1/projects", json={"key": key, "name": key})).status_code == 201
    for member, role in roles.items():
        url = f"/api/v1/projects/{key}/members/{team.ids[member]}"
        assert (await owner.put(url, json={"role": role})).status_code == 201


async def move(client: AuthedClient, key: str, to: str) -> tuple[int, dict]:
    response = await client.post(f"/api/v1/issues/{key}/move", json={"project": to})
    return response.status_code, response.json()


async def test_a_moved_issue_takes_the_next_number_and_its_old_key_keeps_answering(
    team: Team, app: FastAPI
) -> None:
    dev = team["developer"]
    await project(team, "OPS", developer="developer")
    for name in ("ui", "backend"):
        await team.label(name)
    owner = team["maintainer"]
    await owner.post("/api/v1/projects/OPS/labels", json={"name": "ui", "color": "#00ff00"})
    await owner.post("/api/v1/projects/OPS/issues", json={"title": "already there"})
    issue = await team.issue(labels=["ui", "backend"], assignee_id=team.ids["reporter"])
    other = await team.issue()
    assert (
        await dev.post(f"/api/v1/issues/{issue['key']}/comments", json={"body": "seen"})
    ).is_success
    relation = {"kind": "blocks", "target": other["key"]}
    assert (await dev.post(f"/api/v1/issues/{issue['key']}/relations", json=relation)).is_success

    status, moved = await move(dev, issue["key"], "ops")
    assert status == 200, moved
    assert moved["key"] == "OPS-2"
    assert moved["project_key"] == "OPS"
    # The label OPS has is kept (OPS's own); the one it lacks is dropped; the reporter, not a
    # member of OPS, is unassigned.
    assert [label["name"] for label in moved["labels"]] == ["ui"]
    assert moved["labels"][0]["color"] == "#00ff00"
    assert moved["assignee"] is None

    # Readers of the old key are sent to the new one, below the issue too.
    response = await dev.get(f"/api/v1/issues/{issue['key']}")
    assert response.status_code == 301
    assert response.headers["Location"] == "/api/v1/issues/OPS-2"
    response = await dev.get(f"/api/v1/issues/{issue['key']}/comments?limit=5")
    assert response.status_code == 301
    assert response.headers["Location"] == "/api/v1/issues/OPS-2/comments?limit=5"
    # Writers of the old key change the issue, and are told its successor.
    response = await dev.patch(f"/api/v1/issues/{issue['key']}", json={"priority": "high"})
    assert response.status_code == 200, response.text
    assert response.json()["key"] == "OPS-2"
    assert response.json()["priority"] == "high"
    assert response.headers["Deprecation"].startswith("@")
    assert response.headers["Link"] == '</api/v1/issues/OPS-2>; rel="successor-version"'

    # History, comments and relations stay with the issue.
    comments = (await dev.get("/api/v1/issues/OPS-2/comments")).json()["items"]
    assert [comment["body"] for comment in comments] == ["seen"]
    entries = (await dev.get("/api/v1/issues/OPS-2/activity")).json()["items"]
    changes = [(e["action"], e["field"], e["old_value"], e["new_value"]) for e in entries]
    assert ("moved", "key", issue["key"], "OPS-2") in changes
    assert ("unlabeled", "label", "backend", None) in changes
    assert ("assigned", "assignee_id", team.ids["reporter"], None) in changes
    assert changes[0] == ("created", "key", None, issue["key"])
    related = (await dev.get(f"/api/v1/issues/{other['key']}/relations")).json()["items"]
    assert [(r["kind"], r["issue"]["key"]) for r in related] == [("blocked_by", "OPS-2")]
    # The move's event is in the new project, naming the old key and the new.
    async with app.services.engine.connect() as connection:
        payloads = (await connection.execute(select(Event.payload))).scalars().all()  # type: ignore[call-overload]
    moves = [
        (event["project_key"], change["old"], change["new"])
        for event in map(json.loads, payloads)
        for change in event["data"]["changes"]
        if change["action"] == "moved"
    ]
    assert moves == [("OPS", issue["key"], "OPS-2")]


async def test_a_moved_issue_keeps_its_milestone_by_title_or_leaves_it(team: Team) -> None:
    owner = team["maintainer"]
    await project(team, "OPS")

    async def milestone(key: str, title: str, due_on: str | None = None) -> int:
        body = {"title": title, "due_on": due_on}
        created = await owner.post(f"/api/v1/projects/{key}/milestones", json=body)
        assert created.status_code == 201, created.text
        return int(created.json()["id"])

    only_fly = await milestone("FLY", "1.0")
    fly_two = await milestone("FLY", "2.0", "2030-01-01")
    ops_two = await milestone("OPS", "2.0", "2031-06-01")
    await milestone("OPS", "3.0", "2029-01-01")
    leaving = (await team.issue(milestone="1.0"))["key"]
    staying = (await team.issue(milestone="2.0"))["key"]

    # OPS has no milestone 1.0: the issue leaves FLY's, and its history says so.
    status, left = await move(owner, leaving, "OPS")
    assert status == 200, left
    assert left["milestone_id"] is None
    entries = (await owner.get(f"/api/v1/issues/{left['key']}/activity")).json()["items"]
    assert [(e["old_value"], e["new_value"]) for e in entries if e["field"] == "milestone"] == [
        ("1.0", None)
    ]
    # OPS has a 2.0, which the issue is in now, with OPS's due date.
    status, kept = await move(owner, staying, "OPS")
    assert status == 200, kept
    assert kept["milestone_id"] == ops_two
    entries = (await owner.get(f"/api/v1/issues/{kept['key']}/activity")).json()["items"]
    assert [e for e in entries if e["field"] == "milestone"] == []

    async def listed(query: str) -> list[str]:
        response = await owner.get(f"/api/v1/projects/OPS/issues?{query}")
        assert response.status_code == 200, response.text
        return [issue["key"] for issue in response.json()["items"]]

    assert await listed("milestone=none") == [left["key"]]
    assert await listed("milestone=2.0") == [kept["key"]]
    assert await listed("sort=milestone_due") == [kept["key"], left["key"]]
    for milestone_id in (only_fly, fly_two):
        counted = (await owner.get(f"/api/v1/projects/FLY/milestones/{milestone_id}")).json()
        assert (counted["open_issues"], counted["closed_issues"]) == (0, 0)
    counted = (await owner.get(f"/api/v1/projects/OPS/milestones/{ops_two}")).json()
    assert counted["open_issues"] == 1


async def test_a_chain_of_moves_resolves_in_one_lookup(team: Team, app: FastAPI) -> None:
    dev = team["developer"]
    await project(team, "OPS", developer="developer")
    await project(team, "WEB", developer="developer")
    key = (await team.issue())["key"]
    assert (await move(dev, key, "OPS"))[0] == 200
    assert (await move(dev, "OPS-1", "WEB"))[0] == 200
    assert (await dev.get("/api/v1/issues/OPS-1")).headers["Location"] == "/api/v1/issues/WEB-1"
    with counted_statements(app) as statements:
        response = await dev.get(f"/api/v1/issues/{key}")
    assert response.status_code == 301
    assert response.headers["Location"] == "/api/v1/issues/WEB-1"
    # The read that found no issue, then the one lookup of the old key.
    assert len(statements) == 2
    # Moving back gives a new number; the first key still names the issue.
    status, back = await move(dev, "WEB-1", "FLY")
    assert status == 200
    assert back["key"] == "FLY-2"
    assert (await dev.get(f"/api/v1/issues/{key}")).headers["Location"] == "/api/v1/issues/FLY-2"


async def test_moving_needs_the_developer_role_in_both_projects(team: Team) -> None:
    dev = team["developer"]
    await project(team, "OPS", developer="reporter", reporter="developer")
    key = (await team.issue())["key"]
    # A reporter of the source, and a reporter of the destination, may not move it.
    assert (await move(team["reporter"], key, "OPS"))[0] == 403
    assert (await move(dev, key, "OPS"))[0] == 403
    # A project the caller is not in is not found; the issue's own project is no move.
    assert (await move(team["maintainer"], key, "NOPE"))[0] == 404
    assert (await move(team["viewer"], key, "OPS"))[0] == 403
    assert (await move(team["maintainer"], key, "FLY"))[0] == 422
    # Readers of an old key who may not see the issue's new project learn nothing.
    assert (await move(team["maintainer"], key, "OPS"))[0] == 200
    assert (await team["viewer"].get(f"/api/v1/issues/{key}")).status_code == 404
    assert (await team.outsider.get(f"/api/v1/issues/{key}")).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_a_comment_by_id_answers_when_its_issue_moves_while_it_is_looked_up(
    team: Team, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    dev = team["developer"]
    await project(team, "OPS", developer="developer")
    issue = await team.issue()
    posted = await dev.post(f"/api/v1/issues/{issue['key']}/comments", json={"body": "seen"})
    comment_url = posted.headers["Location"]
    assert (await move(dev, issue["key"], "OPS"))[0] == 200
    # The comment's issue key is read first, then its issue loaded by it: a move committed
    # in between leaves the first read with the old key, as this stand-in does.
    real = comments_service.load_issue_access

    async def with_the_key_read_before_the_move(*args: Any, **kwargs: Any) -> Any:
        session, principal, _key = args
        return await real(session, principal, issue["key"], **kwargs)

    monkeypatch.setattr(comments_service, "load_issue_access", with_the_key_read_before_the_move)
    body = {"body": "edited"} if method == "PATCH" else None
    response = await dev.request(method, comment_url, json=body)
    assert response.status_code == (204 if method == "DELETE" else 200), response.text


async def test_an_old_key_answers_404_once_its_project_is_deleted(team: Team) -> None:
    """A deleted project is not found by any route, its keys included: the moved issue
    stays where it is, reachable under its new key only."""
    dev = team["developer"]
    await project(team, "OPS", developer="developer")
    issue = await team.issue()
    assert (await move(dev, issue["key"], "OPS"))[0] == 200
    deleted = await team["maintainer"].delete("/api/v1/projects/FLY")
    assert deleted.status_code == 204, deleted.text
    for client in (dev, team.api.as_user("root", roles=["flyswatter-admin"])):
        assert (await client.get(f"/api/v1/issues/{issue['key']}")).status_code == 404
        patched = await client.patch(f"/api/v1/issues/{issue['key']}", json={"priority": "low"})
        assert patched.status_code == 404
        assert (await client.get("/api/v1/issues/OPS-1")).status_code == 200


# What the destination's milestone goes through while an issue moves into it, as the
# milestone routes run it (the milestone locked FOR UPDATE first), and what the issue's
# milestone, due-date rank and milestone history are then.
MILESTONE_CHANGES = {
    "deleted": (
        ["DELETE FROM milestone WHERE id = :milestone"],
        (None, UNDATED_RANK, [("2.0", None)]),
    ),
    "given a new due date": (
        ["UPDATE milestone SET due_on = '2032-01-01', version = version + 1 WHERE id = :milestone"],
        ("kept", date(2032, 1, 1).toordinal(), []),
    ),
}


@pytest.mark.postgres_only
@pytest.mark.parametrize("change", MILESTONE_CHANGES.values(), ids=MILESTONE_CHANGES)
async def test_a_move_waits_for_a_change_of_the_milestone_it_keeps_by_title(
    team: Team, settings: Settings, change: tuple[list[str], tuple[Any, int, list[Any]]]
) -> None:
    """The move reads the new project's milestone of the same title once a change of it in
    flight is done: it used to read it before, and then either put the issue in a milestone
    that was gone (a foreign-key violation: a 409 for a move that could be made) or keep
    the old due date's rank."""
    statements, (milestone_id, rank, history) = change
    owner = team["maintainer"]
    await project(team, "OPS")
    for key in ("FLY", "OPS"):
        body = {"title": "2.0", "due_on": "2030-01-01"}
        created = await owner.post(f"/api/v1/projects/{key}/milestones", json=body)
        assert created.status_code == 201, created.text
    theirs = created.json()["id"]
    await team.issue(milestone="2.0")
    engine = sa.create_engine(settings.sync_database_url)
    try:
        held = [
            "SELECT id FROM project WHERE key = 'OPS' FOR KEY SHARE",
            "SELECT id FROM milestone WHERE id = :milestone FOR UPDATE",
            *statements,
        ]
        moving = owner.post("/api/v1/issues/FLY-1/move", json={"project": "OPS"})
        moved = await sent_while_held(engine, held, moving, {"milestone": theirs})
        with engine.connect() as connection:
            stored = connection.execute(
                sa.text("SELECT milestone_id, milestone_due_rank FROM issue")
            ).one()
    finally:
        engine.dispose()
    assert moved.status_code == 200, moved.text
    expected = theirs if milestone_id == "kept" else milestone_id
    assert (moved.json()["milestone_id"], *stored) == (expected, expected, rank)
    entries = (await owner.get("/api/v1/issues/OPS-1/activity")).json()["items"]
    assert [(e["old_value"], e["new_value"]) for e in entries if e["field"] == "milestone"] == (
        history
    )


@pytest.mark.parametrize("listing", ["activity", "comments"])
async def test_a_next_page_of_an_issues_list_still_reads_after_the_issue_moved(
    team: Team, listing: str
) -> None:
    """Its cursor is made for the issue, not its key: the next link of a page read before the
    move redirects to the new key and goes on from where the page ended."""
    dev = team["developer"]
    await project(team, "OPS", developer="developer")
    issue = await team.issue()
    for number in range(3):
        await dev.post(f"/api/v1/issues/{issue['key']}/comments", json={"body": f"c{number}"})
    first = await dev.get(f"/api/v1/issues/{issue['key']}/{listing}", params={"limit": 2})
    link = first.headers["Link"]
    assert (await move(dev, issue["key"], "OPS"))[0] == 200

    redirected = await dev.get(link[link.index("<") + 1 : link.index(">")])
    assert redirected.status_code == 301
    assert redirected.headers["Location"].startswith("/api/v1/issues/OPS-1/")
    rest = await dev.get(redirected.headers["Location"])
    assert rest.status_code == 200, rest.text
    everything = await dev.get(f"/api/v1/issues/OPS-1/{listing}", params={"limit": 100})
    items = everything.json()["items"]
    assert rest.json()["items"][0] == items[2]
