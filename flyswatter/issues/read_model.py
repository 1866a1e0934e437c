"""Public issues, read: the one place that builds ``IssuePublic``.

Issues are read through Core, not ORM entities: on the hot read paths the ORM's per-row
instance state and attribute-based validation cost several times the SQL itself (measured in
the benchmark's results). Rows of the read statements become response models without
validation (``_trusted``), and only here; writers, which hold entities, get theirs validated
(``build_public_issues``). tests/test_public_rows.py pins that both give the same document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar, cast

from sqlalchemy import FromClause, and_, bindparam, select
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.db import tables
from flyswatter.errors import NotFound
from flyswatter.http.conditional import etag_of
from flyswatter.issues.dependencies import IssueAccess, parse_issue_key
from flyswatter.issues.models import Issue, IssuePublic
from flyswatter.labels.models import IssueLabel, Label, LabelPublic
from flyswatter.moves.redirects import IssueMoved, successor_of
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.projects.service import project_not_found
from flyswatter.users.models import User, UserSummary
from flyswatter.users.service import SUMMARY_FIELDS, user_summaries

_ISSUE, _USER, _LABEL, _ISSUE_LABEL, _PROJECT, _MEMBER = tables(
    Issue, User, Label, IssueLabel, Project, ProjectMember
)
_REPORTER = _USER.alias("reporter")
_ASSIGNEE = _USER.alias("assignee")

# The public issue's fields that are the issue's own columns, derived from both models.
OWN_FIELDS = tuple(name for name in IssuePublic.model_fields if name in _ISSUE.c)
# Of those, the ones stored as their enum's value (a trusted model holds the enum itself).
_ENUM_FIELDS = tuple(
    (name, annotation)
    for name in OWN_FIELDS
    if isinstance(annotation := IssuePublic.model_fields[name].annotation, type)
    and issubclass(annotation, Enum)
)
_LABEL_FIELDS = tuple(LabelPublic.model_fields)
# Serialisers write a model's fields in the order of its ``__dict__``: keep the model's.
_PUBLIC_FIELDS = tuple(IssuePublic.model_fields)

# The columns sort orders page by that are no public field (cursors are built from them).
_SORT_KEYS = ("priority_rank", "milestone_due_rank")
# An issue's id and sort keys, its own fields, then its reporter's and assignee's summaries.
PUBLIC_ISSUE_COLUMNS: tuple[Any, ...] = (
    *(_ISSUE.c[name] for name in ("id", *_SORT_KEYS, *OWN_FIELDS)),
    *(_REPORTER.c[name].label(f"reporter_{name}") for name in SUMMARY_FIELDS),
    *(_ASSIGNEE.c[name].label(f"assignee_{name}") for name in SUMMARY_FIELDS),
)
_OWN_AT = 1 + len(_SORT_KEYS)
_REPORTER_AT = _OWN_AT + len(OWN_FIELDS)
_ASSIGNEE_AT = _REPORTER_AT + len(SUMMARY_FIELDS)


def with_people(issues: FromClause) -> FromClause:
    """``issues`` joined with the reporter and the (optional) assignee."""
    return issues.outerjoin(_REPORTER, _REPORTER.c.id == _ISSUE.c.reporter_id).outerjoin(
        _ASSIGNEE, _ASSIGNEE.c.id == _ISSUE.c.assignee_id
    )


# The hot statements are built once, with bind parameters: building a statement of this
# size (and its compiled-cache key) costs a few hundred microseconds, as much as running it.
ISSUES_WITH_PEOPLE = with_people(_ISSUE)
_LABELS_OF = (
    select(_ISSUE_LABEL.c.issue_id, *(_LABEL.c[name] for name in _LABEL_FIELDS))
    .join(_LABEL, _LABEL.c.id == _ISSUE_LABEL.c.label_id)
    .where(_ISSUE_LABEL.c.issue_id.in_(bindparam("ids", expanding=True)))
    .order_by(_LABEL.c.name)
)
# Project (by key), the caller's membership and the issue (by number) with its people; outer
# joins, so that a missing project, a hidden one and a missing issue can be told apart.
_READ_ISSUE = (
    select(_PROJECT.c.key.label("project_key"), _MEMBER.c.role, *PUBLIC_ISSUE_COLUMNS)
    .select_from(
        with_people(
            _PROJECT.outerjoin(
                _MEMBER,
                and_(
                    _MEMBER.c.project_id == _PROJECT.c.id,
                    _MEMBER.c.user_id == bindparam("subject"),
                ),
            ).outerjoin(
                _ISSUE,
                and_(_ISSUE.c.project_id == _PROJECT.c.id, _ISSUE.c.number == bindparam("number")),
            )
        )
    )
    .where(_PROJECT.c.key == bindparam("project_key"), _PROJECT.c.deleted_at.is_(None))
)

_validate_public_issue = IssuePublic.__pydantic_validator__.validate_python
_Model = TypeVar("_Model", bound=SQLModel)


def _trusted(cls: type[_Model], values: dict[str, Any]) -> _Model:
    """A response model from values already of its field types, without validating them.

    What ``model_construct`` does, minus its Python-level work: validating a SQLModel runs
    SQLModel's ``__init__`` for the model and for every nested one, which made up a third of
    a 50-issue page. Only for rows of our own tables, whose columns (types, NOT NULL, CHECK
    constraints) already guarantee the field types.
    """
    instance = cls.__new__(cls)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    return instance


def _document(
    own: dict[str, Any],
    project_key: str,
    reporter: UserSummary | None,
    assignee: UserSummary | None,
    labels: list[LabelPublic],
) -> dict[str, Any]:
    """An issue's public fields from its own, its project's key, its people and labels."""
    own.update(
        key=f"{project_key}-{own['number']}",
        project_key=project_key,
        reporter=reporter,
        assignee=assignee,
        labels=labels,
    )
    return {name: own[name] for name in _PUBLIC_FIELDS}


def _person(row: Any, at: int) -> UserSummary | None:
    # Positional, not by name: the columns are fixed above and a Row's mapping view is slow.
    if row[at] is None:
        return None
    values = row[at : at + len(SUMMARY_FIELDS)]
    return _trusted(UserSummary, dict(zip(SUMMARY_FIELDS, values, strict=True)))


def public_issue(row: Any, project_key: str, labels: dict[int, list[Any]]) -> IssuePublic:
    """The public shape of a row that ends with ``PUBLIC_ISSUE_COLUMNS``."""
    offset = len(row) - len(PUBLIC_ISSUE_COLUMNS)
    own = dict(zip(OWN_FIELDS, row[offset + _OWN_AT : offset + _REPORTER_AT], strict=True))
    for name, enum in _ENUM_FIELDS:
        own[name] = enum(own[name])
    reporter = _person(row, offset + _REPORTER_AT)
    assignee = _person(row, offset + _ASSIGNEE_AT)
    issue_labels = labels.get(row.id, [])
    return _trusted(IssuePublic, _document(own, project_key, reporter, assignee, issue_labels))


async def labels_of(session: AsyncSession, issue_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Each issue's labels, by name, in one statement whatever the number of issues."""
    if not issue_ids:
        return {}
    connection = await session.connection()
    rows = await connection.execute(_LABELS_OF, {"ids": list(issue_ids)})
    labels: dict[int, list[Any]] = {}
    for issue_id, *values in rows:
        labels.setdefault(issue_id, []).append(
            _trusted(LabelPublic, dict(zip(_LABEL_FIELDS, values, strict=True)))
        )
    return labels


