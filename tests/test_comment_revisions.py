"""A comment's history: the texts its edits replaced, who wrote them and when, and removing a
text from it (a secret edited out), from the stored events too."""

from __future__ import annotations

import json

import pytest

from flyswatter.config import Settings
from tests.support.api import Api, Team, make_team, walk_pages
from tests.test_comments import COMMENTS
from tests.test_comments import team as team  # the team, and its issue FLY-1
from tests.test_events_outbox import stored_events


async def edited_comment(team: Team, *bodies: str, editors: tuple[str, ...] = ()) -> dict:
    """A comment the reporter wrote as ``bodies[0]``, then edited (by ``editors``, one per
    edit, the reporter by default) to each of the others in turn: its last version."""
    created = await team["reporter"].post(COMMENTS, json={"body": bodies[0]})
    assert created.status_code == 201, created.text
    comment = created.json()
    for index, body in enumerate(bodies[1:]):
        editor = editors[index] if index < len(editors) else "reporter"
        response = await team[editor].patch(
            f"/api/v1/comments/{comment['id']}", json={"body": body}
        )
        assert response.status_code == 200, response.text
        comment = response.json()
    return comment


def revisions_url(comment: dict) -> str:
    return f"/api/v1/comments/{comment['id']}/revisions"


async def test_each_edit_keeps_the_text_it_replaced_with_who_wrote_it_and_when(
    team: Team,
) -> None:
    first = await edited_comment(team, "Crashes on save")
    second = (
        await team["reporter"].patch(
            f"/api/v1/comments/{first['id']}", json={"body": "Crashes on save, 1.4 only"}
        )
    ).json()
    third = (
        await team["maintainer"].patch(
            f"/api/v1/comments/{first['id']}", json={"body": "Crashes on save (1.4)"}
        )
    ).json()
    # The same text again is no edit: no revision, no new version.
    same = await team["maintainer"].patch(
        f"/api/v1/comments/{first['id']}", json={"body": "Crashes on save (1.4)"}
    )
    assert same.json()["version"] == third["version"] == 3

    response = await team["viewer"].get(revisions_url(first))
    assert response.status_code == 200, response.text
    revisions = response.json()["items"]
    assert [
        (r["version"], r["body"], r["written_by"]["username"], r["replaced_by"]["username"])
        for r in revisions
    ] == [
        (1, "Crashes on save", "reporter", "reporter"),
        (2, "Crashes on save, 1.4 only", "reporter", "maintainer"),
    ]
    assert revisions[0]["written_at"] == first["created_at"]
    assert revisions[0]["replaced_at"] == revisions[1]["written_at"] == second["edited_at"]
    assert revisions[1]["replaced_at"] == third["edited_at"]
    assert all(r["removed_by"] is None and r["removed_at"] is None for r in revisions)
    # The text it has now is the comment's own, not a revision.
    shown = (await team["viewer"].get(f"/api/v1/comments/{first['id']}")).json()
    assert shown["body"] == "Crashes on save (1.4)"


async def test_a_text_a_maintainer_wrote_is_told_as_theirs_once_replaced(team: Team) -> None:
    comment = await edited_comment(
        team, "first", "the maintainer's", "the reporter's again", editors=("maintainer",)
    )
    revisions = (await team["viewer"].get(revisions_url(comment))).json()["items"]
    assert [(r["written_by"]["username"], r["replaced_by"]["username"]) for r in revisions] == [
        ("reporter", "maintainer"),
        ("maintainer", "reporter"),
    ]


async def test_the_history_pages_and_its_cursor_holds_for_its_comment_only(team: Team) -> None:
    comment = await edited_comment(team, "a", "b", "c", "d")
    other = await edited_comment(team, "x", "y")
    url = revisions_url(comment)
    everything = (await team["viewer"].get(url)).json()["items"]
    assert [r["body"] for r in everything] == ["a", "b", "c"]
    assert await walk_pages(team["viewer"], f"{url}?limit=1") == everything
    cursor = (await team["viewer"].get(url, params={"limit": 1})).json()["next_cursor"]
    elsewhere = await team["viewer"].get(revisions_url(other), params={"cursor": cursor})
    assert elsewhere.status_code == 400
    assert elsewhere.headers["content-type"] == "application/problem+json"


