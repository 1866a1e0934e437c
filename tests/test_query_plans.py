"""The issue list's queries are index scans at a realistic size (PostgreSQL's plans), and so
are the lists of watched issues, an issue's watchers and its files.

About 30,000 issues in ten projects, with labels, are seeded in a few set-based statements
and analysed; then the very statements the list route builds are explained. Any sequential
scan of ``issue`` means a filter or sort the API offers has no index serving it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from flyswatter.attachments.service import attachments_statement
from flyswatter.auth.tokens import Principal
from flyswatter.issues import listing
from flyswatter.issues.listing import (
    IssueFilters,
    IssueQuery,
    IssueSort,
)
from flyswatter.issues.models import IssueStatus, Priority
from flyswatter.watchers.service import watchers_statement, watching_statement
from tests.support.api import ROLES, Api, make_team

pytestmark = pytest.mark.postgres_only

PROJECTS = 10
ISSUES_PER_PROJECT = 3_000
LIMIT = 50
SEQ_SCAN_ON_ISSUE = re.compile(r"Seq Scan on issue(\s|$)")

# Issue g of every project gets these words; "zebrafish" is rare (a few issues in all).
SEED_SQL = """
WITH people AS (SELECT array_agg(id ORDER BY id) AS ids FROM "user")
INSERT INTO issue (
    project_id, number, title, description, type, priority, priority_rank, status,
    reporter_id, assignee_id, created_at, updated_at, closed_at, version, milestone_id,
    milestone_due_rank
)
SELECT
    p.id,
    g,
    (ARRAY['Crash', 'Login', 'Export', 'Slow', 'Button', 'Render'])[1 + g % 6]
        || ' in module ' || (g % 50),
    CASE WHEN g % 1000 = 7 THEN 'zebrafish appears in the log' ELSE
        (ARRAY['steps to reproduce', 'stack trace attached', 'seen on android',
               'regression since last release'])[1 + g % 4] END,
    (ARRAY['bug', 'feature', 'task'])[1 + g % 3],
    (ARRAY['low', 'medium', 'high', 'critical'])[1 + g % 4],
    g % 4,
    (ARRAY['open', 'in_progress', 'resolved', 'closed'])[1 + g % 4],
    people.ids[1 + g % array_length(people.ids, 1)],
    CASE WHEN g % 3 = 0 THEN NULL ELSE people.ids[1 + (g / 3) % array_length(people.ids, 1)] END,
    TIMESTAMPTZ '2026-01-01' - make_interval(secs => g * 60),
    TIMESTAMPTZ '2026-01-01' - make_interval(secs => g * 60) + make_interval(mins => g % 97),
    NULL,
    1,
    m.id,
    COALESCE(m.due_on - DATE '0001-01-01' + 1, 3652060)
FROM project p CROSS JOIN generate_series(1, :per_project) g CROSS JOIN people
LEFT JOIN milestone m
    ON m.project_id = p.id AND g % 4 = 0 AND m.title = 'M' || (1 + g % 10)
"""
SEED_PROJECTS_SQL = """
INSERT INTO project (key, name, description, created_by, archived, last_issue_number,
                     created_at, updated_at)
SELECT 'P' || g, 'Project ' || g, '', (SELECT min(id) FROM "user"), false, :per_project,
       now(), now()
FROM generate_series(1, :count) g
"""
SEED_LABELS_SQL = """
INSERT INTO label (project_id, name, color, description, created_at)
SELECT p.id, l.name, '#d73a4a', '', now()
FROM project p CROSS JOIN (VALUES ('ui'), ('backend'), ('urgent'), ('docs'), ('perf')) l(name)
"""
# About a third of the issues carry one label, some two.
SEED_ISSUE_LABELS_SQL = """
INSERT INTO issue_label (issue_id, label_id)
SELECT i.id, l.id
FROM issue i JOIN label l ON l.project_id = i.project_id
WHERE (i.number % 3 = 0
       AND l.name = (ARRAY['ui', 'backend', 'urgent', 'docs', 'perf'])[1 + i.number % 5])
   OR (i.number % 7 = 0 AND l.name = 'urgent')
