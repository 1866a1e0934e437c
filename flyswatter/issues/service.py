"""Issue logic: addressing by key, numbering, history, conditional requests, the public shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, Path, Request
from sqlalchemy import FromClause, and_, bindparam, update
from sqlalchemy import select as sa_select
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.dependencies import require_scopes
from flyswatter.auth.scopes import Scope
from flyswatter.auth.tokens import Principal
from flyswatter.db import MAX_ROW_ID, SessionDep
from flyswatter.errors import NotFound, UnprocessableEntity
from flyswatter.http.conditional import etag_of
from flyswatter.http.context import request_context
from flyswatter.issues.models import (
    Activity,
    ActivityAction,
    Issue,
    IssuePublic,
    IssueStatus,
    IssueType,
    Priority,
    UserSummary,
)
from flyswatter.labels.models import IssueLabel, Label, LabelPublic
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.projects.service import ProjectAccess, load_project_access, project_not_found
from flyswatter.users.models import User

ISSUE_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9]{1,9}-[1-9][0-9]{0,9}$"
_ISSUE_KEY = re.compile(ISSUE_KEY_PATTERN)

IssueKeyPath = Annotated[
    str,
    Path(
        min_length=4,
        max_length=21,
        pattern=ISSUE_KEY_PATTERN,
        description="Project key and number, e.g. `FLY-42`.",
        examples=["FLY-42"],
    ),
]


def parse_issue_key(issue_key: str) -> tuple[str, int]:
    if not _ISSUE_KEY.match(issue_key):
        raise NotFound(f"issue {issue_key} not found")
    project_key, _, number = issue_key.rpartition("-")
    if int(number) > MAX_ROW_ID:
        raise NotFound(f"issue {issue_key} not found")
    return project_key.upper(), int(number)


@dataclass(slots=True)
class IssueAccess:
    """An issue the caller may see, its project, and the caller's standing there."""

    issue: Issue
    project_access: ProjectAccess

    @property
    def project(self) -> Project:
        return self.project_access.project

    @property
    def key(self) -> str:
        return f"{self.project.key}-{self.issue.number}"

    @property
    def etag(self) -> str:
        return etag_of("issue", self.issue.id, self.issue.version)


async def load_issue_access(
    session: AsyncSession, principal: Principal, issue_key: str, *, for_update: bool = False
) -> IssueAccess:
    """The issue and the caller's project standing; 404 when it may not be seen.

    Writers lock the issue row (``for_update``) so that concurrent changes apply one after
    the other and every one of them sees, and bumps, the latest version.
    """
    project_key, number = parse_issue_key(issue_key)
    access = await load_project_access(session, principal, project_key)
    statement = select(Issue).where(Issue.project_id == access.project_id, Issue.number == number)
    if for_update:
        statement = statement.with_for_update()
    issue = (await session.exec(statement)).first()
    if issue is None:
        raise NotFound(f"issue {project_key}-{number} not found")
    return IssueAccess(issue=issue, project_access=access)


def issue_reader() -> Any:
    async def dependency(
        issue_key: IssueKeyPath,
        session: SessionDep,
        principal: Principal = require_scopes(Scope.issues_read),
    ) -> IssueAccess:
        return await load_issue_access(session, principal, issue_key)

    return Depends(dependency)


def issue_writer() -> Any:
    async def dependency(
        issue_key: IssueKeyPath,
        session: SessionDep,
        principal: Principal = require_scopes(Scope.issues_write),
    ) -> IssueAccess:
        access = await load_issue_access(session, principal, issue_key, for_update=True)
        access.project_access.require_active()
        return access

    return Depends(dependency)


IssueForReading = Annotated[IssueAccess, issue_reader()]
IssueForWriting = Annotated[IssueAccess, issue_writer()]


async def allocate_issue_number(session: AsyncSession, project_id: int) -> int:
    """The next number in the project, race-free: the UPDATE locks the project row until
    the creating transaction ends, so concurrent creates queue instead of colliding."""
    result = await session.exec(
        update(Project)
        .where(col(Project.id) == project_id)
        .values(last_issue_number=Project.last_issue_number + 1)
        .returning(col(Project.last_issue_number))
    )
    return int(result.scalar_one())


def record_activity(
    session: AsyncSession,
    request: Request,
    principal: Principal,
    issue_id: int,
    action: ActivityAction,
    *,
    field: str | None = None,
    old: Any = None,
    new: Any = None,
) -> None:
    session.add(
        Activity(
            issue_id=issue_id,
            actor_id=principal.subject,
            client_id=principal.client_id if principal.is_service_account else None,
            action=action,
            field=field,
            old_value=None if old is None else json.dumps(old, default=str),
            new_value=None if new is None else json.dumps(new, default=str),
            request_id=request_context(request.scope).request_id,
        )
    )


