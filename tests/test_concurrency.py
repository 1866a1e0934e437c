"""Optimistic concurrency on issues: ETags, conditional reads and writes, parallel writers
that neither lose updates nor apply stale ones, and writes racing a member's removal or the
project's archiving."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NamedTuple

import httpx
import pytest
import sqlalchemy as sa

from flyswatter.config import Settings
from tests.support.api import Api, Team, make_team

ISSUE = "/api/v1/issues/FLY-1"
PARALLEL = 8


@pytest.fixture
async def team(api: Api) -> Team:
    team = await make_team(api)
    await team.issue()
    return team


async def current(team: Team) -> tuple[dict[str, Any], str]:
    response = await team["viewer"].get(ISSUE)
    assert response.status_code == 200
    return response.json(), response.headers["ETag"]


class TestConditionalRead:
    async def test_etag_follows_the_version(self, team: Team) -> None:
        _, etag = await current(team)
        assert etag.startswith('"issue-')
        assert etag.endswith('-v1"')
        changed = await team["developer"].patch(ISSUE, json={"title": "x"})
        assert changed.headers["ETag"] != etag
        assert changed.headers["ETag"].endswith('-v2"')
        assert (await current(team))[1] == changed.headers["ETag"]

    async def test_if_none_match_with_the_current_etag_is_a_304(self, team: Team) -> None:
        _, etag = await current(team)
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            response = await team["viewer"].get(ISSUE, headers={"If-None-Match": header})
            assert response.status_code == 304, header
            assert response.headers["ETag"] == etag
            assert response.content == b""

    async def test_if_none_match_with_an_old_etag_gets_the_issue(self, team: Team) -> None:
        _, etag = await current(team)
        await team["developer"].patch(ISSUE, json={"title": "x"})
        response = await team["viewer"].get(ISSUE, headers={"If-None-Match": etag})
        assert response.status_code == 200
        assert response.json()["title"] == "x"

    async def test_a_conditional_read_still_checks_access(self, team: Team) -> None:
        _, etag = await current(team)
        response = await team.outsider.get(ISSUE, headers={"If-None-Match": etag})
        assert response.status_code == 404


class TestConditionalWrite:
    @pytest.mark.parametrize(
        ("who", "method", "path", "body"),
        [
            ("developer", "PATCH", ISSUE, {"title": "stale"}),
            ("developer", "POST", f"{ISSUE}/transitions", {"to": "closed"}),
            ("developer", "POST", f"{ISSUE}/labels/ui", None),
            ("maintainer", "DELETE", ISSUE, None),
        ],
    )
    async def test_stale_if_match_is_rejected_with_412_and_nothing_changes(
        self, team: Team, who: str, method: str, path: str, body: dict[str, Any] | None
    ) -> None:
        await team.label("ui")
        _, stale = await current(team)
        await team["developer"].patch(ISSUE, json={"priority": "high"})
        before, now = await current(team)
        response = await team[who].request(method, path, json=body, headers={"If-Match": stale})
        assert response.status_code == 412
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["current_etag"] == now
        assert response.headers["ETag"] == now
        assert await current(team) == (before, now)

    @pytest.mark.parametrize(
        ("who", "method", "path", "body", "expected"),
        [
            ("developer", "PATCH", ISSUE, {"title": "fresh"}, 200),
            ("developer", "POST", f"{ISSUE}/transitions", {"to": "closed"}, 200),
            ("maintainer", "DELETE", ISSUE, None, 204),
        ],
    )
    async def test_current_if_match_applies(
        self,
        team: Team,
        who: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        expected: int,
    ) -> None:
        _, etag = await current(team)
        response = await team[who].request(method, path, json=body, headers={"If-Match": etag})
        assert response.status_code == expected

    async def test_if_match_star_or_a_list_holding_the_etag_applies(self, team: Team) -> None:
        first = await team["developer"].patch(ISSUE, json={"title": "a"}, headers={"If-Match": "*"})
        assert first.status_code == 200
        etag = first.headers["ETag"]
        listed = await team["developer"].patch(
            ISSUE, json={"title": "b"}, headers={"If-Match": f'"nope", {etag}'}
        )
        assert listed.status_code == 200

    async def test_conditional_write_by_an_outsider_is_a_404(self, team: Team) -> None:
        # A stranger learns nothing from a conditional write: not found, whatever the tag.
        response = await team.outsider.patch(
            ISSUE, json={"title": "x"}, headers={"If-Match": '"issue-1-v1"'}
        )
        assert response.status_code == 404


class TestParallelWriters:
    async def test_same_if_match_lets_exactly_one_writer_win(self, team: Team) -> None:
        _, etag = await current(team)

        async def write(i: int) -> int:
            response = await team["developer"].patch(
                ISSUE, json={"title": f"writer {i}"}, headers={"If-Match": etag}
            )
            return response.status_code

        statuses = await asyncio.gather(*(write(i) for i in range(PARALLEL)))
        assert sorted(statuses) == [200] + [412] * (PARALLEL - 1)
        issue, _ = await current(team)
        assert issue["version"] == 2
        assert issue["title"].startswith("writer ")

    async def test_unconditional_writers_lose_no_update(self, team: Team) -> None:
        names = [f"label-{i}" for i in range(PARALLEL)]
        for name in names:
            await team.label(name)

        async def attach(name: str) -> int:
            response = await team["developer"].post(f"{ISSUE}/labels/{name}")
            return response.status_code

        statuses = await asyncio.gather(*(attach(name) for name in names))
        assert statuses == [200] * PARALLEL
        issue, _ = await current(team)
        assert sorted(label["name"] for label in issue["labels"]) == sorted(names)
        assert issue["version"] == 1 + PARALLEL
        history = (await team["viewer"].get(f"{ISSUE}/activity?limit=50")).json()["items"]
        assert sorted(e["new_value"] for e in history if e["action"] == "labeled") == names

    async def test_parallel_field_edits_all_land(self, team: Team) -> None:
        edits = [
            {"title": "new title"},
            {"description": "new description"},
            {"priority": "critical"},
            {"type": "task"},
            {"assignee_id": team.ids["developer"]},
        ]
        responses = await asyncio.gather(
            *(team["developer"].patch(ISSUE, json=edit) for edit in edits)
        )
        assert [response.status_code for response in responses] == [200] * len(edits)
        issue, _ = await current(team)
        assert issue["title"] == "new title"
        assert issue["description"] == "new description"
        assert (issue["priority"], issue["type"]) == ("critical", "task")
        assert issue["assignee"]["id"] == team.ids["developer"]
        assert issue["version"] == 1 + len(edits)
        assert sorted(r.json()["version"] for r in responses) == list(range(2, 2 + len(edits)))

    async def test_parallel_transitions_apply_one_at_a_time(self, team: Team) -> None:
        responses = await asyncio.gather(
            *(
                team["developer"].post(f"{ISSUE}/transitions", json={"to": "in_progress"})
                for _ in range(PARALLEL)
            )
        )
        # The first moves it; the rest find it already in progress, where "in_progress" is
        # not a move the workflow offers.
        assert sorted(r.status_code for r in responses) == [200] + [409] * (PARALLEL - 1)
        issue, _ = await current(team)
        assert (issue["status"], issue["version"]) == ("in_progress", 2)


ORPHANS = sa.text(
    """
    SELECT
      (SELECT count(*) FROM issue i WHERE i.assignee_id IS NOT NULL AND NOT EXISTS (
         SELECT 1 FROM project_member m
         WHERE m.project_id = i.project_id AND m.user_id = i.assignee_id)),
      (SELECT count(*) FROM watcher w JOIN issue i ON i.id = w.issue_id
       WHERE w.following AND NOT EXISTS (
         SELECT 1 FROM project_member m
         WHERE m.project_id = i.project_id AND m.user_id = w.user_id))
    """
)


# A write the reporter's removal, in flight, is to refuse once it commits: (who, method,
# path, body, status, where the error points).
REFUSED_AFTER_REMOVAL = {
    "assigning them": ("developer", "PATCH", ISSUE, {"assignee_id": "<reporter>"}, 422),
    "reporting for them": (
        "developer",
        "POST",
        "/api/v1/projects/FLY/issues",
        {"title": "t", "assignee_id": "<reporter>"},
        422,
    ),
    "their comment": ("reporter", "POST", f"{ISSUE}/comments", {"body": "mine"}, 404),
    "their follow": ("reporter", "PUT", f"{ISSUE}/watchers/me", None, 404),
    "their report": ("reporter", "POST", "/api/v1/projects/FLY/issues", {"title": "t"}, 404),
    "their edit": ("reporter", "PATCH", "/api/v1/comments/{comment}", {"body": "edited"}, 404),
    "their deletion": ("reporter", "DELETE", "/api/v1/comments/{comment}", None, 404),
}


@pytest.mark.postgres_only
@pytest.mark.parametrize("write", REFUSED_AFTER_REMOVAL.values(), ids=REFUSED_AFTER_REMOVAL)
async def test_a_write_racing_a_members_removal_waits_for_it_and_is_refused(
    team: Team, settings: Settings, write: tuple[str, str, str, dict | None, int]
) -> None:
    who, method, path, body, refused = write
    reporter = {"user": team.ids["reporter"]}
    before = await team["reporter"].post(f"{ISSUE}/comments", json={"body": "before"})
    assert before.status_code == 201, before.text
    path = path.format(comment=before.json()["id"])
    if body is not None:
        body = {k: team.ids["reporter"] if v == "<reporter>" else v for k, v in body.items()}
    engine = sa.create_engine(settings.sync_database_url)
    try:
        # The removal's steps: as DELETE .../members/{id} does, the project row is locked,
        # the member row deleted and their follows with it.
        removal = [
            "SELECT id FROM project WHERE key = 'FLY' FOR UPDATE",
            "DELETE FROM project_member WHERE user_id = :user",
            "DELETE FROM watcher WHERE user_id = :user",
        ]
        request = team[who].request(method, path, json=body)
        response = await sent_while_held(engine, removal, request, reporter)
        with engine.connect() as connection:
            assert tuple(connection.execute(ORPHANS).one()) == (0, 0)
    finally:
        engine.dispose()
    assert response.status_code == refused, response.text
    if refused == 422:
        assert response.json()["errors"][0]["loc"] == ["body", "assignee_id"]
    developer = team["developer"]
    assert (await developer.get(ISSUE)).json()["assignee"] is None
    assert (await developer.get(f"{ISSUE}/comments")).json()["items"] == [before.json()]
    assert len((await developer.get("/api/v1/projects/FLY/issues")).json()["items"]) == 1


async def waiting_on_a_lock(engine: sa.Engine, request: asyncio.Task[Any]) -> None:
    """Until another backend waits on a row lock (the request under test), or the request
    is answered without waiting."""
    # Of this database only: another test run may share the server.
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    for _ in range(200):
        if request.done():
            return
        with engine.connect() as connection:
            if connection.execute(query).scalar_one():
                return
        await asyncio.sleep(0.05)
    raise AssertionError("no request came to wait on the lock")


async def sent_while_held(
    engine: sa.Engine,
    held: list[str],
    send: Coroutine[Any, Any, httpx.Response],
    parameters: dict[str, str] | None = None,
) -> httpx.Response:
    """The answer to ``send``, sent while another transaction has run ``held`` and not yet
    committed: the request must wait on that transaction's locks, and is answered once it
    commits."""
    with engine.connect() as other:
        for statement in held:
            other.execute(sa.text(statement), parameters or {})
        request = asyncio.create_task(send)
        await waiting_on_a_lock(engine, request)
        assert not request.done(), "the request did not wait for the other transaction"
        other.commit()
    return await request


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("method", "body", "refused"),
    [("PATCH", {"archived": True}, 409), ("DELETE", None, 404)],
    ids=["archive", "delete"],
)
async def test_archiving_or_deleting_waits_for_the_issue_writes_in_flight(
    team: Team, settings: Settings, method: str, body: dict | None, refused: int
) -> None:
    """No write that found the project open commits after it is archived or deleted: the
    change waits for those in flight (a write that comes while it waits may still join
    them, and lands before it), and the writes after it see it."""
    engine = sa.create_engine(settings.sync_database_url)
    try:
        # An issue write in flight: it holds the project row shared.
        write = [
            "SELECT id FROM project WHERE key = 'FLY' FOR KEY SHARE",
            "UPDATE issue SET title = 'in flight'",
        ]
        change = team["maintainer"].request(method, "/api/v1/projects/FLY", json=body)
        assert (await sent_while_held(engine, write, change)).status_code in (200, 204)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT title FROM issue")).scalar_one() == (
                "in flight"
            )
    finally:
        engine.dispose()
    after = await team["developer"].patch(ISSUE, json={"title": "after"})
    assert after.status_code == refused, after.text


def archiving(key: str) -> list[str]:
    """PATCH /projects/{key} {"archived": true}, as it runs."""
    return [
        f"SELECT id FROM project WHERE key = '{key}' FOR UPDATE",
        f"UPDATE project SET archived = true WHERE key = '{key}'",
    ]


def relation_rows(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM issue_relation")).scalar_one())


# Writes an archived project refuses: (the project archived, method, path, body). OPS is
# another project of FLY's maintainer, with one issue.
REFUSED_WHEN_ARCHIVED = {
    "an issue's edit": ("FLY", "PATCH", ISSUE, {"title": "late"}),
    "a report": ("FLY", "POST", "/api/v1/projects/FLY/issues", {"title": "late"}),
    "a comment": ("FLY", "POST", f"{ISSUE}/comments", {"body": "late"}),
    "a label": (
        "FLY",
        "POST",
        "/api/v1/projects/FLY/labels",
        {"name": "late", "color": "#123456"},
    ),
    "a milestone": ("FLY", "POST", "/api/v1/projects/FLY/milestones", {"title": "late"}),
    "a relation to its issue": (
        "OPS",
        "POST",
        f"{ISSUE}/relations",
        {"kind": "blocks", "target": "OPS-1"},
    ),
}


@pytest.mark.postgres_only
@pytest.mark.parametrize("write", REFUSED_WHEN_ARCHIVED.values(), ids=REFUSED_WHEN_ARCHIVED)
async def test_a_write_racing_the_projects_archiving_waits_for_it_and_is_refused(
    team: Team, settings: Settings, write: tuple[str, str, str, dict]
) -> None:
    archived, method, path, body = write
    owner = team["maintainer"]
    assert (await owner.post("/api/v1/projects", json={"key": "OPS", "name": "Ops"})).is_success
    assert (await owner.post("/api/v1/projects/OPS/issues", json={"title": "t"})).is_success
    engine = sa.create_engine(settings.sync_database_url)
    try:
        request = owner.request(method, path, json=body)
        response = await sent_while_held(engine, archiving(archived), request)
        assert relation_rows(engine) == 0
    finally:
        engine.dispose()
    assert response.status_code == 409, response.text
    assert f"{archived} is archived" in response.json()["detail"]


@pytest.mark.postgres_only
async def test_a_relation_removed_to_a_hidden_project_waits_for_its_archiving(
    team: Team, api: Api, settings: Settings
) -> None:
    owner, stranger = team["maintainer"], api.as_user("stranger")
    await stranger.sign_in()
    assert (await stranger.post("/api/v1/projects", json={"key": "OPS", "name": "Ops"})).is_success
    member = f"/api/v1/projects/OPS/members/{team.ids['maintainer']}"
    assert (await stranger.put(member, json={"role": "developer"})).status_code == 201
    assert (await stranger.post("/api/v1/projects/OPS/issues", json={"title": "t"})).is_success
    related = await owner.post(f"{ISSUE}/relations", json={"kind": "blocks", "target": "OPS-1"})
    assert related.status_code == 201, related.text
    # OPS is hidden from FLY's maintainer now; the relation is still their issue's to remove.
    assert (await stranger.delete(member)).status_code == 204
    engine = sa.create_engine(settings.sync_database_url)
    try:
        removal = owner.delete(f"{ISSUE}/relations/blocks/OPS-1")
        response = await sent_while_held(engine, archiving("OPS"), removal)
        assert relation_rows(engine) == 1
    finally:
        engine.dispose()
    assert response.status_code == 404, response.text


@pytest.mark.postgres_only
async def test_relations_written_from_both_ends_at_once_all_land(team: Team) -> None:
    """Each writer locks its path issue, and the other issue's history rows reference the
    other's: the lock must not keep those references out, or the two wait on each other."""
    developer = team["developer"]
    for _ in range(6):
        first, second = [(await team.issue(title=title))["key"] for title in ("one", "two")]
        responses = await asyncio.gather(
            developer.post(
                f"/api/v1/issues/{first}/relations",
                json={"kind": "relates_to", "target": second},
            ),
            developer.post(
                f"/api/v1/issues/{second}/relations", json={"kind": "blocks", "target": first}
            ),
        )
        assert [response.status_code for response in responses] == [201, 201], [
            response.text for response in responses
        ]