async def public_issues_page(
    session: AsyncSession, project_key: str, rows: Sequence[Any]
) -> list[IssuePublic]:
    """Rows of ``PUBLIC_ISSUE_COLUMNS`` with their labels: one more statement for the page."""
    labels = await labels_of(session, [row.id for row in rows])
    return [public_issue(row, project_key, labels) for row in rows]


async def build_public_issues(
    session: AsyncSession, project: Project, issues: Sequence[Issue]
) -> list[IssuePublic]:
    """Public issues from entities a writer holds, people and labels in two statements.

    The issue's own fields come from the entity, not from a new read: after the commit
    another writer may already have moved the row on, and a response must show (and its ETag
    name) the version this request wrote.
    """
    if not issues:
        return []
    users = await user_summaries(
        session, [i.reporter_id for i in issues] + [i.assignee_id for i in issues]
    )
    labels = await labels_of(session, [issue.id or 0 for issue in issues])
    return [
        cast(
            IssuePublic,
            _validate_public_issue(
                _document(
                    # Attributes, not model_dump(): a writer may have set an enum field
                    # from its plain value, and validation normalises it either way.
                    {name: getattr(issue, name) for name in OWN_FIELDS},
                    project.key,
                    users[issue.reporter_id],
                    users.get(issue.assignee_id) if issue.assignee_id else None,
                    labels.get(issue.id or 0, []),
                )
            ),
        )
        for issue in issues
    ]


async def build_public_issue(session: AsyncSession, access: IssueAccess) -> IssuePublic:
    (public,) = await build_public_issues(session, access.project, [access.issue])
    return public


@dataclass(frozen=True, slots=True)
class IssueRead:
    """An issue as a reader sees it: its public row and ETag, found in one statement."""

    project_key: str
    row: Any

    @property
    def etag(self) -> str:
        return etag_of("issue", self.row.id, self.row.version)


async def read_issue(session: AsyncSession, principal: Principal, issue_key: str) -> IssueRead:
    """Project, membership, issue and people in one statement; 404 when it may not be seen.

    The same answers as ``load_issue_access``: a project that is missing or hidden is not
    found as a project, a missing number as an issue.
    """
    project_key, number = parse_issue_key(issue_key)
    connection = await session.connection()
    parameters = {"subject": principal.subject, "number": number, "project_key": project_key}
    row = (await connection.execute(_READ_ISSUE, parameters)).first()
    hidden = row is None or (row.role is None and not principal.is_admin)
    if row is None or hidden or row.id is None:
        # Not here: an old key of a moved issue answers with where it is now.
        if successor := await successor_of(session, principal, project_key, number):
            raise IssueMoved(issue_key, successor.key)
        if hidden:
            raise project_not_found(project_key)
        raise NotFound(f"issue {project_key}-{number} not found")
    return IssueRead(project_key=row.project_key, row=row)
