"""Comment routes: discuss an issue; authors and maintainers edit and delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import JSONResponse
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.dependencies import IssuesRead, IssuesWrite
from flyswatter.auth.tokens import Principal
from flyswatter.comments.models import Comment, CommentCreate, CommentPublic, CommentUpdate
from flyswatter.db import MAX_ROW_ID, SessionDep, utcnow
from flyswatter.errors import Forbidden, NotFound, problem_responses
from flyswatter.http.conditional import (
    NOT_MODIFIED,
    IfMatch,
    IfNoneMatch,
    check_if_match,
    etag_of,
    not_modified,
)
from flyswatter.http.idempotency import IdempotencyDep
from flyswatter.http.pagination import KeysetDep, Page
from flyswatter.issues.models import ActivityAction, Issue
from flyswatter.issues.service import (
    IssueAccess,
    IssueForReading,
    IssueForWriting,
    load_issue_access,
    record_activity,
    users_by_id,
)
from flyswatter.observability.metrics import COMMENTS_CREATED
from flyswatter.projects.models import Project, Role

router = APIRouter(tags=["comments"])

AUTH_ERRORS = problem_responses(401, 403, 404, 422, 429)
# Ids are 32-bit columns; a larger one would fail in the driver instead of missing.
CommentIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Comment id.")]


@dataclass(slots=True)
class CommentAccess:
    comment: Comment
    issue_access: IssueAccess

    @property
    def etag(self) -> str:
        return etag_of("comment", self.comment.id, self.comment.version)


async def load_comment_access(
    session: AsyncSession, principal: Principal, comment_id: int, *, for_update: bool = False
) -> CommentAccess:
    """The comment, its issue and the caller's standing; 404 when it may not be seen."""
    row = (
        await session.exec(
            select(Project.key, Issue.number)
            .join(Issue, col(Issue.project_id) == Project.id)
            .join(Comment, col(Comment.issue_id) == Issue.id)
            .where(Comment.id == comment_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"comment {comment_id} not found")
    try:
        issue_access = await load_issue_access(session, principal, f"{row[0]}-{row[1]}")
    except NotFound:
        raise NotFound(f"comment {comment_id} not found") from None
    statement = select(Comment).where(Comment.id == comment_id)
    if for_update:
        statement = statement.with_for_update()
    comment = (await session.exec(statement)).one()
    return CommentAccess(comment=comment, issue_access=issue_access)


async def build_public_comments(
    session: AsyncSession, issue_key: str, comments: list[Comment]
) -> list[CommentPublic]:
    authors = await users_by_id(session, [comment.author_id for comment in comments])
    return [
        CommentPublic.model_validate(
            comment,
            update={
                "issue_key": issue_key,
                "author": authors[comment.author_id],
                "edited": comment.edited_at is not None,
            },
        )
        for comment in comments
    ]


def _may_moderate(access: CommentAccess, principal: Principal, action: str) -> None:
    project = access.issue_access.project_access
    if access.comment.author_id != principal.subject:
        if not project.role.includes(Role.maintainer):
            raise Forbidden(f"{action} someone else's comment needs the maintainer role")
    else:
        # Authorship grants nothing beyond one's role: an author since demoted to viewer
        # may no longer change what they wrote.
        project.require(Role.reporter, f"{action} comments")


@router.get(
    "/issues/{issue_key}/comments",
    response_model=Page[CommentPublic],
    responses=problem_responses(400) | AUTH_ERRORS,
)
async def list_comments(
    session: SessionDep, access: IssueForReading, keyset: KeysetDep
) -> Page[CommentPublic]:
    """The issue's comments, oldest first."""
    statement = select(Comment).where(Comment.issue_id == access.issue.id)
    if (after := keyset.after("id", (int,))) is not None:
        statement = statement.where(col(Comment.id) > after[0])
    rows = (await session.exec(statement.order_by(col(Comment.id)).limit(keyset.fetch))).all()
    return await keyset.page(
        rows,
        sort="id",
        key=lambda comment: [comment.id],
        build=lambda page: build_public_comments(session, access.key, page),
    )


@router.post(
    "/issues/{issue_key}/comments",
    status_code=status.HTTP_201_CREATED,
    response_model=CommentPublic,
    responses=problem_responses(409) | AUTH_ERRORS,
)
async def create_comment(
    body: CommentCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    access: IssueForWriting,
    idempotency: IdempotencyDep,
) -> CommentPublic | JSONResponse:
    """Comment on the issue (reporters and up)."""
    if (replayed := await idempotency.replay(session)) is not None:
        return replayed
    access.project_access.require(Role.reporter, "commenting")
    principal = access.project_access.principal
    assert access.issue.id is not None
    comment = Comment.model_validate(
        body, update={"issue_id": access.issue.id, "author_id": principal.subject}
    )
    session.add(comment)
    await session.flush()
    record_activity(
        session, request, principal, access.issue.id, ActivityAction.commented, new=comment.id
    )
    (public,) = await build_public_comments(session, access.key, [comment])
    location = f"/api/v1/comments/{comment.id}"
    etag = etag_of("comment", comment.id, comment.version)
    await idempotency.record(session, 201, public, location=location, etag=etag)
    if (replayed := await idempotency.commit(session)) is not None:
        return replayed
    COMMENTS_CREATED.inc()
    response.headers["Location"] = location
    response.headers["ETag"] = etag
    return public


@router.get(
    "/comments/{id}",
    response_model=CommentPublic,
    responses=NOT_MODIFIED | AUTH_ERRORS,
)
async def get_comment(
    id: CommentIdPath,
    response: Response,
    session: SessionDep,
    principal: IssuesRead,
    if_none_match: IfNoneMatch = None,
) -> CommentPublic | Response:
    access = await load_comment_access(session, principal, id)
    if (unchanged := not_modified(if_none_match, access.etag)) is not None:
        return unchanged
    response.headers["ETag"] = access.etag
    (public,) = await build_public_comments(session, access.issue_access.key, [access.comment])
    return public


@router.patch(
    "/comments/{id}",
    response_model=CommentPublic,
    responses=problem_responses(409, 412) | AUTH_ERRORS,
)
async def update_comment(
    id: CommentIdPath,
    body: CommentUpdate,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: IssuesWrite,
    if_match: IfMatch = None,
) -> CommentPublic:
    """Edit a comment (its author, or a maintainer); the comment then shows as edited."""
    access = await load_comment_access(session, principal, id, for_update=True)
    access.issue_access.project_access.require_active()
    _may_moderate(access, principal, "editing")
    check_if_match(if_match, access.etag)
    comment = access.comment
    if body.body != comment.body:
        assert comment.id is not None
        record_activity(
            session,
            request,
            principal,
            comment.issue_id,
            ActivityAction.comment_edited,
            field="body",
            old=comment.id,
            new=comment.id,
        )
        comment.body = body.body
        comment.edited_at = comment.updated_at = utcnow()
        comment.version += 1
        session.add(comment)
        await session.commit()
    response.headers["ETag"] = access.etag
    (public,) = await build_public_comments(session, access.issue_access.key, [comment])
    return public


@router.delete(
    "/comments/{id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(409, 412) | AUTH_ERRORS,
)
async def delete_comment(
    id: CommentIdPath,
    request: Request,
    session: SessionDep,
    principal: IssuesWrite,
    if_match: IfMatch = None,
) -> None:
    """Delete a comment (its author, or a maintainer)."""
    access = await load_comment_access(session, principal, id, for_update=True)
    access.issue_access.project_access.require_active()
    _may_moderate(access, principal, "deleting")
    check_if_match(if_match, access.etag)
    record_activity(
        session,
        request,
        principal,
        access.comment.issue_id,
        ActivityAction.comment_deleted,
        old=access.comment.id,
    )
    await session.delete(access.comment)
    await session.commit()