@pytest.mark.postgres_only
async def test_writes_racing_a_members_removal_neither_deadlock_nor_outlive_it(
    team: Team, settings: Settings
) -> None:
    """Round after round, the reporter is removed while issues are created assigned to them
    and while they comment, follow and take issues themselves: every request is answered
    (none is a deadlock's victim), and no issue or follow outlives their membership."""
    reporter, member_url = (
        team.ids["reporter"],
        f"/api/v1/projects/FLY/members/{team.ids['reporter']}",
    )
    for _ in range(12):
        readd = await team["maintainer"].put(member_url, json={"role": "developer"})
        assert readd.status_code in (200, 201), readd.text
        responses = await asyncio.gather(
            team["developer"].post(
                "/api/v1/projects/FLY/issues", json={"title": "t", "assignee_id": reporter}
            ),
            team["reporter"].post(f"{ISSUE}/comments", json={"body": "mine"}),
            team["reporter"].put(f"{ISSUE}/watchers/me"),
            team["reporter"].patch(ISSUE, json={"assignee_id": reporter}),
            team["maintainer"].delete(member_url),
        )
        statuses = [response.status_code for response in responses]
        assert statuses[-1] == 204, responses[-1].text
        assert statuses[0] in (201, 422), responses[0].text
        assert all(status in (200, 201, 404) for status in statuses[1:4]), statuses
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as connection:
            assert tuple(connection.execute(ORPHANS).one()) == (0, 0)
    finally:
        engine.dispose()


