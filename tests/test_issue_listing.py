"""The issue list: every filter, full-text search, every sort walked page by page, counts,
and the errors a client can make with cursors and limits."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import insert, update
from sqlmodel import col

from flyswatter.issues.models import Issue
from tests.support.api import Api, Team, make_team, walk_pages

LIST = "/api/v1/projects/FLY/issues"
PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


async def set_times(app: FastAPI, number: int, **times: datetime) -> None:
    """Pin an issue's timestamps, so that orderings (and ties) are known in advance."""
    async with app.services.engine.begin() as connection:
        await connection.execute(update(Issue).where(col(Issue.number) == number).values(**times))


def numbers(items: list[dict[str, Any]]) -> list[int]:
    return [item["number"] for item in items]


class TestFilters:
    @pytest.fixture
    async def issues(self, team: Team) -> Team:
        """Eight issues of every kind; the comments give each one's distinguishing traits."""
        for name in ("ui", "backend", "urgent"):
            await team.label(name)
        specs: list[tuple[str, dict[str, Any]]] = [
            # 1: reporter's bug, open, assigned to developer, ui+urgent, high
            ("reporter", {"labels": ["ui", "urgent"], "priority": "high"}),
            # 2: reporter's feature, in progress, unassigned, ui, low
            ("reporter", {"type": "feature", "labels": ["ui"], "priority": "low"}),
            # 3: developer's task, resolved, assigned to developer, backend+urgent, medium
            ("developer", {"type": "task", "labels": ["backend", "urgent"]}),
            # 4: developer's bug, closed, assigned to viewer, no labels, critical
            ("developer", {"priority": "critical"}),
            # 5: maintainer's feature, open, unassigned, backend, high
            ("maintainer", {"type": "feature", "labels": ["backend"], "priority": "high"}),
            # 6: maintainer's bug, in progress, assigned to maintainer, every label, critical
            ("maintainer", {"labels": ["ui", "backend", "urgent"], "priority": "critical"}),
        ]
        for author, fields in specs:
            await team.issue(author=author, **fields)
        assignees = {1: "developer", 3: "developer", 4: "viewer", 6: "maintainer"}
        for number, role in assignees.items():
            response = await team["developer"].patch(
                f"/api/v1/issues/FLY-{number}", json={"assignee_id": team.ids[role]}
            )
            assert response.status_code == 200, response.text
        moves = {2: ["in_progress"], 3: ["in_progress", "resolved"], 4: ["closed"]}
        moves[6] = ["in_progress"]
        for number, path in moves.items():
            for to in path:
                response = await team["developer"].post(
                    f"/api/v1/issues/FLY-{number}/transitions", json={"to": to}
                )
                assert response.status_code == 200, response.text
        return team

    async def filtered(self, team: Team, query: str, who: str = "viewer") -> list[int]:
        items = await walk_pages(team[who], f"{LIST}?{query}&limit=2")
        return sorted(numbers(items))

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("status=open", [1, 5]),
            ("status=open&status=closed", [1, 4, 5]),
            ("status=in_progress&status=resolved", [2, 3, 6]),
            ("priority=critical", [4, 6]),
            ("priority=low&priority=high", [1, 2, 5]),
            ("type=feature", [2, 5]),
            ("type=task&type=feature", [2, 3, 5]),
            ("assignee=none", [2, 5]),
            ("label=ui", [1, 2, 6]),
            ("label=ui&label=urgent", [1, 6]),
            ("label=ui&label=backend&label=urgent", [6]),
            ("label=urgent&label=urgent", [1, 3, 6]),
            ("status=open&label=ui", [1]),
            ("type=bug&priority=critical&status=closed", [4]),
            ("assignee=none&type=bug", []),
        ],
    )
    async def test_filter_selects_exactly_the_matching_issues(
        self, issues: Team, query: str, expected: list[int]
    ) -> None:
        assert await self.filtered(issues, query) == expected

    async def test_assignee_by_id_and_me(self, issues: Team) -> None:
        dev_id = issues.ids["developer"]
        assert await self.filtered(issues, f"assignee={dev_id}") == [1, 3]
        assert await self.filtered(issues, "assignee=me", who="developer") == [1, 3]
        assert await self.filtered(issues, "assignee=me", who="viewer") == [4]
        assert await self.filtered(issues, "assignee=me", who="reporter") == []

    async def test_reporter_by_id_and_me(self, issues: Team) -> None:
        assert await self.filtered(issues, f"reporter={issues.ids['maintainer']}") == [5, 6]
        assert await self.filtered(issues, "reporter=me", who="reporter") == [1, 2]
        assert await self.filtered(issues, "reporter=me", who="viewer") == []

    async def test_unknown_label_or_user_matches_nothing(self, issues: Team) -> None:
        assert await self.filtered(issues, "label=nope") == []
        assert await self.filtered(issues, "assignee=no-such-user") == []

    @pytest.mark.parametrize(
        "query", ["status=done", "priority=urgent", "type=epic", "sort=title", "label=a/b"]
    )
    async def test_unknown_filter_value_is_a_422(self, team: Team, query: str) -> None:
        response = await team["viewer"].get(f"{LIST}?{query}")
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize("query", ["assignee=", "reporter="])
    async def test_an_empty_person_filter_is_a_422_not_an_empty_list(
        self, team: Team, query: str
    ) -> None:
        # As an empty q or milestone is: an empty id names nobody, and answering an empty
        # list would read as "no issues" to a client that meant no filter.
        await team.issue()
        response = await team["viewer"].get(f"{LIST}?{query}")
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"

    async def test_count_is_the_number_of_matches_not_of_the_page(self, issues: Team) -> None:
        counted = await issues["viewer"].get(f"{LIST}?count=true&limit=1&label=ui")
        assert counted.json()["total"] == 3
        assert len(counted.json()["items"]) == 1
        everything = await issues["viewer"].get(f"{LIST}?count=true")
        assert everything.json()["total"] == 6
        uncounted = await issues["viewer"].get(f"{LIST}?label=ui")
        assert uncounted.json()["total"] is None

    async def test_filters_survive_into_the_next_link(self, issues: Team) -> None:
        response = await issues["viewer"].get(
            f"{LIST}?label=ui&status=open&status=in_progress&limit=1"
        )
        link = response.headers["Link"]
        assert "label=ui" in link
        assert "status=open" in link
        assert "status=in_progress" in link
        assert "limit=1" in link