ON CONFLICT DO NOTHING
"""

# Ten milestones a project, a month apart (seeded before the issues, every fourth of which is
# in one of them: set as they are inserted, so that the table is laid out as without them).
SEED_MILESTONES_SQL = """
INSERT INTO milestone (project_id, title, description, due_on, state, created_at, updated_at,
                       version)
SELECT p.id, 'M' || m, '', DATE '2027-01-01' + m * 30, 'open', now(), now(), 1
FROM project p CROSS JOIN generate_series(1, 10) m
"""

# In every project, issue 3n blocks 3n + 1, and issue 10n has sub-issues 10n + 1 to 10n + 3:
# about two relations for every three issues.
SEED_RELATIONS_SQL = """
INSERT INTO issue_relation (source_id, target_id, kind, created_by, created_at)
SELECT a.id, b.id, k.kind, a.reporter_id, now()
FROM issue a
JOIN (VALUES ('blocks', 3, 1), ('parent', 10, 3)) k(kind, every, children)
  ON a.number % k.every = 0
CROSS JOIN LATERAL generate_series(1, k.children) d
JOIN issue b ON b.project_id = a.project_id AND b.number = a.number + d
"""

RELATION_INDEXES = {
    "blocked": "ix_issue_relation_target_id_kind_source_id",
    "not blocked": "ix_issue_relation_target_id_kind_source_id",
    "sub-issues": "uq_issue_relation_source_id_kind_target_id",
    "with sub-issues": "uq_issue_relation_source_id_kind_target_id",
}


@dataclass(frozen=True)
class Seeded:
    project_id: int
    assignee_id: str
    # An issue of the project with sub-issues.
    parent_id: int = 0


@pytest.fixture
async def seeded(api: Api, app: FastAPI) -> Seeded:
    team = await make_team(api)
    async with app.services.engine.begin() as connection:
        # Seeding is not what the service's statement timeout is for; a busy machine needs longer.
        await connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        await _run(
            connection, SEED_PROJECTS_SQL, per_project=ISSUES_PER_PROJECT, count=PROJECTS - 1
        )
        await _run(
            connection,
            "UPDATE project SET last_issue_number = :n WHERE key = 'FLY'",
            n=ISSUES_PER_PROJECT,
        )
        await _run(connection, SEED_MILESTONES_SQL)
        await _run(connection, SEED_SQL, per_project=ISSUES_PER_PROJECT)
        await _run(connection, SEED_LABELS_SQL)
        await _run(connection, SEED_ISSUE_LABELS_SQL)
        # The issues' statistics first, so that the relations are joined by index.
        await _run(connection, "ANALYZE issue")
        await _run(connection, SEED_RELATIONS_SQL)
        count = (await connection.exec_driver_sql("SELECT count(*) FROM issue")).scalar_one()
        assert count == PROJECTS * ISSUES_PER_PROJECT
    async with app.services.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("SET statement_timeout = 0")
        # Statistics, and the GIN pending list merged, as autovacuum leaves a live table.
        await autocommit.exec_driver_sql("VACUUM ANALYZE")
        project_id = (
            await connection.exec_driver_sql("SELECT id FROM project WHERE key = 'FLY'")
        ).scalar_one()
        parent_id = (
            await connection.exec_driver_sql(
                f"SELECT id FROM issue WHERE project_id = {project_id} AND number = 1510"
            )
        ).scalar_one()
    return Seeded(project_id=project_id, assignee_id=team.ids[ROLES[2]], parent_id=parent_id)


async def _run(connection: AsyncConnection, sql: str, **params: int | str) -> None:
    await connection.execute(text(sql), params)


async def explain(app: FastAPI, statement: object, *, analyze: bool = False) -> str:
    """PostgreSQL's plan for a statement exactly as the service sends it (bound parameters);
    with ``analyze``, as run, so that branches never executed say so."""
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=postgresql.psycopg.dialect(), compile_kwargs={"render_postcompile": True}
    )
    # BUFFERS OFF: PostgreSQL 18 shows buffers by default, as 15 and 16 do not.
    command = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, BUFFERS OFF)" if analyze else "EXPLAIN"
    async with app.services.engine.connect() as connection:
        rows = await connection.exec_driver_sql(f"{command} {compiled}", dict(compiled.params))
        return "\n".join(row[0] for row in rows)


def page(
    seeded: Seeded, sort: IssueSort, after: list[Any] | None = None, **filters: object
) -> object:
    query = IssueQuery(seeded.project_id, IssueFilters(**filters), sort, "postgresql")  # type: ignore[arg-type]
    return query.page(after, LIMIT + 1)


def deep_cursor() -> list[Any]:
    """A position about 2,500 issues into the seeded project's newest-first order."""
    return [datetime(2025, 12, 30, 6, tzinfo=UTC), 10**9]


