"""What an issue write refers to, looked up in its project: the next issue number, members,
labels and milestones by name (a 422 naming the field for anything unknown)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.errors import UnprocessableEntity
from flyswatter.labels.models import IssueLabel, Label
from flyswatter.milestones.models import Milestone
from flyswatter.projects.models import Project, ProjectMember


async def allocate_issue_number(session: AsyncSession, project_id: int) -> int:
    """The next number in the project, race-free: the UPDATE locks the project row until
    the creating transaction ends, so concurrent creates queue instead of colliding."""
    result = await session.exec(
        update(Project)
        .where(col(Project.id) == project_id)
        .values(last_issue_number=Project.last_issue_number + 1)
        .returning(col(Project.last_issue_number))
    )
    return int(result.scalar_one())


async def require_member(
    session: AsyncSession, project_id: int, user_id: str, *, loc: tuple[str, ...] = ("body",)
) -> None:
    # The caller holds the project row (``load_project_access(lock=...)``), which a removal
    # locks before it deletes the member: one in flight was waited for, and is seen here as
    # the member gone; one that comes after waits for this transaction, then unassigns.
    # Locking the member row instead would take locks in the opposite order to the removal's.
    member = await session.get(ProjectMember, (project_id, user_id))
    if member is None:
        raise UnprocessableEntity(
            "the assignee must be a member of the project", loc=(*loc, "assignee_id")
        )


async def labels_in(
    session: AsyncSession, project_id: int, names: Sequence[str], *, lock: bool = False
) -> Sequence[Label]:
    """Those of the project's labels that have these names (see ``labels_by_name`` for
    ``lock``)."""
    if not names:
        return []
    statement = select(Label).where(Label.project_id == project_id, col(Label.name).in_(names))
    if lock:
        statement = statement.with_for_update(read=True, key_share=True).execution_options(
            populate_existing=True
        )
    return (await session.exec(statement)).all()


async def labels_by_name(
    session: AsyncSession,
    project_id: int,
    names: Sequence[str],
    *,
    loc: Sequence[str] = (),
    lock: bool = False,
) -> list[Label]:
    """The project's labels of these names, in that order; a 422 naming any unknown.

    With ``lock``, for labels about to be linked: each is held KEY SHARE until the write
    commits, as the foreign key's check of the new link would hold it, but from this read
    on, so that a deletion in flight (which locks the label FOR UPDATE, then the issues that
    have it) is waited for here and seen as the label gone (the 422), before the write locks
    any issue: waiting for it at the link, an issue of the write held, would be a deadlock
    when the deletion comes to that issue. Never lock a label an issue the write holds has
    already, for the same reason."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found = await labels_in(session, project_id, wanted, lock=lock)
    missing = sorted(set(wanted) - {label.name for label in found})
    if missing:
        raise UnprocessableEntity(
            f"unknown label(s) in this project: {', '.join(missing)}",
            loc=tuple(loc) or ("body", "labels"),
        )
    by_name = {label.name: label for label in found}
    return [by_name[name] for name in wanted]


async def issue_label_names(session: AsyncSession, issue_id: int) -> list[str]:
    rows = await session.exec(
        select(Label.name)
        .join(IssueLabel, col(IssueLabel.label_id) == Label.id)
        .where(IssueLabel.issue_id == issue_id)
        .order_by(col(Label.name))
    )
    return list(rows.all())


async def issue_labels(
    session: AsyncSession, issue_ids: Sequence[int]
) -> dict[int, dict[str, int]]:
    """Each issue's labels (name to id), in one statement however many issues."""
    rows = await session.exec(
        select(IssueLabel.issue_id, Label.name, IssueLabel.label_id)
        .join(Label, col(Label.id) == IssueLabel.label_id)
        .where(col(IssueLabel.issue_id).in_(issue_ids))
        .order_by(col(Label.name))
    )
    found: dict[int, dict[str, int]] = {issue_id: {} for issue_id in issue_ids}
    for issue_id, name, id_ in rows:
        found[issue_id][name] = id_
    return found


async def milestone_by_title(
    session: AsyncSession, project_id: int, title: str, *, loc: tuple[str, ...] = ("body",)
) -> Milestone:
    """The project's milestone of that title; a 422 for any other (another project's too).

    Held KEY SHARE until the write commits, as its foreign key's check would hold it, but
    from this read on: a deletion or a new due date in flight (which lock the milestone FOR
    UPDATE) is waited for here, so the write sees the milestone gone (this 422, not a bare
    409 at the foreign key) or ranks the issue by the date it has now."""
    milestone = (
        await session.exec(
            select(Milestone)
            .where(Milestone.project_id == project_id, Milestone.title == title)
            .with_for_update(read=True, key_share=True)
            .execution_options(populate_existing=True)
        )
    ).first()
    if milestone is None:
        raise UnprocessableEntity(
            f"unknown milestone in this project: {title}", loc=(*loc, "milestone")
        )
    return milestone


async def milestone_titles(session: AsyncSession, ids: Iterable[int | None]) -> dict[int, str]:
    """Milestones' titles by id, in one statement (what history records of them)."""
    wanted = sorted({id_ for id_ in ids if id_ is not None})
    if not wanted:
        return {}
    rows = await session.exec(
        select(Milestone.id, Milestone.title).where(col(Milestone.id).in_(wanted))
    )
    return {id_: title for id_, title in rows if id_ is not None}