class TestSearch:
    @pytest.fixture
    async def corpus(self, team: Team) -> Team:
        texts = [
            ("Crash on save", "The editor crashes when saving large files."),
            ("Slow startup", "Startup takes ten seconds on Android devices."),
            ("Login button misaligned", "On the settings page the LOGIN button overlaps."),
            ("Export to PDF", "Users want to export reports; crash reports too."),
            ("Dark mode", "Support a dark theme for the editor."),
            ("Écran figé", "L'éditeur se fige au démarrage."),
        ]
        for title, description in texts:
            await team.issue(title=title, description=description)
        return team

    async def search(self, team: Team, q: str) -> list[int]:
        response = await team["viewer"].get(LIST, params={"q": q})
        assert response.status_code == 200, response.text
        return sorted(numbers(response.json()["items"]))

    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ("crash", [1, 4]),
            ("CRASH", [1, 4]),
            ("editor", [1, 5]),
            ("android", [2]),
            ("login", [3]),
            ("editor dark", [5]),
            ("export reports", [4]),
            ("kubernetes", []),
            # Letters beyond ASCII fold too, whichever the database.
            ("écran", [6]),
            ("ÉDITEUR", [6]),
        ],
    )
    async def test_words_match_title_and_description_case_insensitively(
        self, corpus: Team, q: str, expected: list[int]
    ) -> None:
        assert await self.search(corpus, q) == expected

    async def test_search_combines_with_filters(self, corpus: Team) -> None:
        await corpus["developer"].post("/api/v1/issues/FLY-4/transitions", json={"to": "closed"})
        response = await corpus["viewer"].get(LIST, params={"q": "crash", "status": "open"})
        assert numbers(response.json()["items"]) == [1]

    async def test_search_pages_with_cursor(self, corpus: Team) -> None:
        items = await walk_pages(corpus["viewer"], f"{LIST}?q=editor&limit=1")
        assert sorted(numbers(items)) == [1, 5]

    async def test_empty_or_overlong_query_is_a_422(self, corpus: Team) -> None:
        assert (await corpus["viewer"].get(LIST, params={"q": ""})).status_code == 422
        assert (await corpus["viewer"].get(LIST, params={"q": "x" * 201})).status_code == 422

    async def test_every_word_must_match_however_many_words_there_are(self, corpus: Team) -> None:
        # The words of the title and description of FLY-2, then one that is in no issue: it
        # must still count, the eleventh word as much as the first.
        words = "slow startup takes ten seconds on android devices startup takes"
        assert await self.search(corpus, words) == [2]
        assert await self.search(corpus, f"{words} kubernetes") == []

    async def test_blank_query_lists_everything(self, corpus: Team) -> None:
        assert await self.search(corpus, "   ") == [1, 2, 3, 4, 5, 6]

    async def test_like_wildcards_in_the_query_are_literal(self, corpus: Team) -> None:
        assert await self.search(corpus, "%") == []
        assert await self.search(corpus, "_") == []

    @pytest.mark.postgres_only
    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ("crash -export", [1]),
            ('"crash reports"', [4]),
            ("startup or theme", [2, 5]),
            # Stemming: "saving" and "save" share a stem.
            ("saves", [1]),
        ],
    )
    async def test_postgres_search_takes_websearch_syntax_and_stems(
        self, corpus: Team, q: str, expected: list[int]
    ) -> None:
        assert await self.search(corpus, q) == expected


