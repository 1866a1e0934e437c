"""Following issues: explicitly or automatically (reporting, being assigned, commenting),
an unfollow that is remembered, the auto-follow switch, the caller's watched issues, the
watchers carried by every issue event, and only people who may see the issue as watchers."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from flyswatter.config import Settings
from flyswatter.events.models import Event
from tests.support.api import Api, AuthedClient, Team, make_team, walk_pages
from tests.test_events_outbox import stored_events

WATCHING = "/api/v1/users/me/watching"
PREFERENCES = "/api/v1/users/me/preferences"


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


async def watcher_names(client: AuthedClient, issue_key: str) -> list[str]:
    items = await walk_pages(client, f"/api/v1/issues/{issue_key}/watchers?limit=2")
    return sorted(item["user"]["username"] for item in items)


async def test_reporter_assignee_and_commenters_follow_automatically(team: Team) -> None:
    issue = await team.issue(assignee_id=team.ids["reporter"])
    key = issue["key"]
    assert await watcher_names(team["viewer"], key) == ["reporter"]
    patched = await team["developer"].patch(
        f"/api/v1/issues/{key}", json={"assignee_id": team.ids["maintainer"]}
    )
    assert patched.status_code == 200, patched.text
    comment = await team["developer"].post(f"/api/v1/issues/{key}/comments", json={"body": "+1"})
    assert comment.status_code == 201
    assert await watcher_names(team["viewer"], key) == ["developer", "maintainer", "reporter"]
    listed = (await team["viewer"].get(f"/api/v1/issues/{key}/watchers")).json()["items"]
    assert all(item["automatic"] for item in listed)


async def test_follow_and_unfollow_are_idempotent_and_an_unfollow_is_remembered(
    team: Team,
) -> None:
    key = (await team.issue())["key"]
    mine = f"/api/v1/issues/{key}/watchers/me"
    for _ in range(2):
        followed = await team["viewer"].put(mine)
        assert followed.json() == {"issue_key": key, "following": True}
    assert "viewer" in await watcher_names(team["viewer"], key)

    for _ in range(2):
        unfollowed = await team["reporter"].delete(mine)
        assert unfollowed.json() == {"issue_key": key, "following": False}
    assert (await team["reporter"].get(mine)).json()["following"] is False
    # Commenting would follow the issue; after an explicit unfollow it does not.
    await team["reporter"].post(f"/api/v1/issues/{key}/comments", json={"body": "still here"})
    assert await watcher_names(team["viewer"], key) == ["viewer"]
    assert (await team["reporter"].put(mine)).json()["following"] is True
    assert await watcher_names(team["viewer"], key) == ["reporter", "viewer"]


async def test_auto_follow_switched_off_leaves_the_person_out(team: Team) -> None:
    assert (await team["reporter"].get(PREFERENCES)).json() == {"auto_follow": True}
    changed = await team["reporter"].patch(PREFERENCES, json={"auto_follow": False})
    assert changed.status_code == 200
    assert changed.json() == {"auto_follow": False}
    assert (await team["reporter"].get(PREFERENCES)).json() == {"auto_follow": False}
    key = (await team.issue())["key"]
    await team["reporter"].post(f"/api/v1/issues/{key}/comments", json={"body": "quiet"})
    assert await watcher_names(team["viewer"], key) == []
    # Following explicitly still works.
    await team["reporter"].put(f"/api/v1/issues/{key}/watchers/me")
    assert await watcher_names(team["viewer"], key) == ["reporter"]


async def test_unknown_preferences_are_refused(team: Team) -> None:
    response = await team["reporter"].patch(PREFERENCES, json={"email_digest": True})
    assert response.status_code == 422


async def test_watching_lists_followed_issues_by_last_activity_across_pages(team: Team) -> None:
    keys = [(await team.issue(title=f"issue {n}"))["key"] for n in range(4)]
    # The oldest issue changes last, and a comment on the second is newer still.
    await team["developer"].patch(f"/api/v1/issues/{keys[0]}", json={"priority": "high"})
    await team["viewer"].put(f"/api/v1/issues/{keys[1]}/watchers/me")
    await team["developer"].post(f"/api/v1/issues/{keys[1]}/comments", json={"body": "news"})
    await team["reporter"].delete(f"/api/v1/issues/{keys[2]}/watchers/me")
    watched = await walk_pages(team["reporter"], f"{WATCHING}?limit=1")
    assert [issue["key"] for issue in watched] == [keys[1], keys[0], keys[3]]
    assert watched[1]["priority"] == "high"
    assert watched[1]["reporter"]["username"] == "reporter"


async def test_watching_leaves_out_projects_the_caller_may_no_longer_see(team: Team) -> None:
    await team.issue()
    assert len((await team["reporter"].get(WATCHING)).json()["items"]) == 1
    member = f"/api/v1/projects/FLY/members/{team.ids['reporter']}"
    removed = await team["maintainer"].delete(member)
    assert removed.status_code == 204
    assert (await team["reporter"].get(WATCHING)).json()["items"] == []


async def test_issue_events_carry_the_watchers(team: Team, settings: Settings) -> None:
    key = (await team.issue())["key"]
    await team["viewer"].put(f"/api/v1/issues/{key}/watchers/me")
    await team["developer"].post(f"/api/v1/issues/{key}/comments", json={"body": "on it"})
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as connection:
            payloads = connection.execute(
                sa.select(Event.payload).order_by(Event.id)  # type: ignore[arg-type]
            ).scalars()
            events = [json.loads(payload) for payload in payloads]
    finally:
        engine.dispose()
    watchers = {
        event["type"]: sorted(person["username"] for person in event["data"]["watchers"])
        for event in events
    }
    assert watchers == {
        "issue.created": ["reporter"],
        # The commenter follows in the same transaction, so the event names them already.
        "comment.created": ["developer", "reporter", "viewer"],
    }


def event_watchers(settings: Settings) -> list[tuple[str, list[str]]]:
    """Each stored event's type and the usernames it names as watchers, oldest first."""
    return [
        (event["doc"]["type"], sorted(p["username"] for p in event["doc"]["data"]["watchers"]))
        for event in stored_events(settings)
    ]