@pytest.mark.postgres_only
async def test_a_deadlocks_victim_is_a_409_to_retry_and_changes_nothing(
    team: Team, settings: Settings
) -> None:
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as other:
            # A transaction taking the locks in the opposite order to the PATCH's (issue row,
            # then project row), made to wait longer before it looks for a deadlock, so that
            # the PATCH is the one the database rolls back.
            other.execute(sa.text("SET LOCAL deadlock_timeout = '30s'"))
            other.execute(sa.text("SELECT id FROM issue WHERE number = 1 FOR UPDATE"))
            patch = asyncio.create_task(team["developer"].patch(ISSUE, json={"title": "mine"}))
            await waiting_on_a_lock(engine, patch)
            lock_project = sa.text("SELECT id FROM project WHERE key = 'FLY' FOR UPDATE")
            await asyncio.to_thread(other.execute, lock_project)
            other.rollback()
        response = await patch
    finally:
        engine.dispose()
    assert response.status_code == 409, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith(":concurrent-change")
    assert "retry" in response.json()["detail"]
    issue, _ = await current(team)
    assert (issue["title"], issue["version"]) == ("Crash on save", 1)
    retried = await team["developer"].patch(ISSUE, json={"title": "mine"})
    assert retried.status_code == 200


class Referring(NamedTuple):
    """A write naming a label or milestone while its deletion is in flight, the answer it
    gets, and FLY-1's labels and title once the deletion committed after it."""

    deleted: str  # "label" or "milestone"
    request: str
    body: dict[str, Any] | None
    status: int
    labels: list[str]
    title: str = "Crash on save"


