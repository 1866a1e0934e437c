"""Who may do what in a project: membership lookups and the project-or-404 dependency."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Path
from sqlalchemy import ColumnElement, and_, bindparam
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.dependencies import AUTH_ERRORS, require_scopes
from flyswatter.auth.scopes import Scope
from flyswatter.auth.tokens import Principal
from flyswatter.db import SessionDep, first_or_not_found, table
from flyswatter.errors import Conflict, Forbidden, NotFound, problem_responses
from flyswatter.projects.models import Project, ProjectMember, Role

ProjectKeyPath = Annotated[
    str,
    Path(
        min_length=2,
        max_length=10,
        pattern=r"^[A-Za-z][A-Za-z0-9]{1,9}$",
        description="Project key, e.g. `FLY` (case-insensitive).",
        # Examples name `flyswatter dev`'s demo data, so Swagger UI's requests succeed there.
        examples=["DEMO"],
    ),
]

# What a route inside a project can answer: a project the caller may not see is not found.
PROJECT_ERRORS = AUTH_ERRORS | problem_responses(404)


@dataclass(frozen=True, slots=True)
class ProjectAccess:
    """A project the caller may see, and the caller's standing in it."""

    project: Project
    membership_role: Role | None
    principal: Principal

    @property
    def role(self) -> Role:
        """Effective role: admins act as maintainers everywhere."""
        if self.principal.is_admin:
            return Role.maintainer
        assert self.membership_role is not None
        return self.membership_role

    @property
    def project_id(self) -> int:
        assert self.project.id is not None
        return self.project.id

    def require(self, role: Role, action: str) -> None:
        if not self.role.includes(role):
            raise Forbidden(f"{action} needs the {role.value} role in {self.project.key}")

    def require_active(self) -> None:
        if self.project.archived:
            raise Conflict(f"project {self.project.key} is archived; unarchive it first")


_Row = TypeVar("_Row", bound=SQLModel)


def caller_membership(principal: Principal, project_id: Any) -> ColumnElement[bool]:
    """The join to the caller's membership of the project ``project_id`` names: outer-joined,
    its role is null where the caller is no member (what only an admin may still see)."""
    member = table(ProjectMember)
    return and_(member.c.project_id == project_id, member.c.user_id == principal.subject)


async def load_project_row(
    session: AsyncSession,
    access: ProjectAccess,
    model: type[_Row],
    row_id: int,
    *,
    noun: str,
    for_update: bool = False,
) -> _Row:
    """A row of the project's (a webhook, a milestone) by id; 404 when it is another's."""
    table: Any = model
    statement = select(model).where(table.project_id == access.project_id, table.id == row_id)
    missing = f"{noun} {row_id} not found in {access.project.key}"
    return await first_or_not_found(session, statement, missing, for_update=for_update)


def project_not_found(key: str) -> NotFound:
    # The same answer whether the project is missing or hidden, so keys cannot be probed.
    return NotFound(f"project {key} not found")


# Built once with bind parameters: every project-scoped request runs it, and building it
# anew each time cost about as much as executing it.
_PROJECT_ACCESS = (
    select(Project, ProjectMember.role)
    .outerjoin(
        ProjectMember,
        and_(
            col(ProjectMember.project_id) == Project.id,
            col(ProjectMember.user_id) == bindparam("subject"),
        ),
    )
    # A deleted project is not found, by every route, whoever asks.
    .where(Project.key == bindparam("key"), col(Project.deleted_at).is_(None))
)
_LIVE_PROJECT = select(Project.id).where(
    Project.key == bindparam("key"), col(Project.deleted_at).is_(None)
)
# How a transaction holds the project row while it acts on the caller's standing there:
# "share" (FOR KEY SHARE) for the writers of its issues, who do not wait for each other, nor
# for issue creation's UPDATE of the row; "update" (FOR UPDATE) for membership changes, which
# wait for every writer in flight and hold off every writer after them.
ProjectLock = Literal["share", "update"]
_LOCK_PROJECT = {
    "share": _LIVE_PROJECT.with_for_update(read=True, key_share=True),
    "update": _LIVE_PROJECT.with_for_update(),
}


async def load_project_access(
    session: AsyncSession, principal: Principal, key: str, *, lock: ProjectLock | None = None
) -> ProjectAccess:
    """The project with the caller's membership; 404 when it may not be seen.

    With ``lock``, the row is locked first and the membership read after: a statement that
    waits for a lock still reads from the snapshot it began with, so a removal it waited for
    would not show in it; the next statement sees it (READ COMMITTED), and its project
    replaces what the session held of it.
    """
    parameters = {"subject": principal.subject, "key": key.upper()}
    options = {}
    if lock is not None:
        await session.exec(_LOCK_PROJECT[lock], params=parameters)
        # The row as it is once locked, even if the session had loaded it before.
        options = {"populate_existing": True}
    row = (
        await session.exec(_PROJECT_ACCESS, params=parameters, execution_options=options)
    ).first()
    if row is None:
        raise project_not_found(key.upper())
    project, role = row
    if role is None and not principal.is_admin:
        raise project_not_found(key.upper())
    return ProjectAccess(
        project=project, membership_role=Role(role) if role else None, principal=principal
    )


def project_access(
    min_role: Role, scope: Scope, action: str, *, lock: ProjectLock | None = None
) -> Callable[..., Awaitable[ProjectAccess]]:
    """Dependency: the ``{key}`` project, requiring ``scope`` of the client and ``min_role``
    of the person; ``lock`` as for ``load_project_access``."""

    async def dependency(
        key: ProjectKeyPath,
        session: SessionDep,
        # A default rather than Annotated: the scope is a closure variable, which string
        # annotations (PEP 563) could not resolve.
        principal: Principal = require_scopes(scope),
    ) -> ProjectAccess:
        access = await load_project_access(session, principal, key, lock=lock)
        access.require(min_role, action)
        return access

    return dependency


def managing(
    what: str, *, lock: ProjectLock | None = None
) -> Callable[..., Awaitable[ProjectAccess]]:
    """Dependency: the ``{key}`` project for managing ``what`` (the project itself, its labels,
    milestones, webhooks): maintainers, through a client allowed ``projects:write``; ``lock``
    as for ``load_project_access``."""
    return project_access(Role.maintainer, Scope.projects_write, f"managing {what}", lock=lock)


async def count_maintainers(session: AsyncSession, project_id: int) -> int:
    rows = await session.exec(
        select(ProjectMember.user_id).where(
            ProjectMember.project_id == project_id, ProjectMember.role == Role.maintainer
        )
    )
    return len(rows.all())


# Any member reads; a role below viewer does not exist, so only non-members are refused (404).
ProjectForReading = Annotated[
    ProjectAccess, Depends(project_access(Role.viewer, Scope.projects_read, "reading the project"))
]
