"""Mirroring the caller's identity: once per verified token, in a transaction of its own that
commits before the request's work starts and never commits the request's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event

from tests.support.api import Api, AuthedClient, Team, make_team
from tests.support.identity import TokenFactory, subject_of


@contextmanager
def database_events(app: FastAPI) -> Iterator[list[str]]:
    """What the app's engine does inside the block: statements (by their first words) and
    commits, in order."""
    events: list[str] = []
    engine = app.services.engine.sync_engine

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if not sql.upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            events.append(" ".join(sql.split()[:3]).upper().replace('"', ""))

    def commit(_conn: Any) -> None:
        events.append("COMMIT")

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        yield events
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)


# The mirror reads what issues and comments show of the user before it upserts: when that
# changes, their versions (and ETags) are bumped in the same transaction.
READ_SUMMARY = "SELECT USER.USERNAME, USER.NAME,"


def upserts(events: list[str]) -> list[str]:
    return [name for name in events if name.startswith("INSERT INTO USER")]


async def test_a_new_token_mirrors_its_user_once_and_a_cached_one_not_at_all(
    app: FastAPI, api: Api
) -> None:
    alice = api.as_user("alice")
    with database_events(app) as first:
        assert (await alice.get("/api/v1/projects")).status_code == 200
    assert upserts(first) == ["INSERT INTO USER"]
    assert first[:3] == [READ_SUMMARY, "INSERT INTO USER", "COMMIT"]
    with database_events(app) as again:
        assert (await alice.get("/api/v1/projects")).status_code == 200
        assert (await alice.get("/api/v1/users/me")).status_code == 200
    assert upserts(again) == []


async def test_a_new_token_with_the_same_claims_writes_nothing(app: FastAPI, api: Api) -> None:
    await api.as_user("alice").sign_in()
    with database_events(app) as events:
        assert (await api.as_user("alice").get("/api/v1/projects")).status_code == 200
    assert upserts(events) == []


async def test_changed_claims_update_the_mirror(api: Api, tokens: TokenFactory) -> None:
    await api.as_user("alice").sign_in()
    claims = tokens.claims(sub=subject_of("alice"), preferred_username="alice", name="Liddell")
    renamed = AuthedClient(api.client, tokens.sign(claims))
    assert (await renamed.get("/api/v1/users/me")).json()["name"] == "Liddell"


async def test_mirroring_never_commits_a_request_that_then_fails(app: FastAPI, api: Api) -> None:
    team: Team = await make_team(api)
    newcomer = api.as_user("newcomer")
    with database_events(app) as events:
        refused = await newcomer.post("/api/v1/projects/FLY/issues", json={"title": "Hello"})
    assert refused.status_code == 404  # not a member: the project is hidden
    assert events[:3] == [READ_SUMMARY, "INSERT INTO USER", "COMMIT"]
    assert events.count("COMMIT") == 1, events
    member = await team["maintainer"].put(
        f"/api/v1/projects/FLY/members/{await newcomer.sign_in()}", json={"role": "viewer"}
    )
    assert member.status_code == 201, "the newcomer's identity was mirrored"