# FLY-1 has the label "doomed" and is in the milestone "Doomed"; FLY-2 has neither.
REFERRING_WRITES = {
    # Naming what the issue has already, beside something new: it is not locked again.
    "patch-keeping-the-label": Referring(
        "label", f"PATCH {ISSUE}", {"labels": ["doomed", "kept"]}, 200, ["kept"]
    ),
    "attach-another-label": Referring("label", f"POST {ISSUE}/labels/kept", None, 200, ["kept"]),
    "patch-sending-the-milestone-back": Referring(
        "milestone",
        f"PATCH {ISSUE}",
        {"milestone": "Doomed", "title": "edited"},
        200,
        ["doomed"],
        "edited",
    ),
    # A new issue: the label is locked before it is linked, and seen gone.
    "create-with-the-label": Referring(
        "label", "POST /api/v1/projects/FLY/issues", {"title": "New", "labels": ["doomed"]}, 422, []
    ),
    # Many issues: the label or milestone is locked before any of them, so the bulk change
    # waits for the deletion and finds it gone, changing nothing.
    "bulk-adding-the-label": Referring(
        "label",
        "PATCH /api/v1/projects/FLY/issues",
        {"issues": ["FLY-1", "FLY-2"], "change": {"add_labels": ["doomed"]}},
        422,
        [],
    ),
    "bulk-setting-the-milestone": Referring(
        "milestone",
        "PATCH /api/v1/projects/FLY/issues",
        {"issues": ["FLY-1", "FLY-2"], "change": {"milestone": "Doomed"}},
        422,
        ["doomed"],
    ),
}


