"""The figures of a project report, computed in SQL: counts are aggregates, rows are streamed.

Everything here is synchronous (the worker's tasks are) and bounded whatever the project's
size: every section is a GROUP BY or a LIMIT, and the issue table is read in batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Integer, Select, case, cast, func, literal
from sqlalchemy.orm import aliased
from sqlmodel import col

from flyswatter.db import UTCDateTime
from flyswatter.issues.listing import IssueFilters, list_statement
from flyswatter.issues.models import Issue, IssueStatus
from flyswatter.jobs.models import ReportParameters
from flyswatter.projects.models import Project
from flyswatter.users.models import User

WEEK_SECONDS = 7 * 86_400
OLDEST_OPEN_LIMIT = 10
ASSIGNEE_LIMIT = 20
TABLE_BATCH = 500
OPEN_STATUSES = (IssueStatus.open, IssueStatus.in_progress)


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime

    @property
    def weeks(self) -> int:
        return max(1, -(-int((self.end - self.start).total_seconds()) // WEEK_SECONDS))


@dataclass(frozen=True, slots=True)
class IssueLine:
    key: str
    title: str
    status: str
    priority: str
    type: str
    assignee: str | None
    created_at: datetime


@dataclass(slots=True)
class ReportData:
    project_key: str
    project_name: str
    period: Period
    filters: dict[str, Any]
    generated_at: datetime
    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_priority: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    opened_per_week: list[int] = field(default_factory=list)
    closed_per_week: list[int] = field(default_factory=list)
    oldest_open: list[IssueLine] = field(default_factory=list)
    # (assignee, open, in progress); None is "unassigned".
    assignee_load: list[tuple[str | None, int, int]] = field(default_factory=list)
    table_limit: int = 0


def resolve_period(parameters: ReportParameters, now: datetime, default_days: int) -> Period:
    start, end = parameters.period(now, default_days)
    # In UTC before anything is printed or named by it: the report labels its times UTC, and
    # a bound asked with another offset (+09:00) would otherwise show its local wall time.
    return Period(start=start.astimezone(UTC), end=end.astimezone(UTC))


def issue_filters(parameters: ReportParameters, requested_by: str) -> IssueFilters:
    """The issue list's filters, with ``me`` meaning the person who asked for the report."""

    def me(value: str | None) -> str | None:
        return requested_by if value == "me" else value

    return IssueFilters(
        statuses=tuple(parameters.status),
        assignee=me(parameters.assignee),
        reporter=me(parameters.reporter),
        labels=tuple(dict.fromkeys(parameters.label)),
        priorities=tuple(parameters.priority),
        types=tuple(parameters.type),
        query=parameters.q.strip() or None if parameters.q else None,
    )


def _week_index(column: Any, start: datetime, dialect: str) -> Any:
    """Whole weeks between the period's start and ``column``, in SQL."""
    since = literal(start, type_=UTCDateTime())
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column - since) / WEEK_SECONDS), Integer)
    return cast((func.julianday(column) - func.julianday(since)) / 7, Integer)


def _per_week(connection: Connection, statement: Select[Any, Any], weeks: int) -> list[int]:
    """Counts per week of a statement whose rows all lie in the period. An index past the
    last week is the SQL arithmetic's rounding, not a row outside: SQLite's julianday() keeps
    milliseconds, so a row in the last half millisecond of a whole-week period comes out as
    week ``weeks``; it belongs to the last one (dropping it left the chart short of the
    total)."""
    counts = [0] * weeks
    for week, count in connection.execute(statement):
        if week is not None:
            counts[min(max(int(week), 0), weeks - 1)] += int(count)
    return counts


def _grouped(connection: Connection, statement: Select[Any, Any]) -> dict[str, int]:
    return {str(value): int(count) for value, count in connection.execute(statement)}


