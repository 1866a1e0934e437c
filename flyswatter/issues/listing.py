"""The issue list: filters, full-text search, sort orders and keyset pages.

Every sort is a pair (sort column, id), so a page continues strictly after the cursor's
pair with an index range scan; page 10,000 costs what page 1 costs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    Integer,
    and_,
    any_,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from flyswatter.db import UTCDateTime
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues.models import Issue, IssuePublic, IssueStatus, IssueType, Priority
from flyswatter.issues.read_model import (
    ISSUES_WITH_PEOPLE,
    PUBLIC_ISSUE_COLUMNS,
    public_issues_page,
)
from flyswatter.labels.models import IssueLabel, Label
from flyswatter.milestones.models import NO_MILESTONE, Milestone
from flyswatter.relations.filters import relation_filters

SEARCH_CONFIG = "english"
MAX_QUERY_LENGTH = 200
# A search's page first looks at this many issues in page order (see _bounded_search).
SEARCH_WINDOW = 2_000


class IssueSort(StrEnum):
    updated_desc = "-updated_at"
    updated_asc = "updated_at"
    created_desc = "-created_at"
    created_asc = "created_at"
    priority_desc = "-priority"
    priority_asc = "priority"
    # By the milestone's due date; issues in no milestone, or in one without a due date,
    # come after every dated one (before them when descending).
    milestone_asc = "milestone_due"
    milestone_desc = "-milestone_due"

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")

    @property
    def _attribute(self) -> str:
        """The issue's column (and a page row's attribute) the order pages by."""
        name = self.value.lstrip("-")
        return {"priority": "priority_rank", "milestone_due": "milestone_due_rank"}.get(name, name)

    @property
    def column(self) -> Any:
        return col(getattr(Issue, self._attribute))

    @property
    def cursor_type(self) -> type:
        return int if self._attribute.endswith("_rank") else datetime

    @property
    def cursor_types(self) -> tuple[type, type]:
        """The types of a cursor's values: the sort value, then the issue id."""
        return (self.cursor_type, int)

    def cursor_values(self, issue: Any) -> list[Any]:
        """The cursor after ``issue`` (an entity or a row with the sort columns)."""
        value = getattr(issue, self._attribute)
        return [value if self.cursor_type is int else value.isoformat(), issue.id]


@dataclass(frozen=True, slots=True)
class IssueFilters:
    statuses: tuple[IssueStatus, ...] = ()
    assignee: str | None = None  # a user id; "none" for unassigned
    reporter: str | None = None
    labels: tuple[str, ...] = ()
    priorities: tuple[Priority, ...] = ()
    types: tuple[IssueType, ...] = ()
    query: str | None = None
    milestone: str | None = None  # a milestone's title; "none" for issues in none
    blocked: bool | None = None  # has a blocker that is open or in progress
    # ``blocked`` and ``has_children`` count blockers and sub-issues in this user's projects
    # only; None: an admin's, all.
    related_seen_by: str | None = None
    parent_id: int | None = None  # a sub-issue of this issue
    has_children: bool | None = None


def _tsquery(query: str) -> ColumnElement[Any]:
    # The configuration is an SQL constant, not a bound parameter, so that the planner sees
    # the same configuration as the stored document's. Websearch syntax accepts what people
    # type ("crash -android", quoted phrases).
    config: ColumnClause[Any] = literal_column(f"'{SEARCH_CONFIG}'::regconfig")
    return func.websearch_to_tsquery(config, query)


def _matches(query: str) -> ColumnElement[bool]:
    # issue.search_document is a stored generated column that only the PostgreSQL migration
    # creates (see models.Issue). Every statement here names the table "issue" without an
    # alias, so the qualified name resolves to the innermost FROM, subqueries included.
    document: ColumnClause[Any] = literal_column("issue.search_document")
    return document.op("@@")(_tsquery(query))