def deleting(kind: str) -> tuple[str, list[str]]:
    """The deletion of the label "doomed" or the milestone "Doomed", as it runs: its row
    locked first, then the issues that have it, in id order; then they lose it."""
    if kind == "label":
        row = "SELECT id FROM label WHERE name = 'doomed'"
        issues = "SELECT issue_id FROM issue_label WHERE label_id = ({})"
        rest = [
            "DELETE FROM issue_label WHERE label_id = ({})",
            "DELETE FROM label WHERE name = 'doomed'",
        ]
    else:
        row = "SELECT id FROM milestone WHERE title = 'Doomed'"
        issues = "SELECT id FROM issue WHERE milestone_id = ({})"
        rest = [
            "UPDATE issue SET milestone_id = NULL, version = version + 1 WHERE milestone_id = ({})",
            "DELETE FROM milestone WHERE title = 'Doomed'",
        ]
    lock_issues = f"SELECT id FROM issue WHERE id IN ({issues}) ORDER BY id FOR NO KEY UPDATE"
    return f"{row} FOR UPDATE", [lock_issues.format(row), *(s.format(row) for s in rest)]


@pytest.mark.postgres_only
@pytest.mark.parametrize("write", REFERRING_WRITES.values(), ids=REFERRING_WRITES)
async def test_a_write_naming_a_label_or_milestone_being_deleted_does_not_deadlock_with_it(
    team: Team, settings: Settings, write: Referring
) -> None:
    maintainer = team["maintainer"]
    for name in ("doomed", "kept"):
        await team.label(name)
    milestone = await maintainer.post("/api/v1/projects/FLY/milestones", json={"title": "Doomed"})
    assert milestone.status_code == 201, milestone.text
    prepared = await maintainer.patch(ISSUE, json={"labels": ["doomed"], "milestone": "Doomed"})
    assert prepared.status_code == 200, prepared.text
    await team.issue()
    lock_row, rest = deleting(write.deleted)
    method, url = write.request.split(" ")
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as deletion:
            # Slow to look for a deadlock: were there one, the request would be its victim.
            deletion.execute(sa.text("SET LOCAL deadlock_timeout = '30s'"))
            deletion.execute(sa.text(lock_row))
            sent = asyncio.create_task(maintainer.request(method, url, json=write.body))
            await waiting_on_a_lock(engine, sent)
            for statement in rest:
                await asyncio.to_thread(deletion.execute, sa.text(statement))
            deletion.commit()
        response = await sent
    finally:
        engine.dispose()
    assert response.status_code == write.status, response.text
    shown = (await maintainer.get(ISSUE)).json()
    assert [label["name"] for label in shown["labels"]] == write.labels
    assert shown["title"] == write.title
    assert (shown["milestone_id"] is None) == (write.deleted == "milestone")
    other = (await maintainer.get("/api/v1/issues/FLY-2")).json()
    assert (other["labels"], other["milestone_id"]) == ([], None)


