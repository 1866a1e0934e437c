"""New versions of the issues whose served document a change elsewhere alters.

An issue's document shows its labels' name, colour and description, and its reporter's
and assignee's summaries (``users.service`` bumps the issues and comments that show a
summary when it changes). ETags are built from the version, so a change to one of those
rows bumps the version of every document that shows it, in the changing transaction: the
hottest read stays one statement (no representation to hash before a 304), and
``If-Match`` keeps comparing against the locked row's version.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.db import utcnow
from flyswatter.issues.activity import record_activity
from flyswatter.issues.models import ActivityAction, Issue
from flyswatter.labels.models import IssueLabel


async def label_changed(session: AsyncSession, label_id: int) -> None:
    """A label was renamed, recoloured, redescribed or is about to be deleted: every issue
    that shows it gets a new version (before a delete, while the links still exist)."""
    labelled = select(IssueLabel.issue_id).where(IssueLabel.label_id == label_id)
    await session.exec(
        update(Issue).where(col(Issue.id).in_(labelled)).values(version=Issue.version + 1)
    )


async def member_left(
    session: AsyncSession, principal: Principal, project_id: int, user_id: str
) -> None:
    """A member left the project: an assignee must be a member, so their issues there are
    unassigned, each with a new version and an entry in its history."""
    assigned = (
        await session.exec(
            select(Issue.id).where(Issue.project_id == project_id, Issue.assignee_id == user_id)
        )
    ).all()
    if not assigned:
        return
    await session.exec(
        update(Issue)
        .where(col(Issue.id).in_(assigned))
        .values(assignee_id=None, version=Issue.version + 1, updated_at=utcnow())
    )
    for issue_id in assigned:
        assert issue_id is not None, "a stored issue has an id"
        record_activity(
            session,
            principal,
            issue_id,
            ActivityAction.assigned,
            field="assignee_id",
            old=user_id,
            new=None,
        )