class TestSortAndPages:
    COUNT = 13

    @pytest.fixture
    async def timed(self, team: Team, app: FastAPI) -> dict[int, dict[str, Any]]:
        """Thirteen issues with many ties in every sort key, by design."""
        base = datetime(2026, 1, 1, tzinfo=UTC)
        priorities = ["low", "medium", "high", "critical"]
        expected: dict[int, dict[str, Any]] = {}
        for n in range(1, self.COUNT + 1):
            priority = priorities[(n * 3) % 4] if n % 5 else "high"
            await team.issue(title=f"issue {n}", priority=priority)
            updated = base + timedelta(minutes=(n * 7) % 4)
            created = base - timedelta(hours=n % 3)
            await set_times(app, n, updated_at=updated, created_at=created)
            expected[n] = {"updated_at": updated, "created_at": created, "priority": priority}
        return expected

    def expected_order(self, timed: dict[int, dict[str, Any]], sort: str) -> list[int]:
        name = sort.lstrip("-")

        def key(n: int) -> tuple[Any, int]:
            value = timed[n][name]
            return (PRIORITY_RANK[value] if name == "priority" else value, n)

        return sorted(timed, key=key, reverse=sort.startswith("-"))

    @pytest.mark.parametrize(
        "sort", ["-updated_at", "updated_at", "-created_at", "created_at", "-priority", "priority"]
    )
    async def test_walking_every_page_gives_each_issue_once_in_order(
        self, team: Team, timed: dict[int, dict[str, Any]], sort: str
    ) -> None:
        for limit in (1, 2, 5):
            items = await walk_pages(team["viewer"], f"{LIST}?sort={sort}&limit={limit}")
            assert numbers(items) == self.expected_order(timed, sort), f"limit={limit}"

    async def test_default_sort_is_most_recently_updated_first(
        self, team: Team, timed: dict[int, dict[str, Any]]
    ) -> None:
        items = await walk_pages(team["viewer"], f"{LIST}?limit=4")
        assert numbers(items) == self.expected_order(timed, "-updated_at")

    async def test_last_page_exactly_full_has_no_next(
        self, team: Team, timed: dict[int, dict[str, Any]]
    ) -> None:
        response = await team["viewer"].get(f"{LIST}?limit={self.COUNT}")
        assert len(response.json()["items"]) == self.COUNT
        assert response.json()["next_cursor"] is None
        assert "Link" not in response.headers

    async def test_an_issue_moving_to_the_front_while_paging_is_not_repeated(
        self, team: Team, timed: dict[int, dict[str, Any]]
    ) -> None:
        order = self.expected_order(timed, "-updated_at")
        first = await team["viewer"].get(f"{LIST}?limit=5")
        assert numbers(first.json()["items"]) == order[:5]
        # An update moves an issue already seen to the very front; the cursor is a position
        # in the order, not an offset, so the next pages neither repeat nor skip anything.
        touched = await team["developer"].patch(
            f"/api/v1/issues/FLY-{order[2]}", json={"title": "touched"}
        )
        assert touched.status_code == 200
        rest = await walk_pages(
            team["viewer"], f"{LIST}?limit=5&cursor={first.json()['next_cursor']}"
        )
        assert numbers(rest) == order[5:]


