"""The issue list: filters, full-text search, sort orders and keyset pages.

Every sort is a pair (sort column, id), so a page continues strictly after the cursor's
pair with an index range scan; page 10,000 costs what page 1 costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    and_,
    exists,
    func,
    literal,
    literal_column,
    or_,
    tuple_,
)
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from flyswatter.db import UTCDateTime
from flyswatter.errors import BadRequest
from flyswatter.issues.models import Issue, IssueStatus, IssueType, Priority
from flyswatter.labels.models import IssueLabel, Label
from flyswatter.pagination import decode_cursor, encode_cursor

SEARCH_CONFIG = "english"
MAX_QUERY_LENGTH = 200


class IssueSort(StrEnum):
    updated_desc = "-updated_at"
    updated_asc = "updated_at"
    created_desc = "-created_at"
    created_asc = "created_at"
    priority_desc = "-priority"
    priority_asc = "priority"

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")

    @property
    def column(self) -> Any:
        name = self.value.lstrip("-")
        return {
            "updated_at": col(Issue.updated_at),
            "created_at": col(Issue.created_at),
            "priority": col(Issue.priority_rank),
        }[name]

    @property
    def cursor_type(self) -> type:
        return int if self.value.endswith("priority") else str


@dataclass(frozen=True, slots=True)
class IssueFilters:
    statuses: tuple[IssueStatus, ...] = ()
    assignee: str | None = None  # a user id; "none" for unassigned
    reporter: str | None = None
    labels: tuple[str, ...] = ()
    priorities: tuple[Priority, ...] = ()
    types: tuple[IssueType, ...] = ()
    query: str | None = None


def search_condition(query: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        # The document must be spelt exactly as ix_issue_search's expression for the GIN
        # index to serve it. The configuration is an SQL constant, not a bound parameter:
        # a parameter cast to regconfig is a run-time conversion the planner cannot match
        # against the index, and every search would then read the whole project.
        config: ColumnClause[Any] = literal_column(f"'{SEARCH_CONFIG}'::regconfig")
        document = func.to_tsvector(
            config,
            col(Issue.title).op("||")(literal_column("' '")).op("||")(col(Issue.description)),
        )
        # Websearch syntax accepts what people type ("crash -android", quoted phrases).
        return document.op("@@")(func.websearch_to_tsquery(config, query))
    # SQLite: every word must appear in the title or the description (case-insensitive).
    conditions = []
    for word in query.split()[:10]:
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(
            or_(
                col(Issue.title).ilike(pattern, escape="\\"),
                col(Issue.description).ilike(pattern, escape="\\"),
            )
        )
    return and_(*conditions) if conditions else literal(True)


def list_statement(
    project_id: int,
    filters: IssueFilters,
    sort: IssueSort,
    dialect: str,
) -> SelectOfScalar[Issue]:
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
    for name in filters.labels:
        statement = statement.where(
            exists()
            .where(col(IssueLabel.issue_id) == Issue.id)
            .where(col(IssueLabel.label_id) == Label.id)
            .where(col(Label.project_id) == project_id, col(Label.name) == name)
        )
    if filters.query:
        statement = statement.where(search_condition(filters.query, dialect))
    return statement


def page_statement(
    statement: SelectOfScalar[Issue], sort: IssueSort, cursor: str | None, limit: int
) -> SelectOfScalar[Issue]:
    """One page: after the cursor's (sort value, id), ordered, with one row of look-ahead."""
    column = sort.column
    if cursor is not None:
        value, issue_id = decode_cursor(cursor, sort.value, (sort.cursor_type, int))
        sort_value = (
            literal(_parse_timestamp(value), type_=UTCDateTime())
            if sort.cursor_type is str
            else literal(value)
        )
        position = tuple_(column, col(Issue.id))
        after = tuple_(sort_value, literal(issue_id))
        statement = statement.where(position < after if sort.descending else position > after)
    if sort.descending:
        statement = statement.order_by(column.desc(), col(Issue.id).desc())
    else:
        statement = statement.order_by(column.asc(), col(Issue.id).asc())
    return statement.limit(limit + 1)


def next_cursor(issues: list[Issue], sort: IssueSort) -> str:
    last = issues[-1]
    value: Any
    if sort.cursor_type is int:
        value = last.priority_rank
    else:
        value = getattr(last, sort.value.lstrip("-")).isoformat()
    return encode_cursor(sort.value, [value, last.id])


def _parse_timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest("invalid cursor") from None
    if parsed.tzinfo is None:
        raise BadRequest("invalid cursor")
    return parsed
