"""An issue's ETag changes whenever its served document does, through related rows too, and
conditional requests compare tags as RFC 9110 13.1 says: strongly for ``If-Match``, weakly for
``If-None-Match``, with ``*`` and lists, on reads and writes alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.support.api import Api, AuthedClient, Team, make_team
from tests.support.identity import subject_of

ISSUE = "/api/v1/issues/FLY-1"
LABEL = "/api/v1/projects/FLY/labels/ui"


@pytest.fixture
async def team(api: Api) -> Team:
    team = await make_team(api)
    await team.label("ui")
    # Reported by the maintainer, assigned to the developer.
    await team.issue("maintainer", labels=["ui"], assignee_id=team.ids["developer"])
    return team


def renamed(api: Api, role: str, name: str) -> AuthedClient:
    """The same user, signed in again with another display name."""
    claims = api.tokens.claims(sub=subject_of(role), preferred_username=role, name=name)
    return AuthedClient(api.client, api.tokens.sign(claims))


async def rename_label(team: Team, api: Api) -> None:
    response = await team["maintainer"].patch(LABEL, json={"name": "interface"})
    assert response.status_code == 200, response.text


async def recolour_label(team: Team, api: Api) -> None:
    response = await team["maintainer"].patch(LABEL, json={"color": "#00ff00"})
    assert response.status_code == 200, response.text


async def delete_label(team: Team, api: Api) -> None:
    response = await team["maintainer"].delete(LABEL)
    assert response.status_code == 204, response.text


async def remove_assignee(team: Team, api: Api) -> None:
    member = f"/api/v1/projects/FLY/members/{team.ids['developer']}"
    response = await team["maintainer"].delete(member)
    assert response.status_code == 204, response.text


async def rename_assignee(team: Team, api: Api) -> None:
    await renamed(api, "developer", "Dev Eloper-Smith").sign_in()


async def rename_reporter(team: Team, api: Api) -> None:
    await renamed(api, "maintainer", "Maintainer, née Other").sign_in()


CHANGES: dict[str, Callable[[Team, Api], Awaitable[None]]] = {
    "label renamed": rename_label,
    "label recoloured": recolour_label,
    "label deleted": delete_label,
    "assignee removed from the project": remove_assignee,
    "assignee's display name changed": rename_assignee,
    "reporter's display name changed": rename_reporter,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_a_related_change_gives_the_issue_a_new_etag(
    team: Team, api: Api, change: str
) -> None:
    viewer, maintainer = team["viewer"], team["maintainer"]
    before = await viewer.get(ISSUE)
    old = before.headers["ETag"]
    await CHANGES[change](team, api)

    after = await viewer.get(ISSUE, headers={"If-None-Match": old})
    assert after.status_code == 200, after.text
    assert after.json() != before.json()
    assert after.headers["ETag"] != old
    stale = await maintainer.patch(ISSUE, json={"title": "Stale"}, headers={"If-Match": old})
    assert stale.status_code == 412, stale.text
    assert stale.json()["current_etag"] == after.headers["ETag"]


async def test_a_label_patch_that_changes_nothing_keeps_the_etag(team: Team) -> None:
    old = (await team["viewer"].get(ISSUE)).headers["ETag"]
    response = await team["maintainer"].patch(LABEL, json={"name": "ui"})
    assert response.status_code == 200, response.text
    assert (await team["viewer"].get(ISSUE, headers={"If-None-Match": old})).status_code == 304


async def test_signing_in_again_unchanged_keeps_the_etag(team: Team, api: Api) -> None:
    old = (await team["viewer"].get(ISSUE)).headers["ETag"]
    await renamed(api, "developer", "Developer").sign_in()
    assert (await team["viewer"].get(ISSUE, headers={"If-None-Match": old})).status_code == 304


# --- comparison -----------------------------------------------------------------------------


def if_match_cases(etag: str) -> dict[str, tuple[str, bool]]:
    """If-Match values and whether they match (strong comparison)."""
    return {
        "the tag": (etag, True),
        "the tag, weak": (f"W/{etag}", False),
        "any": ("*", True),
        "a list with the tag": (f'"other", {etag}', True),
        "a list with the tag weak": (f'"other", W/{etag}', False),
        "another tag": ('"other"', False),
        "not a tag": ("issue-1-v1", False),
    }


def if_none_match_cases(etag: str) -> dict[str, tuple[str, bool]]:
    """If-None-Match values and whether they match (weak comparison)."""
    return {
        "the tag": (etag, True),
        "the tag, weak": (f"W/{etag}", True),
        "any": ("*", True),
        "a list with the tag": (f'"other",{etag}', True),
        "a list with the tag weak": (f'W/"other", W/{etag}', True),
        "another tag": ('W/"other"', False),
        "not a tag": ("issue-1-v1", False),
    }


@pytest.mark.parametrize("case", sorted(if_match_cases('"x"')))
async def test_if_match_compares_strongly(team: Team, case: str) -> None:
    etag = (await team["viewer"].get(ISSUE)).headers["ETag"]
    header, matches = if_match_cases(etag)[case]
    response = await team["developer"].patch(
        ISSUE, json={"title": "Edited"}, headers={"If-Match": header}
    )
    assert response.status_code == (200 if matches else 412), response.text


@pytest.mark.parametrize("case", sorted(if_none_match_cases('"x"')))
async def test_if_none_match_compares_weakly(team: Team, case: str) -> None:
    etag = (await team["viewer"].get(ISSUE)).headers["ETag"]
    header, matches = if_none_match_cases(etag)[case]
    response = await team["viewer"].get(ISSUE, headers={"If-None-Match": header})
    assert response.status_code == (304 if matches else 200), response.text


@pytest.mark.parametrize("case", sorted(if_none_match_cases('"x"')))
async def test_if_none_match_on_a_write_is_a_412_when_it_matches(team: Team, case: str) -> None:
    # RFC 9110 13.1.2: a write meant only for a version the client does not know (or, with
    # "*", for a resource that does not exist yet) must not overwrite the current one.
    etag = (await team["viewer"].get(ISSUE)).headers["ETag"]
    header, matches = if_none_match_cases(etag)[case]
    response = await team["developer"].patch(
        ISSUE, json={"title": "Edited"}, headers={"If-None-Match": header}
    )
    assert response.status_code == (412 if matches else 200), response.text
    title = (await team["viewer"].get(ISSUE)).json()["title"]
    assert title == ("Crash on save" if matches else "Edited")


async def test_if_none_match_star_keeps_an_issue_from_being_deleted(team: Team) -> None:
    refused = await team["maintainer"].delete(ISSUE, headers={"If-None-Match": "*"})
    assert refused.status_code == 412, refused.text
    assert refused.headers["ETag"] == (await team["viewer"].get(ISSUE)).headers["ETag"]


@pytest.mark.parametrize("case", sorted(if_match_cases('"x"')))
async def test_if_match_on_a_read_is_a_412_when_it_does_not_match(team: Team, case: str) -> None:
    etag = (await team["viewer"].get(ISSUE)).headers["ETag"]
    header, matches = if_match_cases(etag)[case]
    response = await team["viewer"].get(ISSUE, headers={"If-Match": header})
    assert response.status_code == (200 if matches else 412), response.text
    assert response.headers["ETag"] == etag


async def test_a_stale_if_match_wins_over_a_current_if_none_match_on_a_read(team: Team) -> None:
    # RFC 9110 13.2.2 evaluates If-Match first: a 412, not the 304 If-None-Match alone gives.
    etag = (await team["viewer"].get(ISSUE)).headers["ETag"]
    headers = {"If-Match": '"issue-1-v0"', "If-None-Match": etag}
    assert (await team["viewer"].get(ISSUE, headers=headers)).status_code == 412


async def test_a_long_list_of_tags_is_compared_and_an_endless_one_refused(team: Team) -> None:
    etag = (await team["viewer"].get(ISSUE)).headers["ETag"]
    others = [f'"issue-{n}-v{n}"' for n in range(100, 150)]  # ~800 characters
    listed = ", ".join([*others, etag])
    matched = await team["developer"].patch(
        ISSUE, json={"title": "Edited"}, headers={"If-Match": listed}
    )
    assert matched.status_code == 200, matched.text
    endless = ", ".join([f'"issue-{n}-v1"' for n in range(1_000, 1_200)])
    assert len(endless) > 2048
    refused = await team["developer"].patch(
        ISSUE, json={"title": "x"}, headers={"If-Match": endless}
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["header", "if-match"]


# --- repeated header lines ------------------------------------------------------------------
# RFC 9110 5.3: a field sent on several lines is the comma-joined list of their values, so a
# client (or a proxy merging nothing) may send each tag it holds on a line of its own.


def lines(client: AuthedClient, name: str, *values: str) -> list[tuple[str, str]]:
    """The caller's credentials and one ``name`` line for each value, in that order."""
    return [("Authorization", f"Bearer {client.token}"), *((name, value) for value in values)]