# Writers of every issue that has a label or milestone, with the answer each gets.
MANY_ISSUE_WRITES = {
    "label-deletion": ("DELETE", "/api/v1/projects/FLY/labels/shared", None, 204),
    "label-recolouring": ("PATCH", "/api/v1/projects/FLY/labels/shared", {"color": "#123456"}, 200),
    "milestone-due-date": ("PATCH", "milestone", {"due_on": "2030-01-01"}, 200),
    # The reporter signing in under a new name: the issues they reported show it.
    "reporter-renamed": ("GET", "/api/v1/users/me", None, 200),
}


@pytest.mark.postgres_only
@pytest.mark.parametrize("write", MANY_ISSUE_WRITES.values(), ids=MANY_ISSUE_WRITES)
async def test_a_write_to_the_issues_of_a_label_or_milestone_locks_them_in_id_order(
    team: Team, settings: Settings, write: tuple[str, str, dict[str, Any] | None, int]
) -> None:
    """As a bulk change does: the two queue, whatever order the rows lie in on disk."""
    method, url, body, expected = write
    maintainer = team["maintainer"]
    await team.label("shared")
    milestone = await maintainer.post("/api/v1/projects/FLY/milestones", json={"title": "1.0"})
    if url == "milestone":
        url = f"/api/v1/projects/FLY/milestones/{milestone.json()['id']}"
    await team.issue()
    # FLY-1 written last: its row now lies after FLY-2's.
    for key in ("FLY-2", "FLY-1"):
        shared = await maintainer.patch(
            f"/api/v1/issues/{key}", json={"labels": ["shared"], "milestone": "1.0"}
        )
        assert shared.status_code == 200, shared.text
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as bulk:
            # A bulk change over both holds FLY-1 so far, and takes FLY-2 next; slow to look
            # for a deadlock, so that were there one, the request would be its victim.
            bulk.execute(sa.text("SET LOCAL deadlock_timeout = '30s'"))
            lock = "SELECT id FROM issue WHERE number = :number FOR NO KEY UPDATE"
            bulk.execute(sa.text(lock), {"number": 1})
            caller = (
                team.api.as_user("reporter", name="Renamed Reporter")
                if url == "/api/v1/users/me"
                else maintainer
            )
            sent = asyncio.create_task(caller.request(method, url, json=body))
            await waiting_on_a_lock(engine, sent)
            await asyncio.to_thread(bulk.execute, sa.text(lock), {"number": 2})
            bulk.commit()
        response = await sent
    finally:
        engine.dispose()
    assert response.status_code == expected, response.text