async def test_a_member_who_leaves_follows_the_projects_issues_no_more(
    team: Team, settings: Settings
) -> None:
    key = (await team.issue())["key"]  # the reporter follows it
    developer, owner = team["developer"], team["maintainer"]
    assert (await developer.post(f"/api/v1/issues/{key}/comments", json={"body": "a"})).is_success
    assert (await developer.delete(f"/api/v1/issues/{key}/watchers/me")).is_success
    for who in ("reporter", "developer"):
        left = await owner.delete(f"/api/v1/projects/FLY/members/{team.ids[who]}")
        assert left.status_code == 204, left.text
    assert (await team["reporter"].get(f"/api/v1/issues/{key}")).status_code == 404
    assert await watcher_names(team["viewer"], key) == []
    assert (await owner.post(f"/api/v1/issues/{key}/comments", json={"body": "fixed"})).is_success
    assert event_watchers(settings)[-1] == ("comment.created", ["maintainer"])
    # Back in the project, nobody follows again unasked, and an unfollow is still remembered.
    for who in ("reporter", "developer"):
        url = f"/api/v1/projects/FLY/members/{team.ids[who]}"
        assert (await owner.put(url, json={"role": who})).status_code == 201
    assert (await developer.post(f"/api/v1/issues/{key}/comments", json={"body": "b"})).is_success
    assert await watcher_names(team["viewer"], key) == ["maintainer"]


async def test_a_moved_issue_keeps_only_the_watchers_who_may_see_it_there(
    api: Api, team: Team, settings: Settings
) -> None:
    owner, admin = team["maintainer"], api.as_user("root", roles=["flyswatter-admin"])
    assert (await owner.post("/api/v1/projects", json={"key": "OPS", "name": "Ops"})).is_success
    url = f"/api/v1/projects/OPS/members/{team.ids['developer']}"
    assert (await owner.put(url, json={"role": "developer"})).status_code == 201
    key = (await team.issue())["key"]  # the reporter follows it
    # An admin, no member of either project, sees the issue in both.
    for who in (team["viewer"], team["developer"], admin):
        assert (await who.put(f"/api/v1/issues/{key}/watchers/me")).is_success
    moved = await owner.post(f"/api/v1/issues/{key}/move", json={"project": "OPS"})
    assert moved.status_code == 200, moved.text
    new_key = moved.json()["key"]
    assert (await team["viewer"].get(f"/api/v1/issues/{new_key}")).status_code == 404
    assert await watcher_names(owner, new_key) == ["developer", "root"]
    # The move's own event, in OPS, names only who may see the issue there.
    assert event_watchers(settings)[-1] == ("issue.updated", ["developer", "root"])


async def test_the_issues_of_an_archived_project_can_still_be_unfollowed_and_followed(
    team: Team,
) -> None:
    """Following is the caller's own standing, not a write of the issue: an archived project
    (read-only until a maintainer unarchives it) used to answer 409 to it, so that its
    issues stayed in the caller's watched list, and its events' watchers, for good."""
    key = (await team.issue())["key"]  # the reporter follows it
    mine = f"/api/v1/issues/{key}/watchers/me"
    archived = await team["maintainer"].patch("/api/v1/projects/FLY", json={"archived": True})
    assert archived.status_code == 200, archived.text
    reporter = team["reporter"]
    unfollowed = await reporter.delete(mine)
    assert unfollowed.status_code == 200, unfollowed.text
    assert unfollowed.json() == {"issue_key": key, "following": False}
    assert (await reporter.get(WATCHING)).json()["items"] == []
    followed = await team["viewer"].put(mine)
    assert followed.status_code == 200, followed.text
    assert await watcher_names(team["viewer"], key) == ["viewer"]
    # The issue itself still takes no write.
    edited = await team["developer"].patch(f"/api/v1/issues/{key}", json={"title": "late"})
    assert edited.status_code == 409
