"""The hot read paths build response models from database rows without validating them
(``issues.service._trusted``); what they build must be exactly what validation would make."""

from __future__ import annotations

import pytest

from flyswatter.http.pagination import Page
from flyswatter.issues.models import IssuePublic
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