async def conditional_urls(team: Team) -> dict[str, str]:
    """Every conditional read, by kind: an issue, a comment, a milestone, an attachment."""
    comment = await team["reporter"].post(f"{ISSUE}/comments", json={"body": "seen it"})
    milestone = await team["maintainer"].post(
        "/api/v1/projects/FLY/milestones", json={"title": "1.0"}
    )
    attachment = await team["reporter"].post(
        f"{ISSUE}/attachments", files={"file": ("notes.txt", b"some notes", "text/plain")}
    )
    for created in (comment, milestone, attachment):
        assert created.status_code == 201, created.text
    return {
        "issue": ISSUE,
        "comment": f"/api/v1/comments/{comment.json()['id']}",
        "milestone": f"/api/v1/projects/FLY/milestones/{milestone.json()['id']}",
        "attachment": f"{ISSUE}/attachments/{attachment.json()['id']}",
    }


async def read_with_its_etag(team: Team, kind: str) -> tuple[AuthedClient, str, str]:
    """The viewer, the URL of one resource of this kind, and its current ETag."""
    viewer = team["viewer"]
    url = (await conditional_urls(team))[kind]
    return viewer, url, (await viewer.get(url)).headers["ETag"]


@pytest.mark.parametrize("kind", ["issue", "comment", "milestone", "attachment"])
async def test_if_none_match_on_several_lines_is_one_list_on_every_read(
    team: Team, kind: str
) -> None:
    viewer, url, etag = await read_with_its_etag(team, kind)
    http = viewer.client
    current_second = await http.get(url, headers=lines(viewer, "If-None-Match", '"a"', etag))
    assert current_second.status_code == 304, current_second.text
    weak_in_a_list = await http.get(
        url, headers=lines(viewer, "If-None-Match", ' W/"a" , "b" ', f"W/{etag}")
    )
    assert weak_in_a_list.status_code == 304, weak_in_a_list.text
    star = await http.get(url, headers=lines(viewer, "If-None-Match", '"a"', "*"))
    assert star.status_code == 304, star.text
    none_current = await http.get(url, headers=lines(viewer, "If-None-Match", '"a"', '"b"'))
    assert none_current.status_code == 200, none_current.text


