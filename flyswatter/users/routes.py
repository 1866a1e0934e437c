"""``/api/v1/users``: the caller as Flyswatter sees it, and the people it may name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, or_
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from flyswatter.auth.dependencies import AUTH_ERRORS, AnyPrincipal, ProjectsRead
from flyswatter.db import SessionDep
from flyswatter.errors import problem_responses
from flyswatter.http.pagination import KeysetDep, Page, lists
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.text import SingleLine
from flyswatter.users.models import User, UserMe, UserSummary

router = APIRouter(prefix="/users", tags=["users"])

UserQuery = Annotated[
    SingleLine | None,
    Query(
        min_length=1,
        max_length=255,
        description=(
            "Case-insensitive prefix of the username or the name, or a whole email address."
        ),
        examples=["ma"],
    ),
]


def _escaped_prefix(text: str) -> str:
    """``text`` as a LIKE prefix matching itself literally (``%`` and ``_`` included)."""
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@router.get("", **lists(UserSummary, AUTH_ERRORS))
async def list_users(
    session: SessionDep, principal: ProjectsRead, keyset: KeysetDep, q: UserQuery = None
) -> Page[UserSummary]:
    """People to assign or add as members: the caller, everyone who shares a (not deleted)
    project with the caller, and for admins every user Flyswatter knows (signed in once, or
    a demo user of ``flyswatter dev``). Ordered by username.

    ``q`` matches the start of the username or the name, or the whole email address, in any
    case. The email address is matched but not shown (nor are service accounts' client ids):
    a name is enough to address someone. To add a person who shares no project with you,
    name them by username in ``PUT /api/v1/projects/{key}/members/{user_id}``.
    """
    statement = select(User)
    if not principal.is_admin:
        mine, theirs = aliased(ProjectMember), aliased(ProjectMember)
        shared = (
            select(theirs.user_id)
            .join(mine, col(mine.project_id) == col(theirs.project_id))
            .join(Project, col(Project.id) == col(theirs.project_id))
            .where(col(mine.user_id) == principal.subject, col(Project.deleted_at).is_(None))
        )
        statement = statement.where(
            or_(col(User.id) == principal.subject, col(User.id).in_(shared))
        )
    if q is not None:
        prefix = _escaped_prefix(q)
        # The email address only ever matches whole: matching its start would let any caller
        # who shares a project with someone (and anyone may add anyone to a project of theirs)
        # read the hidden address one character at a time.
        statement = statement.where(
            or_(
                func.lower(col(User.username)).like(prefix, escape="\\"),
                func.lower(col(User.name)).like(prefix, escape="\\"),
                func.lower(col(User.email)) == q.lower(),
            )
        )
    if (after := keyset.after("username", (str, str))) is not None:
        username, user_id = after
        statement = statement.where(
            or_(
                col(User.username) > username,
                (col(User.username) == username) & (col(User.id) > user_id),
            )
        )
    ordered = statement.order_by(col(User.username), col(User.id)).limit(keyset.fetch)
    rows = (await session.exec(ordered)).all()
    return await keyset.page(
        rows,
        sort="username",
        key=lambda user: [user.username, user.id],
        build=lambda page: [UserSummary.model_validate(user) for user in page],
    )


@router.get("/me", response_model=UserMe, responses=problem_responses(401, 429))
async def read_me(session: SessionDep, principal: AnyPrincipal) -> UserMe:
    """The caller's mirrored identity and what its token grants."""
    user = await session.get(User, principal.subject)
    assert user is not None  # mirrored when its token was verified
    return UserMe.model_validate(
        user,
        update={
            "scopes": sorted(principal.scopes),
            "realm_roles": sorted(principal.realm_roles),
            "is_admin": principal.is_admin,
        },
    )