async def require_member(session: AsyncSession, project_id: int, user_id: str) -> None:
    member = await session.get(ProjectMember, (project_id, user_id))
    if member is None:
        raise UnprocessableEntity(
            "the assignee must be a member of the project", loc=("body", "assignee_id")
        )


async def labels_by_name(
    session: AsyncSession, project_id: int, names: Sequence[str]
) -> list[Label]:
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found = (
        await session.exec(
            select(Label).where(Label.project_id == project_id, col(Label.name).in_(wanted))
        )
    ).all()
    missing = sorted(set(wanted) - {label.name for label in found})
    if missing:
        raise UnprocessableEntity(
            f"unknown label(s) in this project: {', '.join(missing)}", loc=("body", "labels")
        )
    by_name = {label.name: label for label in found}
    return [by_name[name] for name in wanted]


async def issue_label_names(session: AsyncSession, issue_id: int) -> list[str]:
    rows = await session.exec(
        select(Label.name)
        .join(IssueLabel, col(IssueLabel.label_id) == Label.id)
        .where(IssueLabel.issue_id == issue_id)
        .order_by(col(Label.name))
    )
    return list(rows.all())


# Public issues are read through Core, not ORM entities: on the hot read paths the ORM's
# per-row instance state and attribute-based validation cost several times the SQL itself
# (measured in tests/perf/RESULTS.md). Rows are validated into the public models directly.
_ISSUE = Issue.__table__  # type: ignore[attr-defined]
_USER = User.__table__  # type: ignore[attr-defined]
_LABEL = Label.__table__  # type: ignore[attr-defined]
_ISSUE_LABEL = IssueLabel.__table__  # type: ignore[attr-defined]
_PROJECT = Project.__table__  # type: ignore[attr-defined]
_MEMBER = ProjectMember.__table__  # type: ignore[attr-defined]
_REPORTER = _USER.alias("reporter")
_ASSIGNEE = _USER.alias("assignee")
_PERSON_FIELDS = ("id", "username", "name", "is_service_account")

# The issue's fields in its public shape, as stored.
_ISSUE_PUBLIC_FIELDS = (
    "number",
    "title",
    "description",
    "type",
    "priority",
    "status",
    "created_at",
    "updated_at",
    "closed_at",
    "version",
)

# An issue's own columns, then its reporter's and assignee's summaries, for one joined read.
PUBLIC_ISSUE_COLUMNS: tuple[Any, ...] = (
    *(_ISSUE.c[name] for name in ("id", "priority_rank", *_ISSUE_PUBLIC_FIELDS)),
    *(_REPORTER.c[name].label(f"reporter_{name}") for name in _PERSON_FIELDS),
    *(_ASSIGNEE.c[name].label(f"assignee_{name}") for name in _PERSON_FIELDS),
)


def with_people(issues: FromClause) -> FromClause:
    """``issues`` joined with the reporter and the (optional) assignee."""
    return issues.outerjoin(_REPORTER, _REPORTER.c.id == _ISSUE.c.reporter_id).outerjoin(
        _ASSIGNEE, _ASSIGNEE.c.id == _ISSUE.c.assignee_id
    )


# The hot statements are built once, with bind parameters: building a statement of this
# size (and its compiled-cache key) costs a few hundred microseconds, as much as running it.
ISSUES_WITH_PEOPLE = with_people(_ISSUE)
_LABELS_OF = (
    sa_select(_ISSUE_LABEL.c.issue_id, _LABEL.c.name, _LABEL.c.color, _LABEL.c.description)
    .join(_LABEL, _LABEL.c.id == _ISSUE_LABEL.c.label_id)
    .where(_ISSUE_LABEL.c.issue_id.in_(bindparam("ids", expanding=True)))
    .order_by(_LABEL.c.name)
)
_USERS_BY_ID = sa_select(*(_USER.c[name] for name in _PERSON_FIELDS)).where(
    _USER.c.id.in_(bindparam("ids", expanding=True))
)
# Project (by key), the caller's membership and the issue (by number) with its people; outer
# joins, so that a missing project, a hidden one and a missing issue can be told apart.
_READ_ISSUE = (
    sa_select(_PROJECT.c.key.label("project_key"), _MEMBER.c.role, *PUBLIC_ISSUE_COLUMNS)
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
    .where(_PROJECT.c.key == bindparam("project_key"))
)