def collect_report(
    connection: Connection,
    project: Project,
    parameters: ReportParameters,
    requested_by: str,
    *,
    asked_at: datetime,
    now: datetime,
    default_days: int,
    table_limit: int,
) -> tuple[ReportData, Iterator[IssueLine]]:
    """The report's figures, and its issue table as a stream of at most ``table_limit`` rows.
    The period's defaults end when the report was asked for (``asked_at``): the request was
    checked against that time, and every attempt builds the same period."""
    assert project.id is not None
    dialect = connection.dialect.name
    period = resolve_period(parameters, asked_at, default_days)
    filters = issue_filters(parameters, requested_by)
    matching = list_statement(project.id, filters, dialect)
    created = col(Issue.created_at)
    in_period = matching.where(created >= period.start, created < period.end)

    data = ReportData(
        project_key=project.key,
        project_name=project.name,
        period=period,
        filters=parameters.model_dump(mode="json", exclude={"from_", "to"}, exclude_defaults=True),
        generated_at=now,
        table_limit=table_limit,
    )
    for attribute, column in (
        ("by_status", col(Issue.status)),
        ("by_priority", col(Issue.priority)),
        ("by_type", col(Issue.type)),
    ):
        counts = _grouped(
            connection, in_period.with_only_columns(column, func.count()).group_by(column)
        )
        setattr(data, attribute, counts)
    data.total = sum(data.by_status.values())

    opened_week = _week_index(created, period.start, dialect)
    data.opened_per_week = _per_week(
        connection,
        in_period.with_only_columns(opened_week, func.count()).group_by(opened_week),
        period.weeks,
    )
    closed = col(Issue.closed_at)
    closed_week = _week_index(closed, period.start, dialect)
    data.closed_per_week = _per_week(
        connection,
        matching.where(closed >= period.start, closed < period.end)
        .with_only_columns(closed_week, func.count())
        .group_by(closed_week),
        period.weeks,
    )

    # Open work is what is open now, whenever it was reported (up to the period's end).
    still_open = matching.where(col(Issue.status).in_(OPEN_STATUSES), created < period.end)
    assignee = aliased(User)
    assignee_name = col(assignee.username)
    assigned = col(assignee.id) == Issue.assignee_id
    line_columns = (
        col(Issue.number),
        col(Issue.title),
        col(Issue.status),
        col(Issue.priority),
        col(Issue.type),
        assignee_name,
        created,
    )
    data.oldest_open = [
        _line(project.key, row)
        for row in connection.execute(
            still_open.with_only_columns(*line_columns)
            .outerjoin(assignee, assigned)
            .order_by(created.asc(), col(Issue.id).asc())
            .limit(OLDEST_OPEN_LIMIT)
        )
    ]
    in_progress = func.sum(case((col(Issue.status) == IssueStatus.in_progress, 1), else_=0))
    load = (
        still_open.with_only_columns(assignee_name, func.count(), in_progress)
        .outerjoin(assignee, assigned)
        .group_by(assignee_name)
        .order_by(func.count().desc(), assignee_name)
        .limit(ASSIGNEE_LIMIT)
    )
    data.assignee_load = [
        (name, int(total) - int(working or 0), int(working or 0))
        for name, total, working in connection.execute(load)
    ]

    table = (
        in_period.with_only_columns(*line_columns)
        .outerjoin(assignee, assigned)
        .order_by(created.desc(), col(Issue.id).desc())
        .limit(table_limit)
        .execution_options(stream_results=True, yield_per=TABLE_BATCH)
    )

    def lines() -> Iterator[IssueLine]:
        for row in connection.execute(table):
            yield _line(project.key, row)

    return data, lines()


def _line(project_key: str, row: Any) -> IssueLine:
    number, title, status, priority, type_, assignee, created_at = row
    return IssueLine(
        key=f"{project_key}-{number}",
        title=title,
        status=str(status),
        priority=str(priority),
        type=str(type_),
        assignee=assignee,
        created_at=created_at,
    )