async def test_the_history_is_seen_by_who_sees_the_comment_and_goes_with_it(
    team: Team, api: Api
) -> None:
    comment = await edited_comment(team, "first", "second")
    assert (await team.outsider.get(revisions_url(comment))).status_code == 404
    no_read = api.as_user("viewer", scopes=["issues:write"])
    assert (await no_read.get(revisions_url(comment))).status_code == 403
    missing = await team["viewer"].get("/api/v1/comments/999999/revisions")
    assert missing.status_code == 404
    deleted = await team["reporter"].delete(f"/api/v1/comments/{comment['id']}")
    assert deleted.status_code == 204
    assert (await team["viewer"].get(revisions_url(comment))).status_code == 404


@pytest.mark.parametrize(
    ("who", "expected"),
    [("reporter", 200), ("maintainer", 200), ("developer", 403), ("viewer", 403)],
)
async def test_the_author_or_a_maintainer_may_remove_a_text_from_the_history(
    team: Team, who: str, expected: int
) -> None:
    comment = await edited_comment(team, "token=abc123", "token=<redacted>")
    response = await team[who].delete(f"{revisions_url(comment)}/1")
    assert response.status_code == expected, response.text
    (revision,) = (await team["viewer"].get(revisions_url(comment))).json()["items"]
    if expected == 200:
        assert response.json() == revision
        assert revision["body"] is None
        assert revision["removed_by"]["username"] == who
        assert revision["removed_at"] is not None
        # Who wrote it and when stay: the history still shows an edit was made.
        assert (revision["version"], revision["written_by"]["username"]) == (1, "reporter")
    else:
        assert response.headers["content-type"] == "application/problem+json"
        assert revision["body"] == "token=abc123"


async def test_removing_a_text_again_or_one_that_is_not_there_changes_nothing(
    team: Team,
) -> None:
    comment = await edited_comment(team, "one", "two")
    url = f"{revisions_url(comment)}/1"
    removed = await team["reporter"].delete(url)
    again = await team["maintainer"].delete(url)
    assert again.status_code == 200
    # Still removed by the first, at the first's time.
    assert again.json() == removed.json()
    for version in (2, 99):
        missing = await team["reporter"].delete(f"{revisions_url(comment)}/{version}")
        assert missing.status_code == 404, missing.text
        assert missing.headers["content-type"] == "application/problem+json"
    shown = (await team["viewer"].get(f"/api/v1/comments/{comment['id']}")).json()
    assert (shown["body"], shown["version"]) == ("two", 2)


async def test_a_removed_text_leaves_the_stored_events_and_the_others_stay(
    team: Team, settings: Settings
) -> None:
    comment = await edited_comment(team, "password: hunter2", "password: (rotated)", "thanks")
    await team["reporter"].delete(f"{revisions_url(comment)}/1")
    events = [event for event in stored_events(settings) if event["type"].startswith("comment.")]
    assert "hunter2" not in json.dumps(events)
    assert events[0]["doc"]["data"]["comment"] is None
    assert [event["doc"]["data"]["comment"]["body"] for event in events[1:]] == [
        "password: (rotated)",
        "thanks",
    ]


async def test_a_text_the_comment_has_again_stays_in_its_events(
    team: Team, settings: Settings
) -> None:
    comment = await edited_comment(team, "as it was", "changed", "as it was")
    before = stored_events(settings)
    assert (await team["reporter"].delete(f"{revisions_url(comment)}/1")).status_code == 200
    # Shown as the comment's text now, which its events carry.
    assert stored_events(settings) == before