_REPORTER_AT = len(PUBLIC_ISSUE_COLUMNS) - 2 * len(_PERSON_FIELDS)
_ASSIGNEE_AT = len(PUBLIC_ISSUE_COLUMNS) - len(_PERSON_FIELDS)
_validate_public_issue = IssuePublic.__pydantic_validator__.validate_python
_Model = TypeVar("_Model", bound=SQLModel)


def _trusted(cls: type[_Model], values: dict[str, Any]) -> _Model:
    """A response model from values already of its field types, without validating them.

    What ``model_construct`` does, minus its Python-level work: validating a SQLModel runs
    SQLModel's ``__init__`` for the model and for every nested one, which made up a third of
    a 50-issue page. Only for rows of our own tables, whose columns (types, NOT NULL, CHECK
    constraints) already guarantee the field types; tests/test_public_rows.py checks that
    what the hot paths build this way validates to the same document.
    """
    instance = cls.__new__(cls)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    return instance


def _person(row: Any, at: int) -> UserSummary | None:
    # Positional, not by name: the columns are fixed above and a Row's mapping view is slow.
    if row[at] is None:
        return None
    return _trusted(
        UserSummary,
        {
            "id": row[at],
            "username": row[at + 1],
            "name": row[at + 2],
            "is_service_account": bool(row[at + 3]),
        },
    )


def public_issue(row: Any, project_key: str, labels: dict[int, list[Any]]) -> IssuePublic:
    """The public shape of a row that ends with ``PUBLIC_ISSUE_COLUMNS``."""
    offset = len(row) - len(PUBLIC_ISSUE_COLUMNS)
    return _trusted(
        IssuePublic,
        {
            "title": row.title,
            "description": row.description,
            "type": IssueType(row.type),
            "priority": Priority(row.priority),
            "key": f"{project_key}-{row.number}",
            "number": row.number,
            "project_key": project_key,
            "status": IssueStatus(row.status),
            "reporter": _person(row, offset + _REPORTER_AT),
            "assignee": _person(row, offset + _ASSIGNEE_AT),
            "labels": labels.get(row.id, []),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "closed_at": row.closed_at,
            "version": row.version,
        },
    )


async def labels_of(session: AsyncSession, issue_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Each issue's labels, by name, in one statement whatever the number of issues."""
    if not issue_ids:
        return {}
    connection = await session.connection()
    rows = await connection.execute(_LABELS_OF, {"ids": list(issue_ids)})
    labels: dict[int, list[Any]] = {}
    for issue_id, name, color, description in rows:
        labels.setdefault(issue_id, []).append(
            _trusted(LabelPublic, {"name": name, "color": color, "description": description})
        )
    return labels


async def public_issues_page(
    session: AsyncSession, project_key: str, rows: Sequence[Any]
) -> list[IssuePublic]:
    """Rows of ``PUBLIC_ISSUE_COLUMNS`` with their labels: one more statement for the page."""
    labels = await labels_of(session, [row.id for row in rows])
    return [public_issue(row, project_key, labels) for row in rows]


async def users_by_id(session: AsyncSession, ids: Iterable[str | None]) -> dict[str, UserSummary]:
    wanted = {user_id for user_id in ids if user_id}
    if not wanted:
        return {}
    connection = await session.connection()
    rows = await connection.execute(_USERS_BY_ID, {"ids": sorted(wanted)})
    return {row.id: UserSummary.model_validate(dict(row._mapping)) for row in rows}


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
    ids = [issue.id or 0 for issue in issues]
    users = await users_by_id(
        session, [i.reporter_id for i in issues] + [i.assignee_id for i in issues]
    )
    labels = await labels_of(session, ids)
    return [
        cast(
            IssuePublic,
            _validate_public_issue(
                {
                    # Attributes, not model_dump(): a writer may have set an enum field
                    # from its plain value, and validation below normalises it either way.
                    **{name: getattr(issue, name) for name in _ISSUE_PUBLIC_FIELDS},
                    "key": f"{project.key}-{issue.number}",
                    "project_key": project.key,
                    "reporter": users[issue.reporter_id],
                    "assignee": users.get(issue.assignee_id) if issue.assignee_id else None,
                    "labels": labels.get(issue.id or 0, []),
                }
            ),
        )
        for issue in issues
    ]


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
    if row is None or (row.role is None and not principal.is_admin):
        raise project_not_found(project_key)
    if row.id is None:
        raise NotFound(f"issue {project_key}-{number} not found")
    return IssueRead(project_key=row.project_key, row=row)


async def build_public_issue(session: AsyncSession, access: IssueAccess) -> IssuePublic:
    (public,) = await build_public_issues(session, access.project, [access.issue])
    return public