def cases(seeded: Seeded) -> Iterator[tuple[str, object]]:
    yield "default list", page(seeded, IssueSort.updated_desc)
    yield "oldest first", page(seeded, IssueSort.updated_asc)
    yield "by creation", page(seeded, IssueSort.created_desc)
    yield (
        "status and assignee",
        page(
            seeded,
            IssueSort.updated_desc,
            statuses=(IssueStatus.open, IssueStatus.in_progress),
            assignee=seeded.assignee_id,
        ),
    )
    yield "unassigned", page(seeded, IssueSort.updated_desc, assignee="none")
    yield "reporter", page(seeded, IssueSort.updated_desc, reporter=seeded.assignee_id)
    yield "priority sort", page(seeded, IssueSort.priority_desc)
    yield (
        "priority filter",
        page(seeded, IssueSort.updated_desc, priorities=(Priority.critical,)),
    )
    yield "one label", page(seeded, IssueSort.updated_desc, labels=("ui",))
    yield "two labels", page(seeded, IssueSort.updated_desc, labels=("ui", "urgent"))
    yield (
        "deep keyset page",
        page(seeded, IssueSort.updated_desc, deep_cursor()),
    )
    yield "milestone filter", page(seeded, IssueSort.updated_desc, milestone="M3")
    yield "no milestone", page(seeded, IssueSort.updated_desc, milestone="none")
    yield "milestone due date sort", page(seeded, IssueSort.milestone_asc)
    yield "search, rare term", page(seeded, IssueSort.updated_desc, query="zebrafish")
    yield "search, common term", page(seeded, IssueSort.updated_desc, query="crash")
    yield (
        "search with a filter",
        page(seeded, IssueSort.updated_desc, query="android", statuses=(IssueStatus.open,)),
    )
    member = seeded.assignee_id
    yield "blocked", page(seeded, IssueSort.updated_desc, blocked=True, related_seen_by=member)
    yield (
        "not blocked",
        page(seeded, IssueSort.updated_desc, blocked=False, related_seen_by=member),
    )
    yield "sub-issues", page(seeded, IssueSort.updated_desc, parent_id=seeded.parent_id)
    yield (
        "with sub-issues",
        page(seeded, IssueSort.updated_desc, has_children=True, related_seen_by=member),
    )


async def test_no_list_or_search_query_scans_the_issue_table(seeded: Seeded, app: FastAPI) -> None:
    plans = {name: await explain(app, statement) for name, statement in cases(seeded)}
    scanning = {name: plan for name, plan in plans.items() if SEQ_SCAN_ON_ISSUE.search(plan)}
    assert not scanning, "\n\n".join(f"{name}:\n{plan}" for name, plan in scanning.items())
    # The relation filters look relations up by index: blockers and parents by target,
    # sub-issues by source.
    for name, index in RELATION_INDEXES.items():
        assert index in plans[name], plans[name]
        assert "Seq Scan on issue_relation" not in plans[name], plans[name]


