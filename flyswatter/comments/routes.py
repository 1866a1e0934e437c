"""Comment routes: discuss an issue; authors and maintainers edit and delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from fastapi.responses import JSONResponse

from flyswatter.auth.dependencies import IssuesRead, IssuesWrite
from flyswatter.comments import revisions, service
from flyswatter.comments.models import (
    CommentCreate,
    CommentPublic,
    CommentRevisionPublic,
    CommentUpdate,
)
from flyswatter.db import MAX_ROW_ID, SessionDep
from flyswatter.errors import problem_responses
from flyswatter.http.conditional import (
    CONDITIONAL_READ_RESPONSES,
    ConditionalReadDep,
    ConditionalWriteDep,
)
from flyswatter.http.created import creates
from flyswatter.http.idempotency import IdempotencyDep
from flyswatter.http.pagination import KeysetDep, Page, lists
from flyswatter.issues.dependencies import IssueForReading, IssueForWriting, IssueKeysetDep
from flyswatter.moves.redirects import MOVED
from flyswatter.observability.metrics import COMMENTS_CREATED
from flyswatter.projects.service import PROJECT_ERRORS

router = APIRouter(tags=["comments"])

# Ids are 32-bit columns; a larger one would fail in the driver instead of missing.
CommentIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Comment id.", examples=[1])]
VersionPath = Annotated[
    int, Path(ge=1, le=MAX_ROW_ID, description="The comment's version.", examples=[1])
]
WRITE_ERRORS = problem_responses(409, 412) | PROJECT_ERRORS


@router.get("/issues/{issue_key}/comments", **lists(CommentPublic, PROJECT_ERRORS | MOVED))
async def list_comments(
    session: SessionDep, access: IssueForReading, keyset: IssueKeysetDep
) -> Page[CommentPublic]:
    """The issue's comments, oldest first."""
    return await service.comment_page(session, access, keyset)


@router.post(
    "/issues/{issue_key}/comments",
    **creates(CommentPublic, problem_responses(410) | PROJECT_ERRORS),
)
async def create_comment(
    body: CommentCreate, session: SessionDep, access: IssueForWriting, idempotency: IdempotencyDep
) -> CommentPublic | JSONResponse:
    """Comment on the issue (reporters and up). A retry with the same `Idempotency-Key`
    replays the first answer (the comment as it is now, once a text was removed from its
    history), or is a 410 once the comment was deleted."""
    return await idempotency.create(
        lambda: service.create_comment(session, access, body), on_created=COMMENTS_CREATED.inc
    )


@router.get(
    "/comments/{id}",
    response_model=CommentPublic,
    responses=CONDITIONAL_READ_RESPONSES | PROJECT_ERRORS,
)
async def get_comment(
    id: CommentIdPath, session: SessionDep, principal: IssuesRead, conditional: ConditionalReadDep
) -> CommentPublic | Response:
    access = await service.load_comment_access(session, principal, id)
    unchanged = conditional.answer(service.comment_etag(access.comment))
    return unchanged or await service.public_comment(session, access)


@router.patch("/comments/{id}", response_model=CommentPublic, responses=WRITE_ERRORS)
async def update_comment(
    id: CommentIdPath,
    body: CommentUpdate,
    session: SessionDep,
    principal: IssuesWrite,
    conditional: ConditionalWriteDep,
) -> CommentPublic:
    """Edit a comment (its author, or a maintainer); the comment then shows as edited."""
    access = await service.edit_comment(session, principal, id, body, conditional)
    conditional.tag(service.comment_etag(access.comment))
    return await service.public_comment(session, access)


@router.delete("/comments/{id}", status_code=status.HTTP_204_NO_CONTENT, responses=WRITE_ERRORS)
async def delete_comment(
    id: CommentIdPath,
    session: SessionDep,
    principal: IssuesWrite,
    conditional: ConditionalWriteDep,
) -> None:
    """Delete a comment (its author, or a maintainer)."""
    await service.delete_comment(session, principal, id, conditional)


@router.get("/comments/{id}/revisions", **lists(CommentRevisionPublic, PROJECT_ERRORS))
async def list_comment_revisions(
    id: CommentIdPath, session: SessionDep, principal: IssuesRead, keyset: KeysetDep
) -> Page[CommentRevisionPublic]:
    """The comment's history: each text an edit replaced, oldest first, with who wrote it
    and when (the text it has now is the comment's own)."""
    access = await service.load_comment_access(session, principal, id)
    return await revisions.revision_page(session, access, keyset.within(f"comment:{id}"))


@router.delete(
    "/comments/{id}/revisions/{version}",
    response_model=CommentRevisionPublic,
    responses=problem_responses(409) | PROJECT_ERRORS,
)
async def remove_comment_revision(
    id: CommentIdPath, version: VersionPath, session: SessionDep, principal: IssuesWrite
) -> CommentRevisionPublic:
    """Remove a replaced text from the comment's history (who may edit the comment may):
    for a secret or personal data edited out, which the history would keep showing. The
    revision stays, its text `null`, saying who removed it and when; the stored events
    that carried the text lose it too."""
    return await revisions.remove_revision_text(session, principal, id, version)