def search_condition(query: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return _matches(query)
    # SQLite: every word must appear in the title or the description (case-insensitive).
    # All of them: MAX_QUERY_LENGTH already bounds their number, and a word left out would
    # let through issues that lack it.
    conditions = []
    for word in dict.fromkeys(query.split()):
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(
            or_(
                col(Issue.title).ilike(pattern, escape="\\"),
                col(Issue.description).ilike(pattern, escape="\\"),
            )
        )
    return and_(*conditions) if conditions else literal(True)


def list_statement(project_id: int, filters: IssueFilters, dialect: str) -> SelectOfScalar[Issue]:
    """Issues of one project matching the filters, unordered and unpaged."""
    statement = select(Issue).where(Issue.project_id == project_id)
    if filters.statuses:
        statement = statement.where(col(Issue.status).in_(filters.statuses))
    if filters.assignee == "none":
        statement = statement.where(col(Issue.assignee_id).is_(None))
    elif filters.assignee is not None:
        statement = statement.where(Issue.assignee_id == filters.assignee)
    if filters.reporter is not None:
        statement = statement.where(Issue.reporter_id == filters.reporter)
    if filters.priorities:
        statement = statement.where(col(Issue.priority).in_(filters.priorities))
    if filters.types:
        statement = statement.where(col(Issue.type).in_(filters.types))
    if filters.milestone == NO_MILESTONE:
        statement = statement.where(col(Issue.milestone_id).is_(None))
    elif filters.milestone is not None:
        milestone = select(Milestone.id).where(
            Milestone.project_id == project_id, Milestone.title == filters.milestone
        )
        statement = statement.where(col(Issue.milestone_id) == milestone.scalar_subquery())
    for name in filters.labels:
        statement = statement.where(
            exists()
            .where(col(IssueLabel.issue_id) == Issue.id)
            .where(col(IssueLabel.label_id) == Label.id)
            .where(col(Label.project_id) == project_id, col(Label.name) == name)
        )
    if filters.query:
        statement = statement.where(search_condition(filters.query, dialect))
    return relation_filters(statement, filters, dialect)


@dataclass(frozen=True, slots=True)
class IssueQuery:
    """A project's issues that match the filters, in one sort order, for one SQL dialect."""

    project_id: int
    filters: IssueFilters
    sort: IssueSort
    dialect: str

    def matching(self) -> SelectOfScalar[Issue]:
        """Every match, unordered and unpaged (what ``count=true`` counts)."""
        return list_statement(self.project_id, self.filters, self.dialect)

    def page(self, after: list[Any] | None, rows: int) -> SelectOfScalar[Issue]:
        """``rows`` matches after the cursor's (sort value, id), in page order."""
        return page_statement(self, after, rows)


async def issue_page(
    session: AsyncSession, project_key: str, query: IssueQuery, keyset: Keyset, *, count: bool
) -> Page[IssuePublic]:
    """A page of the list: its issues with their people in one statement of Core rows, their
    labels in one more (and the matches counted in another when asked)."""
    total = None
    if count:
        matching = query.matching().subquery()
        total = (await session.exec(select(func.count()).select_from(matching))).one()
    paged = query.page(keyset.after(query.sort.value, query.sort.cursor_types), keyset.fetch)
    connection = await session.connection()
    rows = list(
        await connection.execute(
            paged.with_only_columns(*PUBLIC_ISSUE_COLUMNS).select_from(ISSUES_WITH_PEOPLE)
        )
    )
    return await keyset.page(
        rows,
        sort=query.sort.value,
        key=query.sort.cursor_values,
        build=lambda page: public_issues_page(session, project_key, page),
        total=total,
    )


def page_statement(query: IssueQuery, after: list[Any] | None, rows: int) -> SelectOfScalar[Issue]:
    sort, statement = query.sort, query.matching()
    column = sort.column
    after_cursor: ColumnElement[bool] | None = None
    if after is not None:
        value, issue_id = after
        sort_value = (
            literal(value, type_=UTCDateTime()) if sort.cursor_type is datetime else literal(value)
        )
        position = tuple_(column, col(Issue.id))
        start = tuple_(sort_value, literal(issue_id))
        after_cursor = position < start if sort.descending else position > start
        statement = statement.where(after_cursor)
    if query.filters.query and query.dialect == "postgresql":
        statement = statement.where(_bounded_search(query, after_cursor, rows))
    return statement.order_by(*_page_order(sort)).limit(rows)


def _page_order(sort: IssueSort) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    if sort.descending:
        return sort.column.desc(), col(Issue.id).desc()
    return sort.column.asc(), col(Issue.id).asc()


def _bounded_search(
    query: IssueQuery, after_cursor: ColumnElement[bool] | None, rows: int
) -> ColumnElement[bool]:
    """The ids a search page can hold, found by whichever of two plans is cheap for the term.

    A term matching many of the project's issues fills a page within its first few hundred
    issues in page order, which the sort index walks; a term matching few would make that
    walk read the whole project, and is cheap from the GIN index (project_id, document)
    instead, then sorted. The planner cannot tell the two apart (it assumes a term is spread
    evenly over projects, and a term common elsewhere may be absent here), so the statement
    decides at run time: it reads the first SEARCH_WINDOW issues in page order, and only when
    they hold less than a page, and are not the whole remaining list, does it also ask the
    GIN index for every match. Either way the outer statement then fetches at most the
    candidates by primary key, orders and pages them.
    """
    sort, filters = query.sort, query.filters
    unsearched = list_statement(query.project_id, replace(filters, query=None), "postgresql")
    if after_cursor is not None:
        unsearched = unsearched.where(after_cursor)
    hit = _matches(filters.query or "")
    window = (
        unsearched.with_only_columns(col(Issue.id).label("id"), hit.label("hit"))
        .order_by(*_page_order(sort))
        .limit(SEARCH_WINDOW)
        .cte("search_window")
    )
    # The window is computed as far as it is read: a page found in its first issues ends the
    # read there, and only a window short of a page is read to its end. The first hits read
    # are the first in page order: PostgreSQL reads a CTE back in the order it produced it
    # (an ORDER BY here would sort, and so read, the whole window first);
    # test_search_window pins that pages come out right.
    in_window = select(window.c.id).where(window.c.hit).limit(rows)
    found = select(func.count()).select_from(in_window.subquery()).scalar_subquery()
    window_size = select(func.count()).select_from(window).scalar_subquery()
    # Both are uncorrelated, so PostgreSQL evaluates them once, as a one-time filter on the
    # GIN branch, in this order (the window's size only when it held less than a page).
    matching = (
        unsearched.with_only_columns(col(Issue.id).label("id"), sort.column.label("sort_key"))
        .where(hit, found < rows, window_size == SEARCH_WINDOW)
        .correlate(None)
        # OFFSET 0 keeps this subquery planned on its own, as "all the matches" (the GIN
        # index); merged with the ORDER BY ... LIMIT below, the planner would walk the sort
        # index instead, the very plan that reads a whole project for a term absent from it.
        .offset(0)
        .subquery("search_matching")
    )
    beyond_window = (
        select(matching.c.id)
        .order_by(
            *(
                (matching.c.sort_key.desc(), matching.c.id.desc())
                if sort.descending
                else (matching.c.sort_key.asc(), matching.c.id.asc())
            )
        )
        .limit(rows)
    )
    candidates = union_all(in_window, beyond_window).subquery("search_candidates")
    # One array, computed once (the cast makes it an array expression, where "= ANY (SELECT
    # ...)" would be a semi-join), so the outer statement looks candidates up by primary key.
    ids = select(func.array_agg(candidates.c.id)).correlate(None).scalar_subquery()
    return col(Issue.id) == any_(cast(ids, ARRAY(Integer)))