async def test_pages_walk_their_index_in_order_and_search_uses_the_text_index(
    seeded: Seeded, app: FastAPI
) -> None:
    for sort in (IssueSort.updated_desc, IssueSort.created_asc, IssueSort.priority_desc):
        plan = await explain(app, page(seeded, sort))
        assert "Index Scan" in plan, plan
        assert "Sort" not in plan, plan
    deep = await explain(app, page(seeded, IssueSort.updated_desc, deep_cursor()))
    assert "Index Scan Backward using ix_issue_project_updated" in deep, deep
    assert "Sort" not in deep, deep
    rare = await explain(app, page(seeded, IssueSort.updated_desc, query="zebrafish"))
    assert "ix_issue_search_document" in rare, rare


async def test_milestone_filter_and_due_date_sort_walk_their_indexes(
    seeded: Seeded, app: FastAPI
) -> None:
    # A milestone's issues come from the index on (project, milestone, ...): in index order,
    # or, for as few issues as a milestone holds, gathered from it and sorted. (Issues in no
    # milestone are most of them: the list's own order finds them, as "unassigned" does.)
    plan = await explain(app, page(seeded, IssueSort.updated_desc, milestone="M3"))
    assert "Index Scan on ix_issue_project_milestone_updated" in plan or (
        "using ix_issue_project_milestone_updated on issue" in plan
    ), plan
    assert not SEQ_SCAN_ON_ISSUE.search(plan), plan
    for sort in (IssueSort.milestone_asc, IssueSort.milestone_desc):
        plan = await explain(app, page(seeded, sort))
        assert "using ix_issue_project_milestone_due on issue" in plan, plan
        assert "Sort" not in plan, plan
    deep = await explain(app, page(seeded, IssueSort.milestone_asc, [739_000, 10**6]))
    assert "using ix_issue_project_milestone_due on issue" in deep, deep


def _text_index_branch(plan: str) -> str:
    """The scan of ``issue`` under the plan's one-time filter: the branch that asks the text
    index for every match, with its run-time annotation ("never executed")."""
    lines = plan.splitlines()
    (start,) = [n for n, line in enumerate(lines) if "One-Time Filter" in line]
    # A bitmap scan through the text index, or (planner's choice) an index scan with a filter.
    scan = re.compile(r"Scan (?:using \S+ )?on issue \w+ \(")
    scans = [n for n in range(start, len(lines)) if scan.search(lines[n])]
    assert scans, plan
    # The table scan's line and its index scan's, a few lines below.
    return "\n".join(lines[scans[0] : scans[0] + 5])


