"""Comments: adding, listing, editing and deleting, who may do which, conditional requests."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.api import Api, Team, make_team, walk_pages

COMMENTS = "/api/v1/issues/FLY-1/comments"


@pytest.fixture
async def team(api: Api) -> Team:
    team = await make_team(api)
    await team.issue()
    return team


async def comment(team: Team, who: str = "reporter", body: str = "Seen it too") -> dict:
    response = await team[who].post(COMMENTS, json={"body": body})
    assert response.status_code == 201, response.text
    return response.json()


class TestAdd:
    async def test_added_comment_has_location_etag_and_author(self, team: Team) -> None:
        response = await team["reporter"].post(COMMENTS, json={"body": "**Also** on Linux"})
        assert response.status_code == 201
        created = response.json()
        assert response.headers["Location"] == f"/api/v1/comments/{created['id']}"
        assert response.headers["ETag"] == f'"comment-{created["id"]}-v1"'
        assert created["body"] == "**Also** on Linux"
        assert created["issue_key"] == "FLY-1"
        assert created["author_id"] == team.ids["reporter"]
        assert created["author"]["username"] == "reporter"
        assert created["edited"] is False
        assert created["edited_at"] is None
        assert created["version"] == 1

    @pytest.mark.parametrize(
        "body", [{}, {"body": ""}, {"body": "x" * 65_537}, {"body": "ok", "author_id": "x"}]
    )
    async def test_invalid_body_is_a_422_and_adds_nothing(self, team: Team, body: dict) -> None:
        response = await team["reporter"].post(COMMENTS, json=body)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert (await team["viewer"].get(COMMENTS)).json()["items"] == []

    @pytest.mark.parametrize("body", [" ", "   ", "\n\t\r\n", "\u3000"])
    async def test_whitespace_only_body_is_a_422_naming_it_and_adds_nothing(
        self, team: Team, body: str
    ) -> None:
        response = await team["reporter"].post(COMMENTS, json={"body": body})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "body"]
        assert (await team["viewer"].get(COMMENTS)).json()["items"] == []

    async def test_body_keeps_its_surrounding_whitespace_as_sent(self, team: Team) -> None:
        # Markdown reads leading spaces: four of them make a code block.
        body = "    indented code\n\n- item\n"
        assert (await comment(team, body=body))["body"] == body

    async def test_largest_body_is_accepted(self, team: Team) -> None:
        assert (
            await team["reporter"].post(COMMENTS, json={"body": "x" * 65_536})
        ).status_code == 201

    async def test_viewer_may_not_comment_and_outsider_gets_404(self, team: Team) -> None:
        assert (await team["viewer"].post(COMMENTS, json={"body": "x"})).status_code == 403
        assert (await team.outsider.post(COMMENTS, json={"body": "x"})).status_code == 404

    async def test_comment_on_a_missing_issue_is_a_404(self, team: Team) -> None:
        response = await team["reporter"].post("/api/v1/issues/FLY-9/comments", json={"body": "x"})
        assert response.status_code == 404


class TestList:
    async def test_comments_come_oldest_first_page_by_page(self, team: Team) -> None:
        for i in range(7):
            await comment(team, body=f"comment {i}")
        items = await walk_pages(team["viewer"], f"{COMMENTS}?limit=3")
        assert [item["body"] for item in items] == [f"comment {i}" for i in range(7)]

    async def test_comments_of_other_issues_are_not_listed(self, team: Team) -> None:
        await team.issue()
        await comment(team)
        response = await team["viewer"].get("/api/v1/issues/FLY-2/comments")
        assert response.json()["items"] == []

    async def test_outsider_cannot_list(self, team: Team) -> None:
        await comment(team)
        assert (await team.outsider.get(COMMENTS)).status_code == 404

    @pytest.mark.parametrize("cursor", ["garbage", "WyJuYW1lIiwgMV0"])
    async def test_bad_cursor_is_a_400(self, team: Team, cursor: str) -> None:
        assert (await team["viewer"].get(COMMENTS, params={"cursor": cursor})).status_code == 400


class TestRead:
    async def test_get_has_etag_and_if_none_match_gives_304(self, team: Team) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        response = await team["viewer"].get(url)
        assert response.status_code == 200
        assert response.json() == created
        etag = response.headers["ETag"]
        cached = await team["viewer"].get(url, headers={"If-None-Match": etag})
        assert cached.status_code == 304
        assert cached.headers["ETag"] == etag
        assert cached.content == b""
        await team["reporter"].patch(url, json={"body": "changed"})
        fresh = await team["viewer"].get(url, headers={"If-None-Match": etag})
        assert fresh.status_code == 200
        assert fresh.headers["ETag"] != etag

    async def test_a_move_of_its_issue_gives_the_comment_a_new_etag(self, team: Team) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        owner = team["maintainer"]
        etag = (await owner.get(url)).headers["ETag"]
        assert (await owner.post("/api/v1/projects", json={"key": "OPS", "name": "O"})).is_success
        moved = await owner.post("/api/v1/issues/FLY-1/move", json={"project": "OPS"})
        assert moved.status_code == 200, moved.text
        # The comment shows its issue's key, which changed: the old ETag validates no more.
        fresh = await owner.get(url, headers={"If-None-Match": etag})
        assert fresh.status_code == 200
        assert fresh.json()["issue_key"] == "OPS-1"
        assert fresh.headers["ETag"] != etag
        stale = await owner.patch(url, json={"body": "edited"}, headers={"If-Match": etag})
        assert stale.status_code == 412, stale.text

    async def test_outsider_and_missing_comment_look_the_same(self, team: Team) -> None:
        created = await comment(team)
        hidden = await team.outsider.get(f"/api/v1/comments/{created['id']}")
        missing = await team["viewer"].get("/api/v1/comments/999999")
        assert hidden.status_code == missing.status_code == 404

    @pytest.mark.parametrize("comment_id", ["0", "abc", str(2**63)])
    async def test_malformed_comment_id_is_a_422(self, team: Team, comment_id: str) -> None:
        assert (await team["viewer"].get(f"/api/v1/comments/{comment_id}")).status_code == 422


class TestEdit:
    async def test_author_edit_shows_as_edited(self, team: Team) -> None:
        created = await comment(team)
        response = await team["reporter"].patch(
            f"/api/v1/comments/{created['id']}", json={"body": "Seen it on Linux too"}
        )
        assert response.status_code == 200
        edited = response.json()
        assert edited["body"] == "Seen it on Linux too"
        assert edited["edited"] is True
        assert edited["edited_at"] is not None
        assert edited["edited_at"] >= created["created_at"]
        assert edited["version"] == 2
        assert response.headers["ETag"] == f'"comment-{created["id"]}-v2"'
        listed = (await team["viewer"].get(COMMENTS)).json()["items"]
        assert listed == [edited]

    async def test_same_body_is_not_an_edit(self, team: Team) -> None:
        created = await comment(team)
        response = await team["reporter"].patch(
            f"/api/v1/comments/{created['id']}", json={"body": created["body"]}
        )
        assert response.json()["edited"] is False
        assert response.json()["version"] == 1

    @pytest.mark.parametrize(("who", "expected"), [("maintainer", 200), ("developer", 403)])
    async def test_others_comment_may_be_edited_only_by_a_maintainer(
        self, team: Team, who: str, expected: int
    ) -> None:
        created = await comment(team)
        response = await team[who].patch(
            f"/api/v1/comments/{created['id']}", json={"body": "moderated"}
        )
        assert response.status_code == expected

    async def test_another_reporter_may_not_edit(self, team: Team, api: Api) -> None:
        other = api.as_user("second-reporter")
        other_id = await other.sign_in()
        await team["maintainer"].put(
            f"/api/v1/projects/FLY/members/{other_id}", json={"role": "reporter"}
        )
        created = await comment(team)
        response = await other.patch(f"/api/v1/comments/{created['id']}", json={"body": "x"})
        assert response.status_code == 403
        assert (await other.delete(f"/api/v1/comments/{created['id']}")).status_code == 403

    async def test_outsider_gets_404(self, team: Team) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        assert (await team.outsider.patch(url, json={"body": "x"})).status_code == 404
        assert (await team.outsider.delete(url)).status_code == 404

    @pytest.mark.parametrize("body", [{"body": ""}, {"body": "x" * 65_537}, {}])
    async def test_invalid_edit_is_a_422_and_changes_nothing(self, team: Team, body: dict) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        assert (await team["reporter"].patch(url, json=body)).status_code == 422
        assert (await team["viewer"].get(url)).json() == created

    @pytest.mark.parametrize("body", [" ", "\n\n", "\t "])
    async def test_whitespace_only_edit_is_a_422_naming_it_and_changes_nothing(
        self, team: Team, body: str
    ) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        response = await team["reporter"].patch(url, json={"body": body})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "body"]
        assert (await team["viewer"].get(url)).json() == created

    async def test_stale_if_match_on_edit_is_a_412_and_changes_nothing(self, team: Team) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        stale = (await team["viewer"].get(url)).headers["ETag"]
        await team["reporter"].patch(url, json={"body": "first edit"})
        current = (await team["viewer"].get(url)).json()
        response = await team["reporter"].patch(
            url, json={"body": "second edit"}, headers={"If-Match": stale}
        )
        assert response.status_code == 412
        assert response.json()["current_etag"] == f'"comment-{created["id"]}-v2"'
        assert (await team["viewer"].get(url)).json() == current

    async def test_current_if_match_on_edit_applies(self, team: Team) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        etag = (await team["viewer"].get(url)).headers["ETag"]
        response = await team["reporter"].patch(
            url, json={"body": "edit"}, headers={"If-Match": etag}
        )
        assert response.status_code == 200

    async def test_if_none_match_naming_the_current_tag_on_edit_is_a_412(self, team: Team) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        etag = (await team["viewer"].get(url)).headers["ETag"]
        for header in (etag, "*"):
            response = await team["reporter"].patch(
                url, json={"body": "edit"}, headers={"If-None-Match": header}
            )
            assert response.status_code == 412, header
        assert (await team["viewer"].get(url)).json() == created


class TestDelete:
    async def test_author_deletes_own_comment(self, team: Team) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        assert (await team["reporter"].delete(url)).status_code == 204
        assert (await team["viewer"].get(url)).status_code == 404
        assert (await team["viewer"].get(COMMENTS)).json()["items"] == []

    @pytest.mark.parametrize(("who", "expected"), [("maintainer", 204), ("developer", 403)])
    async def test_others_comment_may_be_deleted_only_by_a_maintainer(
        self, team: Team, who: str, expected: int
    ) -> None:
        created = await comment(team)
        response = await team[who].delete(f"/api/v1/comments/{created['id']}")
        assert response.status_code == expected

    async def test_stale_if_match_on_delete_is_a_412_and_keeps_the_comment(
        self, team: Team
    ) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        stale = (await team["viewer"].get(url)).headers["ETag"]
        await team["reporter"].patch(url, json={"body": "edited"})
        response = await team["reporter"].delete(url, headers={"If-Match": stale})
        assert response.status_code == 412
        assert (await team["viewer"].get(url)).json()["body"] == "edited"

    async def test_comments_go_with_their_issue(self, team: Team) -> None:
        created = await comment(team)
        assert (await team["maintainer"].delete("/api/v1/issues/FLY-1")).status_code == 204
        response = await team["maintainer"].get(f"/api/v1/comments/{created['id']}")
        assert response.status_code == 404


class TestRaces:
    """Writers of one comment wait for each other (the issue's lock, then the comment's);
    the one that waited must find the comment gone, not fail on it."""

    async def test_concurrent_deletes_of_one_comment_delete_it_once_and_the_rest_are_404s(
        self, team: Team
    ) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        responses = await asyncio.gather(*(team["reporter"].delete(url) for _ in range(4)))
        assert sorted(response.status_code for response in responses) == [204, 404, 404, 404]
        history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
        assert [entry["action"] for entry in history].count("comment_deleted") == 1

    async def test_edits_racing_the_deletion_either_land_first_or_find_it_gone(
        self, team: Team
    ) -> None:
        created = await comment(team)
        url = f"/api/v1/comments/{created['id']}"
        responses = await asyncio.gather(
            team["reporter"].delete(url),
            *(team[who].patch(url, json={"body": who}) for who in ("reporter", "maintainer")),
        )
        assert responses[0].status_code == 204
        assert {response.status_code for response in responses[1:]} <= {200, 404}
        assert (await team["viewer"].get(url)).status_code == 404