@pytest.mark.parametrize("kind", ["issue", "comment", "milestone", "attachment"])
async def test_if_match_on_several_lines_is_one_list_on_every_read(team: Team, kind: str) -> None:
    viewer, url, etag = await read_with_its_etag(team, kind)
    http = viewer.client
    current_second = await http.get(url, headers=lines(viewer, "If-Match", '"a"', etag))
    assert current_second.status_code == 200, current_second.text
    # Strong comparison still: the current tag made weak matches nothing, on any line.
    weak_only = await http.get(url, headers=lines(viewer, "If-Match", '"a"', f"W/{etag}"))
    assert weak_only.status_code == 412, weak_only.text
    star = await http.get(url, headers=lines(viewer, "If-Match", '"a"', "*"))
    assert star.status_code == 200, star.text
    none_current = await http.get(url, headers=lines(viewer, "If-Match", '"a"', ' "b", "c" '))
    assert none_current.status_code == 412, none_current.text
    assert none_current.headers["ETag"] == etag


async def test_if_match_on_several_lines_lets_a_write_through_when_any_names_the_issue(
    team: Team,
) -> None:
    developer = team["developer"]
    etag = (await team["viewer"].get(ISSUE)).headers["ETag"]
    stale = await developer.client.patch(
        ISSUE, json={"title": "Stale"}, headers=lines(developer, "If-Match", '"a"', '"b"')
    )
    assert stale.status_code == 412, stale.text
    current = await developer.client.patch(
        ISSUE, json={"title": "Edited"}, headers=lines(developer, "If-Match", '"a"', etag)
    )
    assert current.status_code == 200, current.text
    assert current.json()["title"] == "Edited"


async def test_if_none_match_on_several_lines_keeps_a_write_off_when_any_names_the_issue(
    team: Team,
) -> None:
    developer = team["developer"]
    etag = (await team["viewer"].get(ISSUE)).headers["ETag"]
    for values in (('"a"', etag), ('"a"', "*")):
        refused = await developer.client.patch(
            ISSUE, json={"title": "Edited"}, headers=lines(developer, "If-None-Match", *values)
        )
        assert refused.status_code == 412, refused.text
    assert (await team["viewer"].get(ISSUE)).json()["title"] == "Crash on save"


@pytest.mark.parametrize("name", ["If-Match", "If-None-Match"])
async def test_a_list_spread_over_lines_is_capped_as_a_whole(team: Team, name: str) -> None:
    # Each line under the cap, together over it: the cap bounds what one request makes the
    # service parse, however the client splits it.
    developer = team["developer"]
    line = ", ".join(f'"issue-{n}-v1"' for n in range(1_000, 1_100))
    assert len(line) < 2048 < 3 * len(line)
    refused = await developer.client.patch(
        ISSUE, json={"title": "x"}, headers=lines(developer, name, line, line, line)
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == ["header", name.lower()]