async def test_search_reads_a_page_order_window_and_the_text_index_only_for_scarce_terms(
    seeded: Seeded, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window scaled to this project as the real one is to a big project (2,000 of
    # 200,000 issues): a window of most of a project is rightly read another way.
    monkeypatch.setattr(listing, "SEARCH_WINDOW", 400)
    # A common term ("Crash" is one title in six) fills its page from the first issues in
    # page order: the GIN branch is planned but never runs.
    for sort, scan in (
        (IssueSort.updated_desc, "Index Scan Backward using ix_issue_project_updated"),
        (IssueSort.priority_asc, "Index Scan using ix_issue_project_priority"),
    ):
        common = await explain(app, page(seeded, sort, query="crash"), analyze=True)
        assert f"{scan} on issue" in common, common
        assert "never executed" in _text_index_branch(common), common
        assert "Index Scan using pk_issue on issue" in common, common
    # Page two continues from the cursor in the same way.
    cursor = deep_cursor()
    second = await explain(
        app, page(seeded, IssueSort.updated_desc, cursor, query="crash"), analyze=True
    )
    assert "never executed" in _text_index_branch(second), second
    # A rare term leaves the window short of a page, so its matches come from the GIN index
    # on (project_id, document), within the project, and are sorted there. So does a common
    # term absent from the first issues in page order: no "Crash" title has the top priority.
    for sort, term, filters in (
        (IssueSort.updated_desc, "zebrafish", {}),
        # (The seed closes every zebrafish issue; with no candidate left by a filter, the
        # statement has no need to compute the array at all.)
        (IssueSort.updated_desc, "zebrafish", {"statuses": (IssueStatus.closed,)}),
        (IssueSort.priority_desc, "crash", {}),
    ):
        rare = await explain(app, page(seeded, sort, query=term, **filters), analyze=True)
        branch = _text_index_branch(rare)
        assert "never executed" not in branch.splitlines()[0], rare
        assert "Bitmap Index Scan on ix_issue_search_document" in branch, rare
        assert not SEQ_SCAN_ON_ISSUE.search(rare), rare


# A thousand more people, each following a few dozen issues; the assignee of the plans above
# follows a hundred (having unfollowed a few more). And every tenth issue has a file.
SEED_PEOPLE_SQL = """
INSERT INTO "user" (id, username, is_service_account, created_at, updated_at)
SELECT 'seed-' || g, 'seed-' || g, false, now(), now() FROM generate_series(1, 1000) g
"""
SEED_WATCHERS_SQL = """
INSERT INTO watcher (issue_id, user_id, following, automatic, created_at, updated_at)
SELECT i.id, 'seed-' || (1 + (i.id * 7 + k * 13) % 1000), true, true, now(), now()
FROM issue i CROSS JOIN generate_series(0, 1) k
UNION ALL
SELECT i.id, :follower, i.number % 1500 <> 0, false, now(), now()
FROM issue i WHERE i.number % 300 = 0
"""
SEED_ATTACHMENTS_SQL = """
INSERT INTO attachment (issue_id, filename, content_type, size, checksum, key, uploaded_by,
                        created_at)
SELECT i.id, 'shot.png', 'image/png', 1, repeat('0', 64), 'attachments/' || i.id, i.reporter_id,
       now()
FROM issue i WHERE i.number % 10 = 0
"""


async def test_watched_issues_files_and_followers_are_read_through_their_indexes(
    seeded: Seeded, app: FastAPI
) -> None:
    async with app.services.engine.begin() as connection:
        await connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        await _run(connection, SEED_PEOPLE_SQL)
        await connection.execute(text(SEED_WATCHERS_SQL), {"follower": seeded.assignee_id})
        await _run(connection, SEED_ATTACHMENTS_SQL)
    async with app.services.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("ANALYZE watcher")
        await autocommit.exec_driver_sql("ANALYZE attachment")
        issue_id = (
            await connection.exec_driver_sql(
                f"SELECT id FROM issue WHERE project_id = {seeded.project_id} AND number = 30"
            )
        ).scalar_one()
    follower = Principal(
        subject=seeded.assignee_id,
        username="developer",
        email=None,
        name=None,
        client_id=None,
        is_service_account=False,
        scopes=frozenset(),
        realm_roles=frozenset(),
    )
    plans = {
        "watching": await explain(app, watching_statement(follower, None, LIMIT + 1)),
        "watching, deep page": await explain(
            app, watching_statement(follower, [10**6, 10**9], LIMIT + 1)
        ),
        "an issue's watchers": await explain(app, watchers_statement(issue_id, None, LIMIT + 1)),
        "an issue's files": await explain(app, attachments_statement(issue_id, None, LIMIT + 1)),
    }
    for name, plan in plans.items():
        assert not re.search(r"Seq Scan on (issue|watcher|attachment)(\s|$)", plan), (name, plan)
    assert "ix_watcher_user_id_issue_id" in plans["watching"], plans["watching"]
    assert "pk_watcher" in plans["an issue's watchers"], plans["an issue's watchers"]
    assert "ix_attachment_issue_id_id" in plans["an issue's files"], plans["an issue's files"]
