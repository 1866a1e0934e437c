"""Bulk changes: one change to many issues of a project, all or nothing unless asked for
partial application, each issue checked, recorded and announced as its single change."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from flyswatter.config import Settings
from tests.support.api import Api, AuthedClient, Team, make_team, walk_pages
from tests.test_events_outbox import stored_events
from tests.test_no_n_plus_one import counted_statements

ISSUES = "/api/v1/projects/FLY/issues"


@pytest.fixture
async def team(api: Api) -> Team:
    team = await make_team(api)
    await team.label("ui")
    await team.label("backend")
    return team


async def issue_versions(team: Team, count: int) -> list[int]:
    return [
        (await team["viewer"].get(f"/api/v1/issues/FLY-{n}")).json()["version"]
        for n in range(1, count + 1)
    ]


async def test_one_change_reaches_every_issue_with_its_history_and_event(
    team: Team, settings: Settings
) -> None:
    owner = team["maintainer"]
    await owner.post("/api/v1/projects/FLY/milestones", json={"title": "1.0"})
    for _ in range(3):
        await team.issue(labels=["backend"])
    change = {
        "status": "in_progress",
        "priority": "high",
        "assignee_id": team.ids["developer"],
        "add_labels": ["ui"],
        "remove_labels": ["backend"],
        "milestone": "1.0",
    }
    response = await team["developer"].patch(
        ISSUES,
        json={"issues": ["FLY-1", "fly-3", "FLY-2"], "change": change},
        headers={"X-Request-ID": "bulk-1"},
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(i["key"], i["outcome"]) for i in items] == [
        ("FLY-1", "applied"),
        ("FLY-3", "applied"),
        ("FLY-2", "applied"),
    ]
    for item in items:
        issue = item["issue"]
        assert (issue["status"], issue["priority"], issue["version"]) == ("in_progress", "high", 2)
        assert [label["name"] for label in issue["labels"]] == ["ui"]
        assert issue["assignee"]["id"] == team.ids["developer"]
        assert issue["milestone_id"] is not None
        assert item["problem"] is None
    history = (await team["viewer"].get("/api/v1/issues/FLY-3/activity")).json()["items"]
    changes = {(entry["field"], entry["request_id"]) for entry in history[1:]}
    assert changes == {
        (field, "bulk-1") for field in ("status", "priority", "assignee_id", "label", "milestone")
    }
    events = stored_events(settings)[3:]
    assert [event["type"] for event in events] == ["issue.transitioned"] * 3
    assert [event["doc"]["data"]["issue"]["key"] for event in events] == [
        "FLY-1",
        "FLY-3",
        "FLY-2",
    ]
    again = await team["developer"].patch(
        ISSUES, json={"issues": ["FLY-1"], "change": {"priority": "high"}}
    )
    assert again.json()["items"][0]["outcome"] == "unchanged"
    assert again.json()["items"][0]["issue"]["version"] == 2


async def three_issues_the_second_closed(team: Team) -> AuthedClient:
    """FLY-1 to FLY-3, FLY-2 closed; the developer who closed it."""
    for _ in range(3):
        await team.issue()
    developer = team["developer"]
    await developer.post("/api/v1/issues/FLY-2/transitions", json={"to": "closed"})
    return developer


async def test_by_default_nothing_changes_when_one_issue_may_not_take_the_change(
    team: Team, settings: Settings
) -> None:
    developer = await three_issues_the_second_closed(team)
    before = len(stored_events(settings))
    body = {
        "issues": ["FLY-1", "FLY-2", "FLY-3", "FLY-9", "OTH-1"],
        "change": {"status": "in_progress"},
    }
    response = await developer.patch(ISSUES, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:flyswatter:problem:bulk-change-refused"
    failures = {item["key"]: item["problem"]["status"] for item in problem["items"]}
    assert failures == {"FLY-2": 409, "FLY-9": 404, "OTH-1": 404}
    assert all(item["outcome"] == "failed" for item in problem["items"])
    assert await issue_versions(team, 3) == [1, 2, 1]
    assert len(stored_events(settings)) == before
    # When every failure has one status, the refusal has it too.
    forbidden = await team["reporter"].patch(
        ISSUES, json={"issues": ["FLY-1"], "change": {"priority": "low"}}
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["items"][0]["problem"]["instance"] == "/api/v1/issues/FLY-1"


async def test_a_status_an_issue_already_has_leaves_it_unchanged_not_refused(
    team: Team, settings: Settings
) -> None:
    developer = await three_issues_the_second_closed(team)
    closed = await team["viewer"].get("/api/v1/issues/FLY-2")
    history = (await team["viewer"].get("/api/v1/issues/FLY-2/activity")).json()["items"]
    before = len(stored_events(settings))
    moves = REGISTRY.get_sample_value("flyswatter_issue_transitions_total", {"to": "closed"}) or 0
    # Closing a selection some of which is closed already (or sending a bulk close again):
    # the status is what the change asks for, as a priority already so is.
    response = await developer.patch(
        ISSUES, json={"issues": ["FLY-1", "FLY-2"], "change": {"status": "closed"}}
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(item["key"], item["outcome"]) for item in items] == [
        ("FLY-1", "applied"),
        ("FLY-2", "unchanged"),
    ]
    assert items[1]["issue"]["version"] == closed.json()["version"]
    assert items[1]["issue"]["closed_at"] == closed.json()["closed_at"]
    again = await team["viewer"].get("/api/v1/issues/FLY-2")
    assert again.headers["ETag"] == closed.headers["ETag"]
    assert (await team["viewer"].get("/api/v1/issues/FLY-2/activity")).json()["items"] == history
    events = stored_events(settings)[before:]
    assert [event["doc"]["data"]["issue"]["key"] for event in events] == ["FLY-1"]
    # One issue moved, one counted.
    assert (
        REGISTRY.get_sample_value("flyswatter_issue_transitions_total", {"to": "closed"})
        == moves + 1
    )
    # With another field that does change, the issue changes in that field only.
    response = await developer.patch(
        ISSUES, json={"issues": ["FLY-2"], "change": {"status": "closed", "priority": "high"}}
    )
    assert response.json()["items"][0]["outcome"] == "applied"
    (event,) = stored_events(settings)[before + 1 :]
    assert event["type"] == "issue.updated"
    assert [change["field"] for change in event["doc"]["data"]["changes"]] == ["priority"]
    # Moving issues still takes a developer, whatever their status, as a single move does.
    refused = await team["reporter"].patch(
        ISSUES, json={"issues": ["FLY-2"], "change": {"status": "closed"}}
    )
    assert refused.status_code == 403, refused.text
    # A status the workflow cannot reach from where the issue is stays a 409.
    refused = await developer.patch(
        ISSUES, json={"issues": ["FLY-3"], "change": {"status": "resolved"}}
    )
    assert refused.status_code == 409, refused.text


async def test_partial_application_answers_207_and_changes_what_may_be_changed(
    team: Team,
) -> None:
    await team["maintainer"].post("/api/v1/projects/FLY/milestones", json={"title": "1.0"})
    await team.issue(author="reporter")
    await team.issue(author="developer")
    await team.issue(author="reporter")
    # Reporters may put their own issues in a milestone, not others'.
    body = {"issues": ["FLY-1", "FLY-2", "FLY-3"], "change": {"milestone": "1.0"}}
    response = await team["reporter"].patch(f"{ISSUES}?partial=true", json=body)
    assert response.status_code == 207, response.text
    items = response.json()["items"]
    assert [(i["key"], i["outcome"]) for i in items] == [
        ("FLY-1", "applied"),
        ("FLY-2", "failed"),
        ("FLY-3", "applied"),
    ]
    assert items[1]["problem"]["status"] == 403
    assert items[1]["issue"] is None
    assert await issue_versions(team, 3) == [2, 1, 2]


@pytest.mark.parametrize(
    "body",
    [
        {"issues": [], "change": {"priority": "low"}},
        {"issues": [f"FLY-{n}" for n in range(1, 102)], "change": {"priority": "low"}},
        {"issues": ["FLY-1", "fly-1"], "change": {"priority": "low"}},
        {"issues": ["FLY-1"], "change": {}},
        {"issues": ["FLY-1"], "change": {"add_labels": ["ui"], "remove_labels": ["ui"]}},
        {"issues": ["FLY-1"], "change": {"add_labels": ["nope"]}},
        {"issues": ["FLY-1"], "change": {"milestone": "nope"}},
        {"issues": ["FLY-1"], "change": {"assignee_id": "someone-else"}},
        {"issues": ["FLY-1"], "change": {"title": "not a bulk field"}},
    ],
)
async def test_an_invalid_bulk_change_is_a_422(team: Team, body: dict) -> None:
    await team.issue()
    response = await team["developer"].patch(ISSUES, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:flyswatter:problem:validation-error"


async def test_a_bulk_change_runs_as_many_statements_for_2_issues_as_for_50(
    team: Team, app: FastAPI
) -> None:
    await team["maintainer"].post("/api/v1/projects/FLY/milestones", json={"title": "1.0"})
    for _ in range(52):
        await team.issue(labels=["backend"])
    developer = team["developer"]
    change = {
        "status": "in_progress",
        "priority": "high",
        "assignee_id": team.ids["maintainer"],
        "add_labels": ["ui"],
        "remove_labels": ["backend"],
        "milestone": "1.0",
    }
    counts = {}
    for keys in (["FLY-1", "FLY-2"], [f"FLY-{n}" for n in range(3, 53)]):
        with counted_statements(app) as statements:
            response = await developer.patch(ISSUES, json={"issues": keys, "change": change})
        assert response.status_code == 200, response.text
        assert {item["outcome"] for item in response.json()["items"]} == {"applied"}
        counts[len(keys)] = len(statements)
    # On both backends: the history goes in one statement at commit (six entries an issue
    # here), the new assignee's following in one more.
    assert counts[2] == counts[50], counts


async def test_a_bulk_change_of_assignee_makes_the_new_assignee_follow_each_issue(
    team: Team,
) -> None:
    for _ in range(3):
        await team.issue()
    mine = "/api/v1/issues/FLY-2/watchers/me"
    assert (await team["maintainer"].delete(mine)).json()["following"] is False
    response = await team["developer"].patch(
        ISSUES,
        json={
            "issues": ["FLY-1", "FLY-2", "FLY-3"],
            "change": {"assignee_id": team.ids["maintainer"]},
        },
    )
    assert response.status_code == 200, response.text
    watching = await walk_pages(team["maintainer"], "/api/v1/users/me/watching?limit=2")
    # FLY-2 was unfollowed before: being assigned it does not undo that, as with one change.
    assert sorted(item["key"] for item in watching) == ["FLY-1", "FLY-3"]
    watchers = await walk_pages(team["viewer"], "/api/v1/issues/FLY-3/watchers")
    assert {item["user"]["username"] for item in watchers} == {"maintainer", "reporter"}
