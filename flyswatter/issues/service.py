"""Issue writes: create, update, transition, label, delete; each checks who may do it,
records its history and bumps the issue's version in the request's transaction."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.attachments.service import remove_objects, stage_issue_file_removals
from flyswatter.comments.models import Comment
from flyswatter.errors import NotFound, UnprocessableEntity
from flyswatter.events.redaction import forget_comment_text
from flyswatter.http.conditional import etag_of
from flyswatter.http.created import Created
from flyswatter.http.headers import api_path
from flyswatter.http.idempotency import restate_created
from flyswatter.issues.activity import record_activity, record_deletion
from flyswatter.issues.changes import (
    Holding,
    bump_version,
    changed_fields,
    check_transition,
    delete_issue_labels,
    record_transition,
    require_edit,
    resolve_change,
    stage_change,
    stage_labels,
)
from flyswatter.issues.dependencies import IssueAccess, IssueWrite
from flyswatter.issues.models import (
    ActivityAction,
    Issue,
    IssueCreate,
    IssuePublic,
    IssueUpdate,
    TransitionRequest,
)
from flyswatter.issues.read_model import build_public_issue, build_public_issues
from flyswatter.issues.references import (
    allocate_issue_number,
    issue_labels,
    labels_by_name,
    milestone_by_title,
    milestone_titles,
    require_member,
)
from flyswatter.labels.models import IssueLabel, label_id
from flyswatter.milestones.models import due_rank
from flyswatter.moves.models import IssueKeyRedirect
from flyswatter.observability.metrics import ISSUE_TRANSITIONS
from flyswatter.projects.models import Project, Role
from flyswatter.projects.service import ProjectAccess
from flyswatter.storage.service import Storage
from flyswatter.watchers.service import auto_follow


async def create_issue(
    session: AsyncSession, access: ProjectAccess, body: IssueCreate
) -> Created[IssuePublic]:
    """Report an issue, staged in the transaction for the caller to commit."""
    access.require_active()
    principal = access.principal
    if body.assignee_id is not None:
        if body.assignee_id != principal.subject:
            access.require(Role.developer, "assigning issues to others")
        await require_member(session, access.project_id, body.assignee_id)
    # Locked, as every writer's new labels are: no issue is held yet.
    labels = await labels_by_name(session, access.project_id, body.labels, lock=True)
    milestone = None
    if body.milestone is not None:
        milestone = await milestone_by_title(session, access.project_id, body.milestone)

    number = await allocate_issue_number(session, access.project_id)
    issue = Issue.model_validate(
        body.model_dump(exclude={"labels", "milestone"}),
        update={
            "project_id": access.project_id,
            "number": number,
            "reporter_id": principal.subject,
            "priority_rank": body.priority.rank,
            "milestone_id": milestone.id if milestone else None,
            "milestone_due_rank": due_rank(milestone.due_on if milestone else None),
        },
    )
    session.add(issue)
    await session.flush()
    assert issue.id is not None
    for label in labels:
        session.add(IssueLabel(issue_id=issue.id, label_id=label_id(label)))
    key = f"{access.project.key}-{number}"
    record_activity(session, principal, issue.id, ActivityAction.created, field="key", new=key)
    await auto_follow(session, [issue.id], [principal.subject, body.assignee_id])
    await session.flush()
    (public,) = await build_public_issues(session, access.project, [issue])
    return Created(public, api_path("issues", key), etag_of("issue", issue.id, issue.version))


async def apply_update(write: IssueWrite, body: IssueUpdate) -> IssuePublic:
    """Change fields; ``labels`` replaces the set, ``milestone: null`` detaches."""
    session, access = write.session, write.access
    write.conditional.check(access.etag)
    changes = body.model_dump(exclude_unset=True)
    labels: dict[str, int] = {}
    if changes.get("labels") is not None:
        labels = (await issue_labels(session, [access.issue_id]))[access.issue_id]
    # Weighed by what it changes: fields sent back as they are need no role.
    require_edit(access, changed_fields(access.issue, changes, labels))
    # The issue's milestone: what the history records it left, and what it has already.
    held = access.issue.milestone_id if "milestone" in changes else None
    titles = await milestone_titles(session, [held])
    holding = Holding(labels, titles.get(held) if held is not None else None)
    change = await resolve_change(
        session, access.project_access.project_id, changes, holding=holding
    )
    changed, unlinked = stage_change(session, access, change, labels, titles)
    await delete_issue_labels(session, unlinked)
    if change.set_assignee:
        await auto_follow(session, [access.issue_id], [change.assignee_id])
    if changed:
        await session.commit()
    return await build_public_issue(session, access)


async def _commit_change(session: AsyncSession, access: IssueAccess) -> None:
    bump_version(session, access)
    await session.commit()


async def transition(write: IssueWrite, body: TransitionRequest) -> IssuePublic:
    """Move the issue through the workflow (developers)."""
    session, access = write.session, write.access
    access.project_access.require(Role.developer, "moving issues through the workflow")
    write.conditional.check(access.etag)
    check_transition(access.issue, body.to)
    record_transition(session, access, body.to)
    await _commit_change(session, access)
    ISSUE_TRANSITIONS.labels(to=body.to.value).inc()
    return await build_public_issue(session, access)


async def change_labels(
    write: IssueWrite, *, add: str | None = None, remove: str | None = None
) -> IssuePublic:
    """Attach or detach one label (developers); attaching twice changes nothing."""
    session, access = write.session, write.access
    access.project_access.require(Role.developer, "labelling issues")
    write.conditional.check(access.etag)
    current = (await issue_labels(session, [access.issue_id]))[access.issue_id]
    if remove is not None and remove not in current:
        raise NotFound(f"issue {access.key} has no label {remove}")
    wanted = {name: id_ for name, id_ in current.items() if name != remove}
    if add is not None and add not in current:
        # Locked, as a PATCH's new labels are; never one the issue has (see ``Holding``).
        try:
            (label,) = await labels_by_name(
                session, access.project_access.project_id, [add], lock=True
            )
        except UnprocessableEntity:
            # The same refusal as for a body's unknown label, pointing at where the name was.
            raise UnprocessableEntity(
                f"unknown label in this project: {add}", loc=("path", "name")
            ) from None
        wanted[label.name] = label_id(label)
    if wanted.keys() != current.keys():
        await delete_issue_labels(session, stage_labels(session, access, current, wanted))
        await _commit_change(session, access)
    return await build_public_issue(session, access)


async def delete_issue(write: IssueWrite, storage: Storage) -> None:
    """Delete an issue with its comments, files and history (maintainers); its files' objects
    are removed once the deletion is committed."""
    write.access.project_access.require(Role.maintainer, "deleting issues")
    write.conditional.check(write.access.etag)
    keys = await stage_issue_file_removals(write.session, write.access.issue_id)
    await record_deletion(write.session, write.access.principal, write.access.issue_id)
    # Its comments go with it, and so does their text from its events, and from the stored
    # answers to retries of their creation, and of its own.
    await forget_comment_text(write.session, write.access.issue_id)
    comments = await write.session.exec(
        select(Comment.id).where(Comment.issue_id == write.access.issue_id)
    )
    # Under every key it has had: a retry names where the issue was created.
    old_keys = await write.session.exec(
        select(Project.key, IssueKeyRedirect.number)
        .join(Project, col(Project.id) == IssueKeyRedirect.project_id)
        .where(IssueKeyRedirect.issue_id == write.access.issue_id)
    )
    created = [api_path("issues", write.access.key)]
    created += [api_path("issues", f"{key}-{number}") for key, number in old_keys]
    created += [api_path("comments", id_) for id_ in comments if id_ is not None]
    await restate_created(write.session, created)
    await write.session.delete(write.access.issue)
    await write.session.commit()
    await remove_objects(storage, keys)
