"""Moving an issue to another project: a new number there, the old key kept as a redirect,
labels carried over by name, history, comments and relations untouched (they hang on the
issue's id), in one transaction with the issue's event."""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlmodel import col, select

from flyswatter.comments.models import Comment
from flyswatter.db import for_change, utcnow
from flyswatter.errors import UnprocessableEntity
from flyswatter.issues.activity import record_activity
from flyswatter.issues.changes import set_milestone
from flyswatter.issues.dependencies import IssueWrite
from flyswatter.issues.models import ActivityAction, IssuePublic
from flyswatter.issues.read_model import build_public_issue
from flyswatter.issues.references import allocate_issue_number, issue_label_names, labels_in
from flyswatter.labels.models import IssueLabel, label_id
from flyswatter.milestones.models import Milestone, due_rank
from flyswatter.moves.models import IssueKeyRedirect, MoveRequest
from flyswatter.projects.models import ProjectMember, Role
from flyswatter.projects.service import load_project_access
from flyswatter.watchers.service import moved_out_of_reach


async def _carry_milestone(write: IssueWrite, current: int, project_id: int) -> None:
    """Keep the issue in the new project's milestone of the same title, as labels are kept by
    name (nothing to record: the title reads the same); without one, take it out of its
    milestone, which stays in the old project, and record that."""
    issue = write.access.issue
    old = await write.session.get(Milestone, current)
    assert old is not None, "an issue's milestone is its project's, and goes with the project"
    # Held (KEY SHARE) until the move commits: a deletion or a change of due date of that
    # milestone in flight (FOR UPDATE, milestones.service.load_milestone) is waited for, and
    # the row read after it, so that the issue neither joins a milestone that is gone (a
    # foreign-key violation at commit) nor keeps the rank of a due date that changed.
    statement = (
        select(Milestone)
        .where(Milestone.project_id == project_id, Milestone.title == old.title)
        .with_for_update(read=True, key_share=True)
        .execution_options(populate_existing=True)
    )
    same = (await write.session.exec(statement)).first()
    if same is None:
        set_milestone(write.session, write.access, None, {current: old.title})
    else:
        issue.milestone_id, issue.milestone_due_rank = same.id, due_rank(same.due_on)


async def move_issue(write: IssueWrite, body: MoveRequest) -> IssuePublic:
    """Move the issue (developers of both projects).

    A label is kept when the new project has one of the same name and dropped otherwise
    (creating labels is a maintainer's call, which a move must not grant), and so is the
    milestone, by title; an assignee who is not a member of the new project is unassigned.
    Each shows in the history as usual.
    """
    session, access = write.session, write.access
    access.project_access.require(Role.developer, "moving issues out of the project")
    write.conditional.check(access.etag)
    destination = await load_project_access(session, access.principal, body.project, lock="share")
    destination.require(Role.developer, "moving issues into the project")
    destination.require_active()
    if destination.project_id == access.project_access.project_id:
        raise UnprocessableEntity(
            f"issue {access.key} is already in {destination.project.key}", loc=("body", "project")
        )
    issue, principal, old_key = access.issue, access.principal, access.key
    session.add(
        IssueKeyRedirect(project_id=issue.project_id, number=issue.number, issue_id=access.issue_id)
    )
    number = await allocate_issue_number(session, destination.project_id)

    names = await issue_label_names(session, access.issue_id)
    # Held as a PATCH's new labels are (``labels_by_name(lock=True)``): a deletion of one in
    # flight is waited for, and the label seen gone, not met at the link's foreign key.
    kept = await labels_in(session, destination.project_id, names, lock=True)
    await session.exec(delete(IssueLabel).where(col(IssueLabel.issue_id) == access.issue_id))
    for label in kept:
        session.add(IssueLabel(issue_id=access.issue_id, label_id=label_id(label)))
    for name in sorted(set(names) - {label.name for label in kept}):
        record_activity(
            session, principal, access.issue_id, ActivityAction.unlabeled, field="label", old=name
        )
    if issue.milestone_id is not None:
        await _carry_milestone(write, issue.milestone_id, destination.project_id)
    if issue.assignee_id is not None and (
        await session.get(ProjectMember, (destination.project_id, issue.assignee_id)) is None
    ):
        record_activity(
            session,
            principal,
            access.issue_id,
            ActivityAction.assigned,
            field="assignee_id",
            old=issue.assignee_id,
        )
        issue.assignee_id = None

    source_id = access.project_access.project_id
    await moved_out_of_reach(session, access.issue_id, source_id, destination.project_id)
    issue.project_id, issue.number = destination.project_id, number
    access.project_access = destination
    record_activity(
        session,
        principal,
        access.issue_id,
        ActivityAction.moved,
        field="key",
        old=old_key,
        new=access.key,
    )
    # A comment shows its issue's key, which changed: new versions, so that its ETag does.
    # Locked in id order first, as a renamed author's comments are (``person_changed``).
    comments = await session.exec(
        for_change(
            select(Comment.id).where(Comment.issue_id == access.issue_id).order_by(col(Comment.id))
        )
    )
    await session.exec(
        update(Comment)
        .where(col(Comment.id).in_(list(comments)))
        .values(version=col(Comment.version) + 1)
    )
    issue.version += 1
    issue.updated_at = utcnow()
    session.add(issue)
    await session.commit()
    return await build_public_issue(session, access)
