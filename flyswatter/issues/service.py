"""Issue logic: addressing by key, numbering, history, conditional requests, the public shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.dependencies import require_scopes
from flyswatter.auth.scopes import Scope
from flyswatter.auth.tokens import Principal
from flyswatter.db import MAX_ROW_ID, SessionDep
from flyswatter.errors import NotFound, PreconditionFailed, UnprocessableEntity
from flyswatter.issues.models import (
    Activity,
    ActivityAction,
    Issue,
    IssuePublic,
    UserSummary,
)
from flyswatter.labels.models import IssueLabel, Label, LabelPublic
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.projects.service import ProjectAccess, load_project_access
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
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (the ETag in If-None-Match still holds)"}
}
IfMatch = Annotated[
    str | None,
    Header(
        max_length=200,
        description="Apply only if the resource still has this ETag (else 412).",
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(max_length=200, description="Answer 304 if the resource still has this ETag."),
]


def parse_issue_key(issue_key: str) -> tuple[str, int]:
    if not _ISSUE_KEY.match(issue_key):
        raise NotFound(f"issue {issue_key} not found")
    project_key, _, number = issue_key.rpartition("-")
    if int(number) > MAX_ROW_ID:
        raise NotFound(f"issue {issue_key} not found")
    return project_key.upper(), int(number)


def etag_of(kind: str, row_id: int | None, version: int) -> str:
    return f'"{kind}-{row_id}-v{version}"'


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [part.strip() for part in header.split(",")]
    # Weak comparison, as RFC 9110 asks for If-None-Match; our tags are strong anyway.
    return "*" in candidates or etag in candidates or f"W/{etag}" in candidates


def check_if_match(if_match: str | None, etag: str) -> None:
    if if_match is not None and not _etag_matches(if_match, etag):
        raise PreconditionFailed(
            "the resource changed since you read it; fetch it again and retry",
            extra={"current_etag": etag},
        )


def not_modified(if_none_match: str | None, etag: str) -> bool:
    return if_none_match is not None and _etag_matches(if_none_match, etag)


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
            request_id=request.scope.get("state", {}).get("request_id"),
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


def user_summary(user: User) -> UserSummary:
    return UserSummary(
        id=user.id,
        username=user.username,
        name=user.name,
        is_service_account=user.is_service_account,
    )


async def users_by_id(session: AsyncSession, ids: Iterable[str | None]) -> dict[str, UserSummary]:
    wanted = {user_id for user_id in ids if user_id}
    if not wanted:
        return {}
    users = (await session.exec(select(User).where(col(User.id).in_(wanted)))).all()
    return {user.id: user_summary(user) for user in users}


async def build_public_issues(
    session: AsyncSession, project: Project, issues: Sequence[Issue]
) -> list[IssuePublic]:
    """Public issues with people and labels loaded in two batched queries, whatever the count."""
    if not issues:
        return []
    ids = [issue.id for issue in issues]
    users = await users_by_id(
        session, [i.reporter_id for i in issues] + [i.assignee_id for i in issues]
    )
    label_rows = await session.exec(
        select(IssueLabel.issue_id, Label)
        .join(Label, col(Label.id) == IssueLabel.label_id)
        .where(col(IssueLabel.issue_id).in_(ids))
        .order_by(col(Label.name))
    )
    labels: dict[int, list[LabelPublic]] = {}
    for issue_id, label in label_rows.all():
        labels.setdefault(issue_id, []).append(
            LabelPublic(name=label.name, color=label.color, description=label.description)
        )
    return [
        IssuePublic.model_validate(
            issue,
            update={
                "key": f"{project.key}-{issue.number}",
                "project_key": project.key,
                "reporter": users[issue.reporter_id],
                "assignee": users.get(issue.assignee_id) if issue.assignee_id else None,
                "labels": labels.get(issue.id or 0, []),
            },
        )
        for issue in issues
    ]


async def build_public_issue(session: AsyncSession, access: IssueAccess) -> IssuePublic:
    (public,) = await build_public_issues(session, access.project, [access.issue])
    return public
