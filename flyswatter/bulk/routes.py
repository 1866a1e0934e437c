"""The bulk change route: one change to up to a hundred issues of a project."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from flyswatter.auth.scopes import Scope
from flyswatter.bulk import service
from flyswatter.bulk.models import BulkResult, BulkUpdate
from flyswatter.db import SessionDep
from flyswatter.errors import problem_responses
from flyswatter.projects.models import Role
from flyswatter.projects.service import PROJECT_ERRORS, ProjectAccess, project_access

router = APIRouter(tags=["issues"])

# Reporters may change their own issues' milestone; each issue is checked on its own.
# Holding the project row (shared), as every issue writer does: see ``load_project_access``.
ProjectForChanging = Annotated[
    ProjectAccess,
    Depends(project_access(Role.reporter, Scope.issues_write, "changing issues", lock="share")),
]
MULTI_STATUS = {
    status.HTTP_207_MULTI_STATUS: {
        "model": BulkResult,
        "description": "With `partial=true`: what became of each issue",
    }
}


@router.patch(
    "/projects/{key}/issues",
    response_model=BulkResult,
    responses=MULTI_STATUS | problem_responses(409) | PROJECT_ERRORS,
)
async def change_issues(
    body: BulkUpdate,
    response: Response,
    session: SessionDep,
    access: ProjectForChanging,
    partial: Annotated[
        bool,
        Query(description="Apply to the issues that may take the change (207), not to none."),
    ] = False,
) -> BulkResult:
    """One change to up to 100 issues: each checked as its single change would be (role,
    workflow). By default all or nothing: if any issue may not take it, nothing changes and
    the problem's `items` say why for each. With `partial=true`, a 207 tells each issue's
    outcome and the ones that may take the change are changed."""
    result = await service.bulk_update(session, access, body, partial=partial)
    if partial:
        response.status_code = status.HTTP_207_MULTI_STATUS
    return result
