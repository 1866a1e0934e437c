"""A search page is the same whichever way PostgreSQL finds it: in the window of issues read
in page order, or, when that window holds less than a page, from the text index.

The window's size is shrunk so that a dozen issues exercise both ways and every mix of the
two across pages; the plans themselves are pinned in test_query_plans.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlmodel import col

from flyswatter.issues import listing
from flyswatter.issues.models import Issue
from tests.support.api import Api, Team, make_team, walk_pages

pytestmark = pytest.mark.postgres_only

LIST = "/api/v1/projects/FLY/issues"
COUNT = 12
MATCHING = {2, 3, 5, 7, 11, 12}
PRIORITIES = ["low", "medium", "high", "critical"]


@pytest.fixture
async def corpus(api: Api, app: FastAPI) -> tuple[Team, dict[int, tuple[datetime, int]]]:
    """Twelve issues, six of them about a "needle", with ties in every sort key."""
    team = await make_team(api)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    keys: dict[int, tuple[datetime, int]] = {}
    for n in range(1, COUNT + 1):
        word = "needle" if n in MATCHING else "haystack"
        priority = PRIORITIES[(n * 3) % 4]
        await team.issue(title=f"issue {n}", description=f"a {word} here", priority=priority)
        updated = base + timedelta(minutes=(n * 5) % 4)
        async with app.services.engine.begin() as connection:
            await connection.execute(
                update(Issue).where(col(Issue.number) == n).values(updated_at=updated)
            )
        keys[n] = (updated, PRIORITIES.index(priority))
    return team, keys


@pytest.mark.parametrize("window", [1, 3, 4, 1_000])
@pytest.mark.parametrize("sort", ["-updated_at", "updated_at", "-priority"])
async def test_every_page_of_a_search_holds_the_same_issues_whatever_the_window(
    corpus: tuple[Team, dict[int, tuple[datetime, int]]],
    monkeypatch: pytest.MonkeyPatch,
    window: int,
    sort: str,
) -> None:
    monkeypatch.setattr(listing, "SEARCH_WINDOW", window)
    team, keys = corpus
    field = 1 if sort.endswith("priority") else 0
    expected = sorted(MATCHING, key=lambda n: (keys[n][field], n), reverse=sort.startswith("-"))
    for limit in (1, 2, 5):
        items = await walk_pages(team["viewer"], f"{LIST}?q=needle&sort={sort}&limit={limit}")
        assert [item["number"] for item in items] == expected, f"limit={limit}"
