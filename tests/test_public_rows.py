"""The hot read paths build response models from database rows without validating them
(``issues.read_model._trusted``); what they build must be exactly what validation would make."""

from __future__ import annotations

import warnings

import pytest
from fastapi import FastAPI
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.http.pagination import Page
from flyswatter.issues.models import Issue, IssuePublic
from flyswatter.issues.read_model import (
    ISSUES_WITH_PEOPLE,
    PUBLIC_ISSUE_COLUMNS,
    build_public_issues,
    public_issues_page,
)
from flyswatter.projects.models import Project
from tests.support.api import Api, Team, make_team


@pytest.fixture
async def team(api: Api) -> Team:
    team = await make_team(api)
    await team.label("ui")
    await team.label("backend", color="#0e8a16")
    await team.issue(title="  Crash on save  ", labels=["ui", "backend"], priority="critical")
    await team.issue(
        title="Assigned, typed, closed",
        type="task",
        assignee_id=team.ids["developer"],
        author="developer",
    )
    await team["developer"].post("/api/v1/issues/FLY-2/transitions", json={"to": "closed"})
    return team


async def test_an_issue_read_by_key_validates_to_the_same_document(team: Team) -> None:
    for key in ("FLY-1", "FLY-2"):
        served = (await team["viewer"].get(f"/api/v1/issues/{key}")).json()
        assert IssuePublic.model_validate(served).model_dump(mode="json") == served


async def test_a_list_page_validates_to_the_same_document(team: Team) -> None:
    served = (await team["viewer"].get("/api/v1/projects/FLY/issues")).json()
    assert len(served["items"]) == 2
    assert Page[IssuePublic].model_validate(served).model_dump(mode="json") == served
    closed = next(item for item in served["items"] if item["key"] == "FLY-2")
    assert (closed["status"], closed["type"], closed["closed_at"] is not None) == (
        "closed",
        "task",
        True,
    )
    assert closed["assignee"]["is_service_account"] is False
    labelled = next(item for item in served["items"] if item["key"] == "FLY-1")
    assert [label["name"] for label in labelled["labels"]] == ["backend", "ui"]
    assert labelled["title"] == "Crash on save"


async def test_rows_built_without_validation_equal_the_validated_entities(
    app: FastAPI, team: Team
) -> None:
    async with AsyncSession(app.services.engine) as session:
        project = (await session.exec(select(Project).where(Project.key == "FLY"))).one()
        issues = (
            await session.exec(
                select(Issue).where(Issue.project_id == project.id).order_by(col(Issue.number))
            )
        ).all()
        validated = await build_public_issues(session, project, issues)
        connection = await session.connection()
        statement = (
            select(*PUBLIC_ISSUE_COLUMNS)
            .select_from(ISSUES_WITH_PEOPLE)
            .where(col(Issue.project_id) == project.id)
            .order_by(col(Issue.number))
        )
        trusted = await public_issues_page(
            session, "FLY", list(await connection.execute(statement))
        )
    assert len(trusted) == len(validated) == 2
    with warnings.catch_warnings():
        # A value of another type than its field's makes pydantic warn while serialising.
        warnings.simplefilter("error")
        for fast, checked in zip(trusted, validated, strict=True):
            assert fast.model_dump() == checked.model_dump()
            assert fast.model_dump_json() == checked.model_dump_json()
            assert {name: type(value) for name, value in fast} == {
                name: type(value) for name, value in checked
            }
