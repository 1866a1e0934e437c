"""Comment logic: finding a comment the caller may see, and writing comments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.comments.models import (
    Comment,
    CommentCreate,
    CommentPublic,
    CommentRevision,
    CommentUpdate,
)
from flyswatter.db import first_or_not_found, utcnow
from flyswatter.errors import Forbidden, NotFound
from flyswatter.events.redaction import forget_comment_text
from flyswatter.http.conditional import ConditionalWrite, etag_of
from flyswatter.http.created import Created
from flyswatter.http.headers import api_path
from flyswatter.http.idempotency import restate_created
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues.activity import record_activity
from flyswatter.issues.dependencies import IssueAccess, load_issue_access
from flyswatter.issues.models import ActivityAction, Issue
from flyswatter.projects.models import Project, Role
from flyswatter.users.service import user_summaries
from flyswatter.watchers.service import auto_follow


def _record(
    session: AsyncSession,
    principal: Principal,
    issue_id: int,
    action: ActivityAction,
    **change: int | None,
) -> None:
    """An entry of the issue's history about one comment, named by its id."""
    record_activity(session, principal, issue_id, action, field="comment_id", **change)


async def build_public_comments(
    session: AsyncSession, issue_key: str, comments: Sequence[Comment]
) -> list[CommentPublic]:
    authors = await user_summaries(session, [comment.author_id for comment in comments])
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


def comment_etag(comment: Comment) -> str:
    return etag_of("comment", comment.id, comment.version)


@dataclass(slots=True)
class CommentAccess:
    """A comment the caller may see, with its issue and the caller's standing there."""

    comment: Comment
    issue_access: IssueAccess


async def load_comment_access(
    session: AsyncSession, principal: Principal, comment_id: int, *, for_update: bool = False
) -> CommentAccess:
    """The comment, its issue and the caller's standing; 404 when it may not be seen."""
    row = (
        await session.exec(
            select(Project.key, Issue.number)
            .join(Issue, col(Issue.project_id) == Project.id)
            .join(Comment, col(Comment.issue_id) == Issue.id)
            .where(Comment.id == comment_id, col(Project.deleted_at).is_(None))
        )
    ).first()
    if row is None:
        raise NotFound(f"comment {comment_id} not found")
    try:
        # The key just read is the issue's old one if it moved since: a comment is addressed
        # by its id, so follow the move rather than answer the key's 301. Writers hold the
        # project and the issue as every issue writer does, so that an edit racing its
        # author's removal from the project waits for it and is refused.
        issue_access = await load_issue_access(
            session, principal, f"{row[0]}-{row[1]}", follow_moves=True, for_update=for_update
        )
    except NotFound:
        raise NotFound(f"comment {comment_id} not found") from None
    # Read again, and only now locked: a writer of the same comment that came first (a
    # deletion) held the issue until it committed, and a reader's statements each see what
    # was committed before them. The comment may have gone since the first read: not found.
    statement = select(Comment).where(Comment.id == comment_id)
    missing = f"comment {comment_id} not found"
    comment = await first_or_not_found(session, statement, missing, for_update=for_update)
    return CommentAccess(comment=comment, issue_access=issue_access)


async def public_comment(session: AsyncSession, access: CommentAccess) -> CommentPublic:
    (public,) = await build_public_comments(session, access.issue_access.key, [access.comment])
    return public


async def comment_page(
    session: AsyncSession, access: IssueAccess, keyset: Keyset
) -> Page[CommentPublic]:
    """The issue's comments, oldest first."""
    statement = select(Comment).where(Comment.issue_id == access.issue_id)

    async def public(page: list[Comment]) -> list[CommentPublic]:
        return await build_public_comments(session, access.key, page)

    return await keyset.page_in_order_of(session, statement, col(Comment.id), int, public)


async def create_comment(
    session: AsyncSession, access: IssueAccess, body: CommentCreate
) -> Created[CommentPublic]:
    """Comment on the issue (reporters and up), staged for the caller to commit."""
    access.project_access.require(Role.reporter, "commenting")
    comment = Comment.model_validate(
        body, update={"issue_id": access.issue_id, "author_id": access.principal.subject}
    )
    session.add(comment)
    await session.flush()
    assert comment.id is not None
    _record(session, access.principal, access.issue_id, ActivityAction.commented, new=comment.id)
    await auto_follow(session, [access.issue_id], [access.principal.subject])
    (public,) = await build_public_comments(session, access.key, [comment])
    return Created(public, api_path("comments", comment.id), comment_etag(comment))


def may_moderate(access: CommentAccess, principal: Principal, action: str) -> None:
    project = access.issue_access.project_access
    project.require_active()
    if access.comment.author_id != principal.subject:
        if not project.role.includes(Role.maintainer):
            raise Forbidden(f"{action} someone else's comment needs the maintainer role")
    else:
        # Authorship grants nothing beyond one's role: an author since demoted to viewer
        # may no longer change what they wrote.
        project.require(Role.reporter, f"{action} comments")


async def _keep_revision(
    session: AsyncSession, comment: Comment, editor: str, replaced_at: datetime
) -> None:
    """Stage the comment's text as a revision, before ``editor``'s edit replaces it. Who
    wrote it: who made the edit that replaced the one before, or its author."""
    assert comment.id is not None
    last = (
        await session.exec(
            select(CommentRevision.replaced_by_id)
            .where(CommentRevision.comment_id == comment.id)
            .order_by(col(CommentRevision.version).desc())
            .limit(1)
        )
    ).first()
    session.add(
        CommentRevision(
            comment_id=comment.id,
            version=comment.version,
            body=comment.body,
            written_by_id=last or comment.author_id,
            written_at=comment.edited_at or comment.created_at,
            replaced_by_id=editor,
            replaced_at=replaced_at,
        )
    )


async def edit_comment(
    session: AsyncSession,
    principal: Principal,
    comment_id: int,
    body: CommentUpdate,
    conditional: ConditionalWrite,
) -> CommentAccess:
    """Edit a comment (its author, or a maintainer); the comment then shows as edited."""
    access = await load_comment_access(session, principal, comment_id, for_update=True)
    may_moderate(access, principal, "editing")
    conditional.check(comment_etag(access.comment))
    comment = access.comment
    if body.body != comment.body:
        assert comment.id is not None
        # The history names the comment; its text is the comment's own.
        _record(session, principal, comment.issue_id, ActivityAction.comment_edited, new=comment.id)
        now = utcnow()
        await _keep_revision(session, comment, principal.subject, now)
        comment.body = body.body
        comment.edited_at = comment.updated_at = now
        comment.version += 1
        session.add(comment)
        await session.commit()
    return access


async def delete_comment(
    session: AsyncSession, principal: Principal, comment_id: int, conditional: ConditionalWrite
) -> None:
    """Delete a comment (its author, or a maintainer), and its text from the stored events."""
    access = await load_comment_access(session, principal, comment_id, for_update=True)
    may_moderate(access, principal, "deleting")
    conditional.check(comment_etag(access.comment))
    issue_id, deleted = access.comment.issue_id, access.comment.id
    _record(session, principal, issue_id, ActivityAction.comment_deleted, old=deleted)
    await forget_comment_text(session, issue_id, comment_id)
    await restate_created(session, [api_path("comments", comment_id)])
    await session.delete(access.comment)
    await session.commit()
