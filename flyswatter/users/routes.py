"""``/api/v1/users``: the caller as Flyswatter sees it."""

from __future__ import annotations

from fastapi import APIRouter

from flyswatter.auth.dependencies import AnyPrincipal
from flyswatter.db import SessionDep
from flyswatter.errors import problem_responses
from flyswatter.users.models import User, UserMe

router = APIRouter(prefix="/users", tags=["users"])


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