class TestCursorAndLimitErrors:
    @pytest.fixture
    async def three(self, team: Team) -> Team:
        for _ in range(3):
            await team.issue()
        return team

    @pytest.mark.parametrize(
        ("made_for", "used_with"),
        [("-updated_at", "updated_at"), ("-updated_at", "priority"), ("priority", "-created_at")],
    )
    async def test_cursor_from_another_sort_is_a_400(
        self, three: Team, made_for: str, used_with: str
    ) -> None:
        page = await three["viewer"].get(f"{LIST}?sort={made_for}&limit=1")
        cursor = page.json()["next_cursor"]
        response = await three["viewer"].get(f"{LIST}?sort={used_with}&cursor={cursor}")
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize(
        "cursor",
        [
            "garbage",
            "!!!",
            base64.urlsafe_b64encode(b"not json").decode(),
            base64.urlsafe_b64encode(json.dumps(["-updated_at", "yesterday", 1]).encode()).decode(),
            base64.urlsafe_b64encode(
                json.dumps(["-updated_at", "2026-01-01T00:00:00", 1]).encode()
            ).decode(),
            base64.urlsafe_b64encode(json.dumps(["-updated_at", 5, 1]).encode()).decode(),
            base64.urlsafe_b64encode(json.dumps({"sort": "-updated_at"}).encode()).decode(),
        ],
    )
    async def test_garbage_cursor_is_a_400(self, three: Team, cursor: str) -> None:
        response = await three["viewer"].get(LIST, params={"cursor": cursor})
        assert response.status_code == 400
        assert response.json()["detail"].startswith("invalid cursor")

    @pytest.mark.parametrize("limit", [0, 201, -1])
    async def test_limit_out_of_range_is_a_422(self, three: Team, limit: int) -> None:
        response = await three["viewer"].get(f"{LIST}?limit={limit}")
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["query", "limit"]

    async def test_limit_200_is_accepted(self, three: Team) -> None:
        assert (await three["viewer"].get(f"{LIST}?limit=200")).status_code == 200

    async def test_default_page_size_is_fifty(self, team: Team, app: FastAPI) -> None:
        async with app.services.engine.begin() as connection:
            project_id = (
                await connection.exec_driver_sql("SELECT id FROM project WHERE key = 'FLY'")
            ).scalar_one()
            reporter = team.ids["reporter"]
            await connection.execute(
                insert(Issue),
                [
                    {
                        "project_id": project_id,
                        "number": n,
                        "title": f"bulk {n}",
                        "description": "",
                        "type": "bug",
                        "priority": "medium",
                        "priority_rank": 1,
                        "status": "open",
                        "reporter_id": reporter,
                        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                        "updated_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
                        "version": 1,
                    }
                    for n in range(1, 52)
                ],
            )
        response = await team["viewer"].get(LIST)
        assert len(response.json()["items"]) == 50
        assert response.json()["next_cursor"] is not None
