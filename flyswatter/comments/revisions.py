"""A comment's history: the texts its edits replaced, and removing one of them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.comments.models import CommentRevision, CommentRevisionPublic
from flyswatter.comments.service import (
    CommentAccess,
    comment_etag,
    load_comment_access,
    may_moderate,
    public_comment,
)
from flyswatter.db import first_or_not_found, utcnow
from flyswatter.events.redaction import forget_comment_text
from flyswatter.http.headers import api_path
from flyswatter.http.idempotency import restate_created
from flyswatter.http.pagination import Keyset, Page
from flyswatter.users.service import user_summaries


async def _public(
    session: AsyncSession, revisions: Sequence[CommentRevision]
) -> list[CommentRevisionPublic]:
    people = await user_summaries(
        session,
        [id_ for r in revisions for id_ in (r.written_by_id, r.replaced_by_id, r.removed_by_id)],
    )
    return [
        CommentRevisionPublic.model_validate(
            revision,
            update={
                "written_by": people[revision.written_by_id],
                "replaced_by": people[revision.replaced_by_id],
                "removed_by": people.get(revision.removed_by_id or ""),
            },
        )
        for revision in revisions
    ]


async def revision_page(
    session: AsyncSession, access: CommentAccess, keyset: Keyset
) -> Page[CommentRevisionPublic]:
    """The texts the comment's edits replaced, oldest first (its text now is the comment's)."""
    statement = select(CommentRevision).where(CommentRevision.comment_id == access.comment.id)

    async def public(page: list[CommentRevision]) -> list[CommentRevisionPublic]:
        return await _public(session, page)

    return await keyset.page_in_order_of(session, statement, col(CommentRevision.id), int, public)


async def remove_revision_text(
    session: AsyncSession, principal: Principal, comment_id: int, version: int
) -> CommentRevisionPublic:
    """Remove a replaced text from the comment's history (who may edit the comment may),
    and from the stored events that carried it; the revision stays, saying who removed it.
    Removing it again changes nothing."""
    access = await load_comment_access(session, principal, comment_id, for_update=True)
    may_moderate(access, principal, "editing")
    statement = select(CommentRevision).where(
        CommentRevision.comment_id == comment_id, CommentRevision.version == version
    )
    missing = f"comment {comment_id} has no revision {version}"
    revision = await first_or_not_found(session, statement, missing, for_update=True)
    if (text := revision.body) is not None:
        revision.body = None
        revision.removed_by_id = principal.subject
        revision.removed_at = utcnow()
        session.add(revision)
        # Not the text the comment has now (edited back to it): that one is still shown.
        if text != access.comment.body:
            await forget_comment_text(session, access.comment.issue_id, comment_id, text=text)
            # The comment's creation, replayed to a retry, showed its first text.
            await restate_created(
                session,
                [api_path("comments", comment_id)],
                await public_comment(session, access),
                comment_etag(access.comment),
            )
        await session.commit()
    (public,) = await _public(session, [revision])
    return public
