"""Milestones: a project's due-dated groups of issues, their progress, and the issue list's
milestone filter and sort."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import date
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from flyswatter.config import Settings
from flyswatter.milestones.models import UNDATED_RANK
from tests.support.api import Api, Team, make_team, walk_pages
from tests.support.database import stored_row
from tests.test_concurrency import sent_while_held
from tests.test_events_outbox import stored_events

MILESTONES = "/api/v1/projects/FLY/milestones"
ISSUES = "/api/v1/projects/FLY/issues"


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


async def milestone(team: Team, title: str, due_on: str | None = None, **fields: object) -> dict:
    body = {"title": title, "due_on": due_on, **fields}
    response = await team["maintainer"].post(MILESTONES, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def keys(team: Team, query: str) -> list[str]:
    items = await walk_pages(team["viewer"], f"{ISSUES}?{query}")
    return [issue["key"] for issue in items]


async def test_milestones_are_listed_by_due_date_then_title_undated_last(team: Team) -> None:
    created = await milestone(team, "Someday")
    assert created["state"] == "open"
    assert (created["open_issues"], created["closed_issues"]) == (0, 0)
    location = (
        await team["maintainer"].post(MILESTONES, json={"title": "Beta", "due_on": "2027-02-01"})
    ).headers["Location"]
    assert location.startswith(f"{MILESTONES}/")
    await milestone(team, "Alpha", "2027-02-01")
    await milestone(team, "Launch", "2027-01-15")
    await milestone(team, "Later")
    listed = await walk_pages(team["viewer"], f"{MILESTONES}?limit=2")
    assert [m["title"] for m in listed] == ["Launch", "Alpha", "Beta", "Later", "Someday"]
    read = await team["viewer"].get(location)
    assert read.json()["title"] == "Beta"
    closed = await walk_pages(team["viewer"], f"{MILESTONES}?state=closed")
    assert closed == []


async def test_titles_are_unique_in_a_project_and_none_is_reserved(team: Team) -> None:
    await milestone(team, "1.0")
    again = await team["maintainer"].post(MILESTONES, json={"title": "1.0"})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    reserved = await team["maintainer"].post(MILESTONES, json={"title": "None"})
    assert reserved.status_code == 422
    multiline = await team["maintainer"].post(MILESTONES, json={"title": "a\nb"})
    assert multiline.status_code == 422


async def test_progress_counts_resolved_and_closed_issues_as_closed(team: Team) -> None:
    release = await milestone(team, "1.0", "2027-03-31")
    for _ in range(4):
        await team.issue(milestone="1.0")
    developer = team["developer"]
    for key, path in (("FLY-1", ["closed"]), ("FLY-2", ["in_progress", "resolved"])):
        for status in path:
            moved = await developer.post(f"/api/v1/issues/{key}/transitions", json={"to": status})
            assert moved.status_code == 200, moved.text
    await team.issue()  # in no milestone
    read = (await team["viewer"].get(f"{MILESTONES}/{release['id']}")).json()
    assert (read["open_issues"], read["closed_issues"]) == (2, 2)
    (listed,) = (await team["viewer"].get(MILESTONES)).json()["items"]
    assert listed == read


async def test_an_issue_takes_its_milestone_by_title_and_its_history_records_it(
    team: Team, settings: Settings
) -> None:
    first = await milestone(team, "1.0")
    second = await milestone(team, "2.0")
    issue = await team.issue(milestone="1.0")
    assert issue["milestone_id"] == first["id"]
    moved = await team["developer"].patch("/api/v1/issues/FLY-1", json={"milestone": "2.0"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["milestone_id"] == second["id"]
    assert moved.json()["version"] == 2
    detached = await team["developer"].patch("/api/v1/issues/FLY-1", json={"milestone": None})
    assert detached.json()["milestone_id"] is None
    history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
    changes = [(e["field"], e["old_value"], e["new_value"]) for e in history[1:]]
    assert changes == [("milestone", "1.0", "2.0"), ("milestone", "2.0", None)]
    events = stored_events(settings)
    assert [event["type"] for event in events] == [
        "issue.created",
        "issue.updated",
        "issue.updated",
    ]
    assert events[1]["doc"]["data"]["changes"][0]["field"] == "milestone"
    assert events[1]["doc"]["data"]["issue"]["milestone_id"] == second["id"]


@pytest.mark.parametrize(
    "due_on",
    [0, 1798761600, 1798761600000, "1798761600", "2027-01-01T00:00:00", "2027-1-1"],
    ids=["zero", "seconds", "milliseconds", "seconds as text", "midnight", "unpadded"],
)
async def test_a_due_date_is_a_calendar_date_and_nothing_else(team: Team, due_on: object) -> None:
    """Only `YYYY-MM-DD`: a number (or a number as text, or a midnight) was read as a
    timestamp, so a client sending 0 for "no date" got a milestone due on 1970-01-01."""
    created = await team["maintainer"].post(MILESTONES, json={"title": "1.0", "due_on": due_on})
    assert created.status_code == 422, created.text
    assert created.json()["errors"][0]["loc"] == ["body", "due_on"]
    url = f"{MILESTONES}/{(await milestone(team, '1.0', '2027-01-01'))['id']}"
    patched = await team["maintainer"].patch(url, json={"due_on": due_on})
    assert patched.status_code == 422, patched.text
    assert (await team["viewer"].get(url)).json()["due_on"] == "2027-01-01"


async def test_a_milestone_of_another_project_or_none_at_all_is_refused_with_422(
    team: Team, api: Api
) -> None:
    owner = team["maintainer"]
    await owner.post("/api/v1/projects", json={"key": "OTH", "name": "Other"})
    theirs = await owner.post("/api/v1/projects/OTH/milestones", json={"title": "1.0"})
    assert theirs.status_code == 201
    refused = await owner.post(ISSUES, json={"title": "x", "milestone": "1.0"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "milestone"]
    await team.issue()
    patched = await owner.patch("/api/v1/issues/FLY-1", json={"milestone": "1.0"})
    assert patched.status_code == 422


async def test_a_stale_if_match_is_412_and_a_change_gives_a_new_etag(team: Team) -> None:
    created = await milestone(team, "1.0")
    url = f"{MILESTONES}/{created['id']}"
    first = await team["viewer"].get(url)
    etag = first.headers["ETag"]
    assert (await team["viewer"].get(url, headers={"If-None-Match": etag})).status_code == 304
    owner = team["maintainer"]
    changed = await owner.patch(url, json={"state": "closed"}, headers={"If-Match": etag})
    assert changed.status_code == 200, changed.text
    assert changed.json()["state"] == "closed"
    assert changed.headers["ETag"] != etag
    stale = await owner.patch(url, json={"title": "1.1"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert (await owner.delete(url, headers={"If-Match": etag})).status_code == 412
    assert (await team["developer"].patch(url, json={"title": "x"})).status_code == 403


async def test_if_none_match_star_on_an_existing_milestone_is_a_412(team: Team) -> None:
    url = f"{MILESTONES}/{(await milestone(team, '1.0'))['id']}"
    owner = team["maintainer"]
    star = {"If-None-Match": "*"}
    assert (await owner.patch(url, json={"title": "1.1"}, headers=star)).status_code == 412
    assert (await owner.delete(url, headers=star)).status_code == 412
    assert (await team["viewer"].get(url)).json()["title"] == "1.0"


async def test_the_etag_changes_with_the_progress_through_every_kind_of_issue_write(
    team: Team,
) -> None:
    created = await milestone(team, "1.0")
    url = f"{MILESTONES}/{created['id']}"
    owner, viewer = team["maintainer"], team["viewer"]
    assert (await owner.post("/api/v1/projects", json={"key": "OPS", "name": "O"})).is_success
    await team.issue()
    await team.issue()
    seen: list[str] = [(await viewer.get(url)).headers["ETag"]]
    writes = [
        ("PATCH", "/api/v1/issues/FLY-1", {"milestone": "1.0"}),
        ("POST", "/api/v1/issues/FLY-1/transitions", {"to": "closed"}),
        ("POST", "/api/v1/issues/FLY-1/transitions", {"to": "open"}),
        ("PATCH", ISSUES, {"issues": ["FLY-2"], "change": {"milestone": "1.0"}}),
        ("POST", "/api/v1/issues/FLY-2/move", {"project": "OPS"}),
        ("DELETE", "/api/v1/issues/FLY-1", None),
    ]
    for method, path, body in writes:
        done = await owner.request(method, path, json=body)
        assert done.is_success, (path, done.text)
        stale = await viewer.get(url, headers={"If-None-Match": seen[-1]})
        assert stale.status_code == 200, (method, path)
        assert stale.headers["ETag"] != seen[-1], (method, path)
        seen.append(stale.headers["ETag"])
    assert (stale.json()["open_issues"], stale.json()["closed_issues"]) == (0, 0)
    # If-Match compares with the same tag: the one before the last write is stale.
    refused = await owner.patch(url, json={"title": "1.1"}, headers={"If-Match": seen[-2]})
    assert refused.status_code == 412
    assert refused.json()["current_etag"] == seen[-1]
    changed = await owner.patch(url, json={"title": "1.1"}, headers={"If-Match": seen[-1]})
    assert changed.status_code == 200, changed.text
    assert (await viewer.get(url)).headers["ETag"] == changed.headers["ETag"]


async def test_deleting_a_milestone_detaches_its_issues_with_their_history(team: Team) -> None:
    created = await milestone(team, "1.0")
    await team.issue(milestone="1.0")
    await team.issue()
    before = (await team["viewer"].get("/api/v1/issues/FLY-1")).json()
    deleted = await team["maintainer"].delete(f"{MILESTONES}/{created['id']}")
    assert deleted.status_code == 204
    assert (await team["viewer"].get(f"{MILESTONES}/{created['id']}")).status_code == 404
    after = (await team["viewer"].get("/api/v1/issues/FLY-1")).json()
    assert after["milestone_id"] is None
    assert after["version"] == before["version"] + 1
    history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
    assert (history[-1]["field"], history[-1]["old_value"], history[-1]["new_value"]) == (
        "milestone",
        "1.0",
        None,
    )
    untouched = (await team["viewer"].get("/api/v1/issues/FLY-2")).json()
    assert untouched["version"] == 1


async def test_the_issue_list_filters_by_milestone_and_by_none(team: Team) -> None:
    await milestone(team, "1.0")
    await milestone(team, "2.0")
    await team.issue(milestone="1.0")
    await team.issue(milestone="2.0")
    await team.issue()
    await team.issue(milestone="1.0")
    assert await keys(team, "milestone=1.0&sort=created_at") == ["FLY-1", "FLY-4"]
    assert await keys(team, "milestone=none") == ["FLY-3"]
    assert await keys(team, "milestone=unknown") == []


async def test_the_issue_list_sorts_by_due_date_across_pages_and_follows_a_new_date(
    team: Team,
) -> None:
    await milestone(team, "late", "2027-06-01")
    early = await milestone(team, "early", "2027-01-01")
    await milestone(team, "undated")
    for title in ("late", "early", None, "undated", "early", "late"):
        await team.issue(**({"milestone": title} if title else {}))
    # Ties (one date, or none) in the order of the issues' ids.
    assert await keys(team, "sort=milestone_due&limit=2") == [
        "FLY-2",
        "FLY-5",
        "FLY-1",
        "FLY-6",
        "FLY-3",
        "FLY-4",
    ]
    assert await keys(team, "sort=-milestone_due&limit=4") == [
        "FLY-4",
        "FLY-3",
        "FLY-6",
        "FLY-1",
        "FLY-5",
        "FLY-2",
    ]
    moved = await team["maintainer"].patch(
        f"{MILESTONES}/{early['id']}", json={"due_on": "2028-01-01"}
    )
    assert moved.status_code == 200, moved.text
    assert await keys(team, "sort=milestone_due&limit=3") == [
        "FLY-1",
        "FLY-6",
        "FLY-2",
        "FLY-5",
        "FLY-3",
        "FLY-4",
    ]


# The rank of 2027-01-01, the due date the tests' issue writes read.
EARLY = date(2027, 1, 1).toordinal()
LATE = date(2030, 1, 1).toordinal()


def issue_write(milestone_id: int, rank: int = EARLY) -> list[str]:
    """An issue write in flight that puts FLY-1 in milestone ``milestone_id`` (the rank of the
    due date it read): the project row shared, the issue locked, its row changed (whose
    foreign-key check holds the milestone's row KEY SHARE)."""
    return [
        "SELECT id FROM project WHERE key = 'FLY' FOR KEY SHARE",
        "SELECT id FROM issue WHERE number = 1 FOR NO KEY UPDATE",
        f"UPDATE issue SET milestone_id = {milestone_id}, milestone_due_rank = {rank},"
        " version = version + 1 WHERE number = 1",
    ]


async def sent_while_writing(
    settings: Settings, milestone_id: int, send: Coroutine[Any, Any, httpx.Response]
) -> httpx.Response:
    """The answer to ``send``, sent while an issue write puts FLY-1 in the milestone
    (``issue_write``) and has not yet committed."""
    engine = sa.create_engine(settings.sync_database_url)
    try:
        return await sent_while_held(engine, issue_write(milestone_id), send)
    finally:
        engine.dispose()


def issue_row(settings: Settings) -> tuple[int | None, int, int]:
    query = "SELECT milestone_id, milestone_due_rank, version FROM issue"
    row = stored_row(settings.database_url, query)
    return row.milestone_id, row.milestone_due_rank, row.version


async def milestone_history(team: Team) -> list[tuple[str | None, str | None]]:
    entries = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
    return [(e["old_value"], e["new_value"]) for e in entries if e["field"] == "milestone"]


@pytest.mark.postgres_only
async def test_deleting_a_milestone_keeps_an_issue_moved_to_another_one_meanwhile(
    team: Team, settings: Settings
) -> None:
    """The deletion waits for the issue write in flight and detaches the issue only if it is
    still in the milestone then: it used to detach it from the milestone it had just joined,
    recording "1.0 -> none"."""
    leaving = await milestone(team, "1.0")
    other = await milestone(team, "2.0", "2027-01-01")
    await team.issue(milestone="1.0")
    deletion = team["maintainer"].delete(f"{MILESTONES}/{leaving['id']}")
    assert (await sent_while_writing(settings, other["id"], deletion)).status_code == 204
    assert issue_row(settings) == (other["id"], EARLY, 2)
    assert await milestone_history(team) == []


@pytest.mark.postgres_only
async def test_an_issue_joining_a_milestone_being_deleted_is_detached_with_its_history(
    team: Team, settings: Settings
) -> None:
    """The deletion waits for the write that puts an issue in the milestone, and detaches it
    as it does the others (a new version, the history, no rank of the gone due date); it used
    to leave that to the foreign key's ON DELETE SET NULL, which does none of that."""
    doomed = await milestone(team, "1.0", "2027-01-01")
    await team.issue()
    deletion = team["maintainer"].delete(f"{MILESTONES}/{doomed['id']}")
    assert (await sent_while_writing(settings, doomed["id"], deletion)).status_code == 204
    assert issue_row(settings) == (None, UNDATED_RANK, 3)
    assert await milestone_history(team) == [("1.0", None)]


@pytest.mark.postgres_only
async def test_a_new_due_date_reaches_an_issue_joining_the_milestone_meanwhile(
    team: Team, settings: Settings
) -> None:
    """The change waits for the write putting an issue in the milestone with the old date's
    rank, then gives it the new one; it used to answer at once and leave the old rank, so
    that `sort=milestone_due` placed the issue by a date the milestone no longer has."""
    release = await milestone(team, "1.0", "2027-01-01")
    await team.issue()
    change = team["maintainer"].patch(
        f"{MILESTONES}/{release['id']}", json={"due_on": "2030-01-01"}
    )
    assert (await sent_while_writing(settings, release["id"], change)).status_code == 200
    assert issue_row(settings) == (release["id"], date(2030, 1, 1).toordinal(), 2)


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("change", "answered", "stored"),
    [
        ("DELETE FROM milestone WHERE id = :id", 422, (None, UNDATED_RANK)),
        ("UPDATE milestone SET due_on = '2030-01-01' WHERE id = :id", 200, ("id", LATE)),
    ],
    ids=["deleted", "given a new due date"],
)
async def test_an_issue_put_in_a_milestone_waits_for_its_change_in_flight(
    team: Team, settings: Settings, change: str, answered: int, stored: tuple[object, int]
) -> None:
    """The issue write reads the milestone once its deletion or new due date commits: a 422
    naming the field for one gone (it used to fail at its foreign key with a bare 409), the
    new date's rank for one redated (it used to keep the old one's)."""
    release = await milestone(team, "1.0", "2027-01-01")
    await team.issue()
    engine = sa.create_engine(settings.sync_database_url)
    try:
        held = ["SELECT id FROM milestone WHERE id = :id FOR UPDATE", change]
        joining = team["developer"].patch("/api/v1/issues/FLY-1", json={"milestone": "1.0"})
        answer = await sent_while_held(engine, held, joining, {"id": str(release["id"])})
    finally:
        engine.dispose()
    assert answer.status_code == answered, answer.text
    if answered == 422:
        assert answer.json()["errors"][0]["loc"] == ["body", "milestone"]
    milestone_id, rank = stored
    assert issue_row(settings)[:2] == (release["id"] if milestone_id else None, rank)