async def test_no_text_is_removed_from_the_history_of_an_archived_project(team: Team) -> None:
    comment = await edited_comment(team, "kept", "edited")
    archived = await team["maintainer"].patch("/api/v1/projects/FLY", json={"archived": True})
    assert archived.status_code == 200
    refused = await team["maintainer"].delete(f"{revisions_url(comment)}/1")
    assert refused.status_code == 409, refused.text
    assert (await team["viewer"].get(revisions_url(comment))).json()["items"][0]["body"] == "kept"


async def test_a_retried_creation_shows_no_text_removed_from_the_history(team: Team) -> None:
    key = {"Idempotency-Key": "comment-once"}
    body = {"body": "api key: sk-live-123"}
    created = await team["reporter"].post(COMMENTS, json=body, headers=key)
    assert created.status_code == 201, created.text
    url = f"/api/v1/comments/{created.json()['id']}"
    edited = await team["reporter"].patch(url, json={"body": "api key: (removed)"})
    assert (await team["reporter"].delete(f"{url}/revisions/1")).status_code == 200
    # The retry still creates nothing; it answers with the comment as it is now.
    retried = await team["reporter"].post(COMMENTS, json=body, headers=key)
    assert retried.status_code == 201, retried.text
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert "sk-live" not in retried.text
    assert retried.json() == edited.json()
    assert retried.headers["ETag"] == edited.headers["ETag"]
    assert retried.headers["Location"] == url
    assert len((await team["viewer"].get(COMMENTS)).json()["items"]) == 1


async def test_a_retried_creation_of_a_deleted_comment_is_a_410_and_creates_nothing(
    team: Team,
) -> None:
    key = {"Idempotency-Key": "comment-once"}
    body = {"body": "customer's phone: 555-0100"}
    created = await team["reporter"].post(COMMENTS, json=body, headers=key)
    other = await team["reporter"].post(
        COMMENTS, json={"body": "kept"}, headers={"Idempotency-Key": "other"}
    )
    # Deleted by a maintainer, as moderation does.
    deleted = await team["maintainer"].delete(f"/api/v1/comments/{created.json()['id']}")
    assert deleted.status_code == 204
    retried = await team["reporter"].post(COMMENTS, json=body, headers=key)
    assert retried.status_code == 410, retried.text
    assert retried.headers["content-type"] == "application/problem+json"
    assert retried.json()["type"].endswith(":gone")
    assert "555" not in retried.text
    assert (await team["viewer"].get(COMMENTS)).json()["items"] == [other.json()]
    # Another comment's retry is untouched.
    again = await team["reporter"].post(
        COMMENTS, json={"body": "kept"}, headers={"Idempotency-Key": "other"}
    )
    assert (again.status_code, again.json()) == (201, other.json())


@pytest.mark.parametrize("moved", [False, True], ids=["in-place", "moved-first"])
async def test_a_retried_creation_of_a_deleted_issue_is_a_410_and_creates_nothing(
    team: Team, api: Api, moved: bool
) -> None:
    key = {"Idempotency-Key": "issue-once"}
    issue = {"title": "Login leaks the session token"}
    filed = await team["reporter"].post("/api/v1/projects/FLY/issues", json=issue, headers=key)
    url = f"/api/v1/issues/{filed.json()['key']}"
    if moved:
        # The retry names where it was created; the issue is deleted under its new key.
        await make_team(api, key="OPS")
        move = await team["maintainer"].post(f"{url}/move", json={"project": "OPS"})
        assert move.status_code == 200, move.text
        url = f"/api/v1/issues/{move.json()['key']}"
    commented = await team["reporter"].post(
        f"{url}/comments", json={"body": "token: abc"}, headers={"Idempotency-Key": "comment"}
    )
    assert commented.status_code == 201
    assert (await team["maintainer"].delete(url)).status_code == 204
    retried = await team["reporter"].post("/api/v1/projects/FLY/issues", json=issue, headers=key)
    assert retried.status_code == 410, retried.text
    assert "session token" not in retried.text
    listed = (await team["viewer"].get("/api/v1/projects/FLY/issues")).json()["items"]
    assert [found["key"] for found in listed] == ["FLY-1"]
