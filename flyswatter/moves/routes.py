"""Moving an issue to another project."""

from __future__ import annotations

from fastapi import APIRouter

from flyswatter.errors import problem_responses
from flyswatter.issues.dependencies import IssueWriteDep
from flyswatter.issues.models import IssuePublic
from flyswatter.moves import service
from flyswatter.moves.models import MoveRequest
from flyswatter.projects.service import PROJECT_ERRORS

router = APIRouter(tags=["issues"])


@router.post(
    "/issues/{issue_key}/move",
    response_model=IssuePublic,
    responses=problem_responses(409, 412, 422) | PROJECT_ERRORS,
)
async def move_issue(body: MoveRequest, write: IssueWriteDep) -> IssuePublic:
    """Move the issue to another project (developers of both): it gets the next number
    there; its old key keeps answering (`301` for reads; writes are applied, with
    `Deprecation` and `Link: <new>; rel="successor-version"`). Labels are kept by name
    (dropped where the project has none of that name); history, comments and relations stay."""
    return write.answer(await service.move_issue(write, body))
