"""``/api/v1/projects``: projects and their members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from flyswatter.auth.dependencies import AUTH_ERRORS, ProjectsRead, ProjectsWrite
from flyswatter.db import SessionDep, utcnow
from flyswatter.errors import Conflict, NotFound, problem_responses
from flyswatter.http.created import creates
from flyswatter.http.headers import api_path
from flyswatter.http.pagination import CountParam, KeysetDep, Page, lists
from flyswatter.issues.revisions import member_left
from flyswatter.projects.models import (
    MemberPublic,
    MemberUpsert,
    Project,
    ProjectCreate,
    ProjectMember,
    ProjectPublic,
    ProjectUpdate,
    Role,
)
from flyswatter.projects.service import (
    PROJECT_ERRORS,
    ProjectAccess,
    ProjectForReading,
    ProjectKeyPath,
    count_maintainers,
    load_project_access,
    managing,
    project_not_found,
)
from flyswatter.text import SingleLine
from flyswatter.users.models import User
from flyswatter.watchers.service import member_left_watching

router = APIRouter(prefix="/projects", tags=["projects"])

# Archiving or deleting the project locks its row, which issue writers hold shared until
# they commit: it waits for those in flight, and those that come after it see it.
ProjectForManaging = Annotated[ProjectAccess, Depends(managing("the project", lock="update"))]
UserIdPath = Annotated[
    SingleLine,
    Path(
        min_length=1,
        max_length=255,
        description="The user's id (Keycloak's `sub`, as `GET /api/v1/users/me` shows it) or "
        "username.",
        examples=["dev"],
    ),
]


async def _find_user(session: SessionDep, user_ref: str) -> User | None:
    """A known user by id, else by username (demo users and anyone who signed in once)."""
    user = await session.get(User, user_ref)
    if user is not None:
        return user
    named = (await session.exec(select(User).where(User.username == user_ref).limit(2))).all()
    return named[0] if len(named) == 1 else None


def to_public(project: Project, role: Role | None) -> ProjectPublic:
    return ProjectPublic.model_validate(project, update={"role": role})


def member_public(member: ProjectMember, user: User) -> MemberPublic:
    return MemberPublic.model_validate(
        user, update={"user_id": user.id, "role": member.role, "created_at": member.created_at}
    )


@router.get("", **lists(ProjectPublic, AUTH_ERRORS))
async def list_projects(
    session: SessionDep,
    principal: ProjectsRead,
    keyset: KeysetDep,
    count: CountParam = False,
    include_archived: Annotated[bool, Query(description="Also list archived projects.")] = False,
) -> Page[ProjectPublic]:
    """Projects the caller is a member of (all projects for admins), ordered by key."""
    statement = select(Project, ProjectMember.role)
    if principal.is_admin:
        statement = statement.outerjoin(
            ProjectMember,
            (col(ProjectMember.project_id) == Project.id)
            & (col(ProjectMember.user_id) == principal.subject),
        )
    else:
        statement = statement.join(
            ProjectMember, col(ProjectMember.project_id) == Project.id
        ).where(ProjectMember.user_id == principal.subject)
    statement = statement.where(col(Project.deleted_at).is_(None))
    if not include_archived:
        statement = statement.where(col(Project.archived).is_(False))
    total = None
    if count:
        total = (await session.exec(select(func.count()).select_from(statement.subquery()))).one()
    if (after := keyset.after("key", (str,))) is not None:
        statement = statement.where(Project.key > after[0])
    rows = (await session.exec(statement.order_by(Project.key).limit(keyset.fetch))).all()
    return await keyset.page(
        rows,
        sort="key",
        key=lambda row: [row[0].key],
        build=lambda page: [
            to_public(project, Role(role) if role else None) for project, role in page
        ],
        total=total,
    )


@router.post("", **creates(ProjectPublic, AUTH_ERRORS))
async def create_project(
    body: ProjectCreate, response: Response, session: SessionDep, principal: ProjectsWrite
) -> ProjectPublic:
    """Create a project; the caller becomes its maintainer."""
    project = Project.model_validate(body, update={"created_by": principal.subject})
    session.add(project)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"project key {body.key} is taken") from None
    assert project.id is not None
    session.add(
        ProjectMember(project_id=project.id, user_id=principal.subject, role=Role.maintainer)
    )
    response.headers["Location"] = api_path("projects", project.key)
    await session.commit()
    return to_public(project, Role.maintainer)


@router.get("/{key}", response_model=ProjectPublic, responses=problem_responses(404) | AUTH_ERRORS)
async def get_project(access: ProjectForReading) -> ProjectPublic:
    return to_public(access.project, access.membership_role)


@router.patch(
    "/{key}", response_model=ProjectPublic, responses=problem_responses(404) | AUTH_ERRORS
)
async def update_project(
    body: ProjectUpdate, session: SessionDep, access: ProjectForManaging
) -> ProjectPublic:
    """Change name, description or the archived flag (maintainers)."""
    changes = body.model_dump(exclude_unset=True)
    project = access.project
    if changes:
        project.sqlmodel_update(changes)
        project.updated_at = utcnow()
        session.add(project)
        await session.commit()
    return to_public(project, access.membership_role)


@router.delete(
    "/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404) | AUTH_ERRORS,
)
async def delete_project(session: SessionDep, access: ProjectForManaging) -> None:
    """Delete the project (maintainers): it and everything in it answer 404 from now on.

    Its rows are kept, and its key stays taken, so that an admin can restore it
    (``POST /projects/{key}/restore``). To keep a project readable but frozen, archive it
    instead: ``PATCH {"archived": true}``.
    """
    project = access.project
    project.deleted_at = project.updated_at = utcnow()
    session.add(project)
    await session.commit()


@router.post(
    "/{key}/restore",
    response_model=ProjectPublic,
    responses=problem_responses(404) | AUTH_ERRORS,
)
async def restore_project(
    key: ProjectKeyPath, session: SessionDep, principal: ProjectsWrite
) -> ProjectPublic:
    """Bring back a deleted project with everything in it (admins only)."""
    project = None
    if principal.is_admin:
        project = (
            await session.exec(
                select(Project)
                .where(Project.key == key.upper(), col(Project.deleted_at).is_not(None))
                .with_for_update()
            )
        ).first()
    if project is None:
        # Not told apart from a project that never was: only admins learn of deleted ones.
        raise project_not_found(key.upper())
    membership = await session.get(ProjectMember, (project.id, principal.subject))
    project.deleted_at = None
    project.updated_at = utcnow()
    session.add(project)
    await session.commit()
    return to_public(project, Role(membership.role) if membership else None)


@router.get("/{key}/members", **lists(MemberPublic, PROJECT_ERRORS))
async def list_members(
    session: SessionDep, access: ProjectForReading, keyset: KeysetDep
) -> Page[MemberPublic]:
    statement = (
        select(ProjectMember, User)
        .join(User, col(User.id) == ProjectMember.user_id)
        .where(ProjectMember.project_id == access.project_id)
    )
    if (after := keyset.after("user", (str,))) is not None:
        statement = statement.where(ProjectMember.user_id > after[0])
    rows = (
        await session.exec(statement.order_by(col(ProjectMember.user_id)).limit(keyset.fetch))
    ).all()
    return await keyset.page(
        rows,
        sort="user",
        key=lambda row: [row[0].user_id],
        build=lambda page: [member_public(member, user) for member, user in page],
    )


@router.get("/{key}/members/{user_id}", response_model=MemberPublic, responses=PROJECT_ERRORS)
async def get_member(
    user_id: UserIdPath, session: SessionDep, access: ProjectForReading
) -> MemberPublic:
    """One member of the project, by id or username: where an added member's ``Location``
    points."""
    user = await _find_user(session, user_id)
    if user is not None:
        member = await session.get(ProjectMember, (access.project_id, user.id))
        if member is not None:
            return member_public(member, user)
    raise NotFound(f"user {user_id} is not a member of {access.project.key}")


@router.put(
    "/{key}/members/{user_id}",
    response_model=MemberPublic,
    responses={201: {"model": MemberPublic, "description": "Member added"}}
    | problem_responses(404, 409)
    | AUTH_ERRORS,
)
async def put_member(
    user_id: UserIdPath,
    body: MemberUpsert,
    response: Response,
    session: SessionDep,
    principal: ProjectsWrite,
    key: ProjectKeyPath,
) -> MemberPublic:
    """Add a member or change a member's role (maintainers).

    The user is named by id or by username, and must be known to Flyswatter: signed in once,
    or seeded (the demo users of `flyswatter dev`).
    """
    access = await load_project_access(session, principal, key, lock="update")
    access.require(Role.maintainer, "managing members")
    user = await _find_user(session, user_id)
    if user is None:
        raise NotFound(f"no user {user_id} is known to Flyswatter (people appear once signed in)")
    user_id = user.id
    member = await session.get(ProjectMember, (access.project_id, user_id))
    if member is None:
        member = ProjectMember(project_id=access.project_id, user_id=user_id, role=body.role)
        response.status_code = status.HTTP_201_CREATED
        response.headers["Location"] = api_path("projects", access.project.key, "members", user_id)
    else:
        if member.role == Role.maintainer and body.role != Role.maintainer:
            await _keep_a_maintainer(session, access)
        member.role = body.role
    session.add(member)
    await session.commit()
    return member_public(member, user)


@router.delete(
    "/{key}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404, 409) | AUTH_ERRORS,
)
async def remove_member(
    user_id: UserIdPath, session: SessionDep, principal: ProjectsWrite, key: ProjectKeyPath
) -> None:
    """Remove a member (maintainers), or leave a project yourself."""
    access = await load_project_access(session, principal, key, lock="update")
    user = await _find_user(session, user_id)
    if user is not None:
        user_id = user.id
    if user_id != principal.subject:
        access.require(Role.maintainer, "managing members")
    member = await session.get(ProjectMember, (access.project_id, user_id))
    if member is None:
        raise NotFound(f"user {user_id} is not a member of {access.project.key}")
    if member.role == Role.maintainer:
        await _keep_a_maintainer(session, access)
    await session.delete(member)
    await member_left(session, principal, access.project_id, user_id)
    await member_left_watching(session, access.project_id, user_id)
    await session.commit()


async def _keep_a_maintainer(session: SessionDep, access: ProjectAccess) -> None:
    # The project row is locked (lock="update"), so two concurrent demotions cannot both pass.
    if await count_maintainers(session, access.project_id) <= 1:
        raise Conflict(f"{access.project.key} must keep at least one maintainer")
