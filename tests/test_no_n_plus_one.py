"""Listing issues costs a fixed number of statements, however many issues, labels and people
are on the page; so do an issue's files and followers, the caller's watched issues, and the
watchers an issue event names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, insert, select
from sqlmodel import col

from flyswatter.attachments.models import Attachment
from flyswatter.issues.models import Issue
from flyswatter.labels.models import IssueLabel, Label
from flyswatter.projects.models import Project
from flyswatter.users.models import User
from flyswatter.watchers.models import Watcher
from tests.support.api import ROLES, Api, Team, make_team

LIST = "/api/v1/projects/FLY/issues"
LABELS = ("ui", "backend", "urgent", "docs")
# Project and membership; the page of issues with their people; their labels. Nothing per issue.
STATEMENTS_PER_LIST = 3


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


@contextmanager
def counted_statements(app: FastAPI) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block (transaction control aside)."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.split(None, 1)[0].upper() not in {"BEGIN", "COMMIT", "ROLLBACK"}:
            statements.append(statement)

    engine = app.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def seed_issues(app: FastAPI, team: Team, count: int) -> None:
    """``count`` issues with labels, reporters and assignees spread over every member."""
    for name in LABELS:
        await team.label(name)
    people = [team.ids[role] for role in ROLES]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with app.services.engine.begin() as connection:
        project_id = (
            await connection.execute(select(col(Project.id)).where(col(Project.key) == "FLY"))
        ).scalar_one()
        label_ids = (
            (
                await connection.execute(
                    select(col(Label.id))
                    .where(col(Label.project_id) == project_id)
                    .order_by(col(Label.id))
                )
            )
            .scalars()
            .all()
        )
        await connection.execute(
            insert(Issue),
            [
                {
                    "project_id": project_id,
                    "number": n,
                    "title": f"issue {n}",
                    "description": "",
                    "type": "bug",
                    "priority": "medium",
                    "priority_rank": 1,
                    "status": "open",
                    "reporter_id": people[n % len(people)],
                    "assignee_id": people[(n + 1) % len(people)] if n % 3 else None,
                    "created_at": start,
                    "updated_at": start + timedelta(seconds=n),
                    "version": 1,
                }
                for n in range(1, count + 1)
            ],
        )
        issue_ids = (
            (
                await connection.execute(
                    select(col(Issue.id)).where(col(Issue.project_id) == project_id)
                )
            )
            .scalars()
            .all()
        )
        await connection.execute(
            insert(IssueLabel),
            [
                {"issue_id": issue_id, "label_id": label_id}
                for issue_id in issue_ids
                for label_id in label_ids[: 1 + issue_id % len(label_ids)]
            ],
        )


async def test_listing_10_or_200_issues_runs_the_same_few_statements(
    team: Team, app: FastAPI
) -> None:
    await seed_issues(app, team, 200)
    viewer = team["viewer"]
    # The first call mirrors the caller's identity (a write); measure the steady state.
    assert (await viewer.get(f"{LIST}?limit=1")).status_code == 200

    counts = {}
    for limit in (10, 200):
        with counted_statements(app) as statements:
            response = await viewer.get(f"{LIST}?limit={limit}")
        assert response.status_code == 200
        page = response.json()["items"]
        assert len(page) == limit
        # The page really carries what would otherwise be loaded lazily, one issue at a time.
        assert all(issue["labels"] for issue in page)
        assert {issue["reporter"]["username"] for issue in page} == set(ROLES)
        assert any(issue["assignee"] is None for issue in page)
        assert {issue["assignee"]["username"] for issue in page if issue["assignee"]} == set(ROLES)
        counts[limit] = len(statements)
    assert counts == {10: STATEMENTS_PER_LIST, 200: STATEMENTS_PER_LIST}


async def test_counting_adds_exactly_one_statement(team: Team, app: FastAPI) -> None:
    await seed_issues(app, team, 30)
    viewer = team["viewer"]
    assert (await viewer.get(f"{LIST}?limit=1")).status_code == 200
    with counted_statements(app) as statements:
        response = await viewer.get(f"{LIST}?limit=30&count=true&label=ui")
    assert response.json()["total"] == 30
    assert len(statements) == STATEMENTS_PER_LIST + 1


async def test_reading_one_issue_runs_a_fixed_number_of_statements(
    team: Team, app: FastAPI
) -> None:
    await seed_issues(app, team, 3)
    viewer = team["viewer"]
    assert (await viewer.get("/api/v1/issues/FLY-3")).status_code == 200
    with counted_statements(app) as statements:
        response = await viewer.get("/api/v1/issues/FLY-3")
    assert len(response.json()["labels"]) == 4
    assert response.json()["reporter"]["username"] in ROLES
    # Project, membership, the issue and its people in one statement; its labels in another.
    assert len(statements) == 2


async def test_a_fresh_etag_answers_304_from_one_statement(team: Team, app: FastAPI) -> None:
    await seed_issues(app, team, 3)
    viewer = team["viewer"]
    etag = (await viewer.get("/api/v1/issues/FLY-3")).headers["ETag"]
    with counted_statements(app) as statements:
        response = await viewer.get("/api/v1/issues/FLY-3", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert len(statements) == 1


async def test_reading_an_issues_relations_runs_the_same_few_statements_for_2_or_20(
    team: Team, app: FastAPI
) -> None:
    await seed_issues(app, team, 21)
    developer = team["developer"]
    for number in range(2, 22):
        kind = ("blocks", "parent", "relates_to", "duplicated_by")[number % 4]
        body = {"kind": kind, "target": f"FLY-{number}"}
        response = await developer.post("/api/v1/issues/FLY-1/relations", json=body)
        assert response.status_code == 201, response.text
    counts = {}
    for limit in (2, 20):
        with counted_statements(app) as statements:
            response = await developer.get(f"/api/v1/issues/FLY-1/relations?limit={limit}")
        page = response.json()["items"]
        assert len(page) == limit
        # Each relation carries its other issue and who made it, loaded with the page.
        assert all(item["issue"]["title"] and item["created_by"]["username"] for item in page)
        counts[limit] = len(statements)
    # Project and membership; the issue; the page of relations with their issues and people.
    assert counts == {2: 3, 20: 3}


async def add_followers_and_files(app: FastAPI, number: int, count: int) -> None:
    """``count`` more people following issue FLY-``number``, each with a file on it."""
    async with app.services.engine.begin() as connection:
        issue_id = (
            await connection.execute(
                select(col(Issue.id))
                .join(Project, col(Project.id) == col(Issue.project_id))
                .where(col(Project.key) == "FLY", col(Issue.number) == number)
            )
        ).scalar_one()
        existing = (await connection.execute(select(func.count()).select_from(User))).scalar_one()
        people = [f"follower-{existing + n}" for n in range(count)]
        await connection.execute(
            insert(User), [{"id": person, "username": person} for person in people]
        )
        await connection.execute(
            insert(Watcher), [{"issue_id": issue_id, "user_id": person} for person in people]
        )
        await connection.execute(
            insert(Attachment),
            [
                {
                    "issue_id": issue_id,
                    "filename": f"{person}.png",
                    "content_type": "image/png",
                    "size": 1,
                    "checksum": "0" * 64,
                    "key": f"attachments/{issue_id}/{person}",
                    "uploaded_by": person,
                }
                for person in people
            ],
        )


async def test_an_issue_with_files_and_followers_reads_in_the_same_statements(
    team: Team, app: FastAPI
) -> None:
    await seed_issues(app, team, 3)
    await add_followers_and_files(app, 3, 30)
    viewer = team["viewer"]
    assert (await viewer.get("/api/v1/issues/FLY-3")).status_code == 200
    with counted_statements(app) as statements:
        response = await viewer.get("/api/v1/issues/FLY-3")
    assert response.status_code == 200
    assert len(statements) == 2


@pytest.mark.parametrize("resource", ["attachments", "watchers"])
async def test_an_issues_files_and_followers_list_in_a_fixed_number_of_statements(
    team: Team, app: FastAPI, resource: str
) -> None:
    await seed_issues(app, team, 2)
    await add_followers_and_files(app, 1, 3)
    await add_followers_and_files(app, 2, 60)
    viewer = team["viewer"]
    assert (await viewer.get("/api/v1/issues/FLY-1")).status_code == 200
    counts = {}
    for number, size in ((1, 3), (2, 60)):
        with counted_statements(app) as statements:
            response = await viewer.get(f"/api/v1/issues/FLY-{number}/{resource}?limit=100")
        items = response.json()["items"]
        assert len(items) == size
        # Every item names its person, who would otherwise be loaded one by one.
        people = {item["uploader" if resource == "attachments" else "user"]["id"] for item in items}
        assert len(people) == size
        counts[size] = len(statements)
    # Project and membership, the issue, the page (with or then its people).
    assert counts[3] == counts[60] <= 4


async def test_watched_issues_list_in_a_fixed_number_of_statements(
    team: Team, app: FastAPI
) -> None:
    await seed_issues(app, team, 40)
    reporter = team["reporter"]
    for number in (1, 2):
        assert (await reporter.put(f"/api/v1/issues/FLY-{number}/watchers/me")).status_code == 200
    with counted_statements(app) as statements:
        few = (await reporter.get("/api/v1/users/me/watching")).json()["items"]
    two = len(statements)
    for number in range(3, 41):
        await reporter.put(f"/api/v1/issues/FLY-{number}/watchers/me")
    with counted_statements(app) as statements:
        many = (await reporter.get("/api/v1/users/me/watching")).json()["items"]
    assert (len(few), len(many)) == (2, 40)
    assert all(issue["labels"] for issue in many)
    # The page of issues with their people and projects; their labels.
    assert two == len(statements) == 2


async def test_an_issue_event_names_its_watchers_in_one_statement(team: Team, app: FastAPI) -> None:
    await seed_issues(app, team, 2)
    await add_followers_and_files(app, 2, 40)
    developer = team["developer"]
    counts = []
    for number in (1, 2):
        # The commenter's first comment here follows the issue; the second is measured.
        await developer.post(f"/api/v1/issues/FLY-{number}/comments", json={"body": "first"})
        with counted_statements(app) as statements:
            response = await developer.post(
                f"/api/v1/issues/FLY-{number}/comments", json={"body": "again"}
            )
        assert response.status_code == 201
        counts.append(len(statements))
    assert counts[0] == counts[1]
