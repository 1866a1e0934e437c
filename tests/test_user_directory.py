"""``GET /api/v1/users``: finding people to assign or add, by the start of a name.

A caller sees itself and the people it shares a project with; an admin sees everyone
Flyswatter knows. ``q`` is a case-insensitive prefix of username or name, or a whole email.
"""

from __future__ import annotations

import pytest

from tests.support.api import Api, AuthedClient, Team, make_team, walk_pages

USERS = "/api/v1/users"


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


async def usernames(client: AuthedClient, **params: str) -> list[str]:
    response = await client.get(USERS, params=params)
    assert response.status_code == 200, response.text
    return [user["username"] for user in response.json()["items"]]


async def test_a_member_finds_the_people_of_its_projects_and_no_one_else(team: Team) -> None:
    assert await usernames(team["viewer"]) == ["developer", "maintainer", "reporter", "viewer"]
    # The outsider shares no project: it sees itself only, and finding others names no one.
    assert await usernames(team.outsider) == ["outsider"]
    assert await usernames(team.outsider, q="main") == []


async def test_q_is_a_case_insensitive_prefix_of_username_or_name_or_a_whole_email(
    team: Team, api: Api
) -> None:
    ada = api.as_user("ada", name="Grace Hopper", email="g.hopper@example.org")
    ada_id = await ada.sign_in()
    added = await team["maintainer"].put(
        f"/api/v1/projects/FLY/members/{ada_id}", json={"role": "viewer"}
    )
    assert added.status_code == 201, added.text
    viewer = team["viewer"]
    assert await usernames(viewer, q="AD") == ["ada"]  # username
    assert await usernames(viewer, q="grace") == ["ada"]  # name
    assert await usernames(viewer, q="G.Hopper@Example.ORG") == ["ada"]  # the whole email
    assert await usernames(viewer, q="hopper") == []  # a prefix, not any substring
    emile = api.as_user("emile", name="Émile Zola", email="Emile@Example.org")
    added = await team["maintainer"].put(
        f"/api/v1/projects/FLY/members/{await emile.sign_in()}", json={"role": "viewer"}
    )
    assert added.status_code == 201, added.text
    # Letters beyond ASCII fold too, whichever the database.
    assert await usernames(viewer, q="émi") == ["emile"]
    assert await usernames(viewer, q="ÉMILE Z") == ["emile"]
    # LIKE's wildcards are plain characters in q.
    assert await usernames(viewer, q="%") == []
    assert await usernames(viewer, q="_da") == []


async def test_a_listed_user_shows_its_name_not_its_email(team: Team) -> None:
    response = await team["viewer"].get(USERS, params={"q": "developer@example.org"})
    assert response.status_code == 200, response.text
    [developer] = response.json()["items"]
    assert developer == {
        "id": team.ids["developer"],
        "username": "developer",
        "name": "Developer",
        "is_service_account": False,
    }


async def test_q_never_matches_part_of_an_email_so_it_cannot_be_spelled_out(api: Api) -> None:
    victim = api.as_user("victim", name="Vic Tim", email="v.secret-42@corp.example")
    await victim.sign_in()
    mallory = api.as_user("mallory")
    await mallory.sign_in()
    # Anyone may make a project and add anyone to it, and so share a project with them.
    assert (await mallory.post("/api/v1/projects", json={"key": "EVIL", "name": "x"})).is_success
    added = await mallory.put("/api/v1/projects/EVIL/members/victim", json={"role": "viewer"})
    assert added.status_code == 201, added.text
    for part in ("v.", "v.s", "v.secret-42@", "v.secret-42@corp.exampl", "corp.example"):
        assert await usernames(mallory, q=part) == [], part
    assert await usernames(mallory, q="V.Secret-42@corp.example") == ["victim"]


async def test_an_admin_finds_everyone_known(team: Team, api: Api) -> None:
    admin = api.as_user("root", roles=["flyswatter-admin"])
    assert "outsider" in await usernames(admin, q="out")
    assert len(await usernames(admin)) == 6  # the team, the outsider, the admin itself


async def test_a_deleted_project_no_longer_makes_its_people_visible(team: Team) -> None:
    deleted = await team["maintainer"].delete("/api/v1/projects/FLY")
    assert deleted.status_code == 204, deleted.text
    assert await usernames(team["viewer"]) == ["viewer"]


async def test_the_list_pages_by_username_through_cursors(team: Team) -> None:
    maintainer = team["maintainer"]
    walked = await walk_pages(maintainer, f"{USERS}?limit=1")
    assert [user["username"] for user in walked] == [
        "developer",
        "maintainer",
        "reporter",
        "viewer",
    ]


async def test_finding_people_needs_the_projects_read_scope(api: Api) -> None:
    response = await api.as_user("narrow", scopes=["issues:read"]).get(USERS)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
