"""``Idempotency-Key`` on creating POSTs: a retry replays the first answer and creates nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import pytest

from flyswatter.app import create_app
from flyswatter.auth.dependencies import IssuesWrite
from flyswatter.config import Settings
from flyswatter.http.idempotency import IdempotencyDep
from tests.support.api import Api, AuthedClient, Team, make_team
from tests.support.identity import TokenFactory

ISSUES = "/api/v1/projects/FLY/issues"
COMMENTS = "/api/v1/issues/FLY-1/comments"
REPLAYED = "Idempotent-Replayed"
PARALLEL = 10


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


async def post(
    client: AuthedClient, url: str, body: Mapping[str, object], key: str
) -> httpx.Response:
    return await client.post(url, json=body, headers={"Idempotency-Key": key})


async def issue_count(team: Team) -> int:
    response = await team["viewer"].get(f"{ISSUES}?count=true&limit=1")
    return int(response.json()["total"])


async def comment_count(team: Team) -> int:
    return len((await team["viewer"].get(f"{COMMENTS}?limit=200")).json()["items"])


class TestIssues:
    async def test_retry_replays_the_first_response_and_creates_nothing(self, team: Team) -> None:
        body = {"title": "Crash on save", "priority": "high"}
        first = await post(team["reporter"], ISSUES, body, "key-1")
        assert first.status_code == 201
        assert REPLAYED not in first.headers
        retry = await post(team["reporter"], ISSUES, body, "key-1")
        assert retry.status_code == 201
        assert retry.headers[REPLAYED] == "true"
        assert retry.json() == first.json()
        assert retry.headers["Location"] == first.headers["Location"] == "/api/v1/issues/FLY-1"
        assert retry.headers["ETag"] == first.headers["ETag"]
        assert await issue_count(team) == 1
        history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
        assert [entry["action"] for entry in history] == ["created"]

    async def test_retry_with_a_reordered_body_still_replays(self, team: Team) -> None:
        first = await team["reporter"].post(
            ISSUES,
            content=b'{"title": "x", "priority": "low"}',
            headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
        )
        retry = await team["reporter"].post(
            ISSUES,
            content=b'{"priority":"low","title":"x"}',
            headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
        )
        assert retry.headers[REPLAYED] == "true"
        assert retry.json() == first.json()

    async def test_same_key_with_another_body_is_a_422(self, team: Team) -> None:
        await post(team["reporter"], ISSUES, {"title": "one"}, "key-1")
        response = await post(team["reporter"], ISSUES, {"title": "two"}, "key-1")
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
        assert await issue_count(team) == 1

    async def test_same_key_on_another_route_is_a_422(self, team: Team) -> None:
        await post(team["reporter"], ISSUES, {"title": "one"}, "key-1")
        response = await post(team["reporter"], COMMENTS, {"title": "one"}, "key-1")
        assert response.status_code == 422

    async def test_keys_are_per_principal(self, team: Team) -> None:
        body = {"title": "same"}
        mine = await post(team["reporter"], ISSUES, body, "shared-key")
        theirs = await post(team["developer"], ISSUES, body, "shared-key")
        assert (mine.status_code, theirs.status_code) == (201, 201)
        assert REPLAYED not in theirs.headers
        assert mine.json()["key"] != theirs.json()["key"]
        assert theirs.json()["reporter"]["username"] == "developer"
        assert await issue_count(team) == 2

    async def test_without_a_key_every_post_creates(self, team: Team) -> None:
        for _ in range(2):
            assert (await team["reporter"].post(ISSUES, json={"title": "x"})).status_code == 201
        assert await issue_count(team) == 2

    async def test_a_failed_request_stores_nothing_under_its_key(self, team: Team) -> None:
        invalid = await post(team["reporter"], ISSUES, {"title": "x", "labels": ["nope"]}, "k")
        assert invalid.status_code == 422
        await team.label("nope")
        retry = await post(team["reporter"], ISSUES, {"title": "x", "labels": ["nope"]}, "k")
        assert retry.status_code == 201
        assert REPLAYED not in retry.headers

    @pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
    async def test_a_body_nested_too_deep_to_parse_is_a_4xx_with_a_key(
        self, team: Team, content_type: str
    ) -> None:
        deep = b"[" * 100_000 + b"]" * 100_000
        response = await team["reporter"].post(
            ISSUES,
            content=deep,
            headers={"Idempotency-Key": "deep", "Content-Type": content_type},
        )
        assert 400 <= response.status_code < 500
        assert response.headers["Content-Type"] == "application/problem+json"
        assert await issue_count(team) == 0

    @pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there"])
    async def test_malformed_key_is_a_422(self, team: Team, key: str) -> None:
        response = await post(team["reporter"], ISSUES, {"title": "x"}, key)
        assert response.status_code == 422
        assert await issue_count(team) == 0

    async def test_concurrent_duplicates_create_exactly_one_issue(self, team: Team) -> None:
        body = {"title": "filed by a retrying bot"}
        responses = await asyncio.gather(
            *(post(team["reporter"], ISSUES, body, "burst") for _ in range(PARALLEL))
        )
        assert [r.status_code for r in responses] == [201] * PARALLEL
        assert {r.json()["key"] for r in responses} == {"FLY-1"}
        assert sum(REPLAYED not in r.headers for r in responses) == 1
        assert await issue_count(team) == 1

    async def test_people_named_like_service_accounts_each_own_their_keys(
        self, team: Team, api: Api
    ) -> None:
        # Both sign in through the same web client (the same ``azp``); neither is its account.
        people = [api.as_user("service-account-alice"), api.as_user("service-account-mallory")]
        for person in people:
            user_id = await person.sign_in()
            added = await team["maintainer"].put(
                f"/api/v1/projects/FLY/members/{user_id}", json={"role": "reporter"}
            )
            assert added.status_code == 201, added.text
        alice, mallory = people
        first = await post(alice, ISSUES, {"title": "Crash on save"}, "retry-1")
        second = await post(mallory, ISSUES, {"title": "Crash on save"}, "retry-1")
        assert first.status_code == second.status_code == 201
        assert REPLAYED not in second.headers
        assert second.json()["reporter"]["username"] == "service-account-mallory"
        assert await issue_count(team) == 2


class TestComments:
    @pytest.fixture
    async def issue(self, team: Team) -> Team:
        await team.issue()
        return team

    async def test_retry_replays_the_first_comment(self, issue: Team) -> None:
        first = await post(issue["reporter"], COMMENTS, {"body": "me too"}, "c-1")
        retry = await post(issue["reporter"], COMMENTS, {"body": "me too"}, "c-1")
        assert (first.status_code, retry.status_code) == (201, 201)
        assert retry.headers[REPLAYED] == "true"
        assert retry.json() == first.json()
        assert retry.headers["Location"] == first.headers["Location"]
        assert await comment_count(issue) == 1

    async def test_same_key_with_another_comment_is_a_422(self, issue: Team) -> None:
        await post(issue["reporter"], COMMENTS, {"body": "one"}, "c-1")
        response = await post(issue["reporter"], COMMENTS, {"body": "two"}, "c-1")
        assert response.status_code == 422
        assert await comment_count(issue) == 1

    async def test_concurrent_duplicates_add_exactly_one_comment(self, issue: Team) -> None:
        responses = await asyncio.gather(
            *(post(issue["reporter"], COMMENTS, {"body": "once"}, "burst") for _ in range(PARALLEL))
        )
        assert [r.status_code for r in responses] == [201] * PARALLEL
        assert len({r.json()["id"] for r in responses}) == 1
        assert await comment_count(issue) == 1


async def test_a_read_only_integration_requests_a_report_idempotently(api: Api) -> None:
    # A report needs issues:read only: its idempotency record is owned under that scope too.
    await make_team(api)
    reader = api.as_user("reporter", scopes=["issues:read"])
    first = await post(reader, "/api/v1/projects/FLY/reports", {}, "report-1")
    assert first.status_code == 202, first.text
    again = await post(reader, "/api/v1/projects/FLY/reports", {}, "report-1")
    assert again.headers.get(REPLAYED) == "true"
    assert again.json() == first.json()


@pytest.mark.parametrize("idempotency_first", [True, False], ids=["key-first", "scope-first"])
async def test_the_key_owner_is_the_principal_the_scope_check_passed(
    settings: Settings, tokens: TokenFactory, idempotency_first: bool
) -> None:
    # FastAPI solves authenticate once per request and scope set: both parameters get the
    # one principal, whichever the route lists first.
    application = create_app(settings)

    async def key_first(idempotency: IdempotencyDep, principal: IssuesWrite) -> dict[str, bool]:
        return {"same": idempotency.principal is principal}

    async def scope_first(principal: IssuesWrite, idempotency: IdempotencyDep) -> dict[str, bool]:
        return {"same": idempotency.principal is principal}

    application.add_api_route("/owner", key_first if idempotency_first else scope_first)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            caller = AuthedClient(http, tokens.user_token("alice"))
            response = await caller.get("/owner", headers={"Idempotency-Key": "k"})
    assert response.json() == {"same": True}
