"""Milestone writes and reads: progress counted for a whole page in one grouped statement,
and the issues of a milestone kept in step with it (due-date rank, detaching on delete)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import and_, case, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.db import first_or_not_found, for_change, utcnow
from flyswatter.errors import BadRequest, Conflict
from flyswatter.http.headers import entity_tag
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues.models import CLOSED_STATUSES, ActivityAction, Issue
from flyswatter.issues.revisions import lock_issues, revise
from flyswatter.milestones.models import (
    UNDATED_RANK,
    Milestone,
    MilestoneCreate,
    MilestonePublic,
    MilestoneState,
    MilestoneUpdate,
    due_rank,
)
from flyswatter.projects.service import ProjectAccess, load_project_row

# A page of milestones: by due date (undated last), then title; the cursor holds both.
LIST_SORT = "due_on"
_NO_DATE = ""


def milestone_etag(public: MilestonePublic) -> str:
    """The tag of the document, progress included: the counts change with the milestone's
    issues, which are written from wherever issues are (transitions, edits, bulk changes,
    moves, deletions, jobs) and never touch the milestone's row or its version."""
    progress = f"o{public.open_issues}", f"c{public.closed_issues}"
    return entity_tag("milestone", public.id, f"v{public.version}", *progress)


async def progress(
    session: AsyncSession, project_id: int, milestone_ids: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """(open, closed) issue counts of each milestone, in one grouped statement."""
    if not milestone_ids:
        return {}
    closed = func.sum(case((col(Issue.status).in_(CLOSED_STATUSES), 1), else_=0))
    rows = await session.exec(
        select(Issue.milestone_id, func.count(), closed)
        .where(Issue.project_id == project_id, col(Issue.milestone_id).in_(milestone_ids))
        .group_by(col(Issue.milestone_id))
    )
    counts = {milestone_id: (0, 0) for milestone_id in milestone_ids}
    for milestone_id, total, done in rows:
        if milestone_id is not None:
            counts[milestone_id] = (total - (done or 0), done or 0)
    return counts


def _public(milestone: Milestone, counts: tuple[int, int]) -> MilestonePublic:
    return MilestonePublic.model_validate(
        milestone, update={"open_issues": counts[0], "closed_issues": counts[1]}
    )


async def public_milestones(
    session: AsyncSession, project_id: int, milestones: Sequence[Milestone]
) -> list[MilestonePublic]:
    counts = await progress(session, project_id, [m.id for m in milestones if m.id is not None])
    return [_public(milestone, counts.get(milestone.id or 0, (0, 0))) for milestone in milestones]


async def milestone_page(
    session: AsyncSession, access: ProjectAccess, keyset: Keyset, state: MilestoneState | None
) -> Page[MilestonePublic]:
    statement = select(Milestone).where(Milestone.project_id == access.project_id)
    if state is not None:
        statement = statement.where(Milestone.state == state)
    if (after := keyset.after(LIST_SORT, (str, str))) is not None:
        statement = statement.where(_after(*after))
    due = col(Milestone.due_on)
    statement = statement.order_by(due.asc().nulls_last(), col(Milestone.title).asc())
    rows = (await session.exec(statement.limit(keyset.fetch))).all()
    return await keyset.page(
        rows,
        sort=LIST_SORT,
        key=lambda m: [m.due_on.isoformat() if m.due_on else _NO_DATE, m.title],
        build=lambda page: public_milestones(session, access.project_id, page),
    )


def _after(due_value: str, title: str) -> Any:
    """The milestones after (due date, title) in list order, undated ones last."""
    due, later_title = col(Milestone.due_on), col(Milestone.title) > title
    if due_value == _NO_DATE:
        return and_(due.is_(None), later_title)
    try:
        due_on = date.fromisoformat(due_value)
    except ValueError:
        raise BadRequest("invalid cursor") from None
    return or_(due > due_on, and_(due == due_on, later_title), due.is_(None))


async def load_milestone(
    session: AsyncSession, access: ProjectAccess, milestone_id: int, *, for_update: bool = False
) -> Milestone:
    """The project's milestone; ``for_update`` (a change or a deletion) locks it FOR UPDATE.

    Not the FOR NO KEY UPDATE of other rows' changes (``db.for_change``): an issue write
    that puts an issue in the milestone holds KEY SHARE on its row (the foreign key's check)
    until it commits, which FOR NO KEY UPDATE lets through. The deletion would then miss the
    issue joining (the foreign key's ON DELETE SET NULL would detach it unseen: no version,
    no history, a stale due-date rank) and a new due date would not reach it. FOR UPDATE
    waits for such a write, whose issue the next statement sees; and one that comes after
    waits for this one.
    """
    if not for_update:
        return await load_project_row(session, access, Milestone, milestone_id, noun="milestone")
    statement = (
        select(Milestone)
        .where(Milestone.project_id == access.project_id, Milestone.id == milestone_id)
        .with_for_update()
    )
    missing = f"milestone {milestone_id} not found in {access.project.key}"
    return await first_or_not_found(session, statement, missing, for_update=False)


async def read_milestone(session: AsyncSession, milestone: Milestone) -> MilestonePublic:
    (public,) = await public_milestones(session, milestone.project_id, [milestone])
    return public


async def _flush_or_conflict(session: AsyncSession, title: str) -> None:
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"a milestone titled {title} already exists in this project") from None


async def create_milestone(
    session: AsyncSession, access: ProjectAccess, body: MilestoneCreate
) -> Milestone:
    """Stage a new milestone (flushed, so that it has its id)."""
    milestone = Milestone.model_validate(body, update={"project_id": access.project_id})
    session.add(milestone)
    await _flush_or_conflict(session, body.title)
    return milestone


async def update_milestone(
    session: AsyncSession, milestone: Milestone, body: MilestoneUpdate
) -> bool:
    """Stage the changes; its issues' due-date rank follows a new due date."""
    changes = body.model_dump(exclude_unset=True)
    changes = {k: v for k, v in changes.items() if getattr(milestone, k) != v}
    if not changes:
        return False
    milestone.sqlmodel_update(changes)
    milestone.version += 1
    milestone.updated_at = utcnow()
    session.add(milestone)
    await _flush_or_conflict(session, milestone.title)
    if "due_on" in changes:
        locked = await lock_issues(session, col(Issue.milestone_id) == milestone.id)
        await session.exec(
            update(Issue)
            .where(col(Issue.id).in_(locked))
            .values(milestone_due_rank=due_rank(milestone.due_on))
        )
    return True


async def delete_milestone(
    session: AsyncSession, access: ProjectAccess, milestone: Milestone
) -> None:
    """Stage the deletion: its issues stay, detached, each with a new version and an entry
    in its history."""
    # Locked, in id order as bulk changes lock theirs: an issue write in flight (which holds
    # its issue) is waited for, and its issue is detached only if it is still in the
    # milestone once it commits (PostgreSQL checks the condition again on the row it waited
    # for). Otherwise an issue moved to another milestone meanwhile would lose that one.
    detached = (
        await session.exec(
            for_change(
                select(Issue.id)
                .where(Issue.project_id == access.project_id, Issue.milestone_id == milestone.id)
                .order_by(col(Issue.id))
            )
        )
    ).all()
    await revise(
        session,
        access.principal,
        detached,
        ActivityAction.updated,
        field="milestone",
        old=milestone.title,
        values={"milestone_id": None, "milestone_due_rank": UNDATED_RANK},
    )
    await session.delete(milestone)