@pytest.mark.postgres_only
async def test_a_renamed_author_and_a_writer_of_their_comments_lock_them_in_id_order(
    team: Team, settings: Settings
) -> None:
    for body in ("first", "second"):
        posted = await team["reporter"].post(f"{ISSUE}/comments", json={"body": body})
        assert posted.status_code == 201, posted.text
    first = posted.json()["id"] - 1
    # Edited last: the first comment's row now lies after the second's.
    edited = await team["reporter"].patch(f"/api/v1/comments/{first}", json={"body": "edited"})
    assert edited.status_code == 200, edited.text
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as writer:
            # A writer of both (a move of their issue) holds the first so far, the second
            # next; slow to look for a deadlock, so that the rename would be its victim.
            writer.execute(sa.text("SET LOCAL deadlock_timeout = '30s'"))
            lock = "SELECT id FROM comment WHERE id = :id FOR NO KEY UPDATE"
            writer.execute(sa.text(lock), {"id": first})
            renamed = team.api.as_user("reporter", name="Renamed Reporter")
            sent = asyncio.create_task(renamed.get("/api/v1/users/me"))
            await waiting_on_a_lock(engine, sent)
            await asyncio.to_thread(writer.execute, sa.text(lock), {"id": first + 1})
            writer.commit()
        response = await sent
    finally:
        engine.dispose()
    assert response.status_code == 200, response.text
