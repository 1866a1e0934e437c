"""New versions of the issues whose served document a change elsewhere alters.

An issue's document shows its labels' name, colour and description, and its reporter's
and assignee's summaries (``users.service`` bumps the issues and comments that show a
summary when it changes). ETags are built from the version, so a change to one of those
rows bumps the version of every document that shows it, in the changing transaction: the
hottest read stays one statement (no representation to hash before a 304), and
``If-Match`` keeps comparing against the locked row's version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.db import for_change, utcnow
from flyswatter.issues.activity import record_activity
from flyswatter.issues.models import ActivityAction, Issue
from flyswatter.labels.models import IssueLabel, Label


async def label_changed(session: AsyncSession, label_id: int) -> None:
    """A label was renamed, recoloured or redescribed: every issue that shows it gets a new
    version."""
    labelled = select(IssueLabel.issue_id).where(IssueLabel.label_id == label_id)
    locked = await lock_issues(session, col(Issue.id).in_(labelled))
    await session.exec(
        update(Issue).where(col(Issue.id).in_(locked)).values(version=Issue.version + 1)
    )


async def lock_issues(session: AsyncSession, which: ColumnElement[bool]) -> list[int]:
    """Lock the issues, in id order, until the transaction ends, and return their ids: the
    order every writer of many issues takes them in (a bulk change, a label's or milestone's
    change), so that two of them queue instead of deadlocking. An UPDATE alone takes them in
    the order it finds the rows, which is where they lie on disk. Update the ids returned,
    not ``which`` again: a row that came to match since would be taken out of order."""
    rows = await session.exec(for_change(select(Issue.id).where(which).order_by(col(Issue.id))))
    return [issue_id for issue_id in rows if issue_id is not None]


async def revise(
    session: AsyncSession,
    principal: Principal,
    issue_ids: Sequence[int | None],
    action: ActivityAction,
    *,
    field: str,
    old: Any = None,
    new: Any = None,
    values: Mapping[str, Any] | None = None,
) -> None:
    """A change made elsewhere reaches these issues: each gets ``values``, a new version and
    one entry in its history (so an event too), as if it had been changed on its own."""
    if not issue_ids:
        return
    await lock_issues(session, col(Issue.id).in_(issue_ids))
    await session.exec(
        update(Issue)
        .where(col(Issue.id).in_(issue_ids))
        .values(**(values or {}), version=Issue.version + 1, updated_at=utcnow())
    )
    for issue_id in issue_ids:
        assert issue_id is not None, "a stored issue has an id"
        record_activity(session, principal, issue_id, action, field=field, old=old, new=new)


async def label_deleted(session: AsyncSession, principal: Principal, label: Label) -> None:
    """A label is about to be deleted: every issue that has it loses it as if one by one,
    so that its history and its subscribers learn where the label went (before the delete,
    while the links still exist)."""
    labelled = (
        await session.exec(select(IssueLabel.issue_id).where(IssueLabel.label_id == label.id))
    ).all()
    await revise(
        session, principal, labelled, ActivityAction.unlabeled, field="label", old=label.name
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
    await revise(
        session,
        principal,
        assigned,
        ActivityAction.assigned,
        field="assignee_id",
        old=user_id,
        values={"assignee_id": None},
    )
