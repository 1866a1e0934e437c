"""One change to many issues: every issue checked as its single change would be, then all
of them written together, in a fixed number of statements whatever their number."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.bulk.models import BulkItem, BulkOutcome, BulkResult, BulkUpdate
from flyswatter.db import for_change
from flyswatter.errors import PROBLEM_TYPE_PREFIX, NotFound, Problem, ProblemDetails
from flyswatter.http.headers import api_path
from flyswatter.issues.changes import (
    IssueChange,
    check_change,
    delete_issue_labels,
    resolve_change,
    stage_change,
)
from flyswatter.issues.dependencies import IssueAccess, parse_issue_key
from flyswatter.issues.models import Issue, IssueStatus
from flyswatter.issues.read_model import build_public_issues
from flyswatter.issues.references import issue_labels, milestone_titles
from flyswatter.observability.logs import request_id_var
from flyswatter.observability.metrics import ISSUE_TRANSITIONS
from flyswatter.projects.models import Role
from flyswatter.projects.service import ProjectAccess
from flyswatter.watchers.service import auto_follow


class BulkChangeRefused(Problem):
    """Some issues may not take the change, so none took it; ``items`` says why for each."""

    slug, title = "bulk-change-refused", "Bulk change refused"

    def __init__(self, failed: Sequence[BulkItem]) -> None:
        statuses = {item.problem.status for item in failed if item.problem is not None}
        # The failures' status when they agree (all 403, all 409, ...), else 422.
        self.status = statuses.pop() if len(statuses) == 1 else 422
        super().__init__(
            f"{len(failed)} issue(s) may not take the change; nothing was changed",
            extra={"items": [item.model_dump(mode="json") for item in failed]},
        )


def _failure(key: str, problem: Problem) -> BulkItem:
    details = ProblemDetails(
        type=PROBLEM_TYPE_PREFIX + problem.slug,
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=api_path("issues", key),
        request_id=request_id_var.get(),
    )
    return BulkItem(key=key, outcome=BulkOutcome.failed, problem=details)


def _checked(access: IssueAccess, change: IssueChange) -> IssueChange:
    """The change as this issue takes it, checked as its single change would be.

    The body sets fields, as a PATCH does: an issue already in the status asked for is
    already so, like one that already has the priority asked for, so it keeps its status
    (no move, history, event or version) instead of being refused for a move from a status
    to itself, which the workflow has none of (``POST .../transitions`` is a 409 there, a
    move being asked for). Whoever may not move issues is refused all the same."""
    if change.status is None or IssueStatus(access.issue.status) != change.status:
        check_change(access, change)
        return change
    access.project_access.require(Role.developer, "moving issues through the workflow")
    unmoved = dataclasses.replace(change, status=None)
    check_change(access, unmoved)
    return unmoved


async def _locked_issues(
    session: AsyncSession, project_id: int, numbers: Sequence[int]
) -> dict[int, Issue]:
    """The issues by number, each row locked (in id order, as every bulk change locks them,
    so that two of them over the same issues queue instead of deadlocking)."""
    statement = for_change(
        select(Issue)
        .where(Issue.project_id == project_id, col(Issue.number).in_(numbers))
        .order_by(col(Issue.id))
    )
    return {issue.number: issue for issue in (await session.exec(statement)).all()}


async def bulk_update(
    session: AsyncSession, access: ProjectAccess, body: BulkUpdate, *, partial: bool
) -> BulkResult:
    """Apply the change to every issue named, or (unless ``partial``) to none if any of
    them may not take it. Each issue gets its history and its event, like a single change."""
    access.require_active()
    changes = body.change.model_dump(exclude_unset=True)
    change = await resolve_change(session, access.project_id, changes, loc=("body", "change"))
    project_key = access.project.key
    keys = [given.upper() for given in body.issues]
    wanted: dict[str, int] = {}
    failed: dict[str, BulkItem] = {}
    for key in keys:
        try:
            issue_project, number = parse_issue_key(key)
        except NotFound as missing:
            failed[key] = _failure(key, missing)
            continue
        if issue_project == project_key:
            wanted[key] = number
        else:
            failed[key] = _failure(key, NotFound(f"issue {key} is not in project {project_key}"))
    issues = await _locked_issues(session, access.project_id, list(wanted.values()))
    accesses: dict[str, IssueAccess] = {}
    # The change each issue takes: without the status for those already in it.
    changes_of: dict[str, IssueChange] = {}
    for key, number in wanted.items():
        if (issue := issues.get(number)) is None:
            failed[key] = _failure(key, NotFound(f"issue {key} not found"))
            continue
        issue_access = IssueAccess(issue=issue, project_access=access)
        try:
            changes_of[key] = _checked(issue_access, change)
        except Problem as refused:
            failed[key] = _failure(key, refused)
            continue
        accesses[key] = issue_access
    if failed and not partial:
        raise BulkChangeRefused(list(failed.values()))

    ids = [issue_access.issue_id for issue_access in accesses.values()]
    current = await issue_labels(session, ids) if change.touches_labels else {}
    titles = await milestone_titles(
        session, [a.issue.milestone_id for a in accesses.values()] if change.set_milestone else []
    )
    unlinked: list[tuple[int, int]] = []
    outcomes: dict[str, BulkOutcome] = {}
    for key, issue_access in accesses.items():
        changed, links = stage_change(
            session, issue_access, changes_of[key], current.get(issue_access.issue_id, {}), titles
        )
        unlinked.extend(links)
        outcomes[key] = BulkOutcome.applied if changed else BulkOutcome.unchanged
    await delete_issue_labels(session, unlinked)
    if change.set_assignee:
        # As a single change does: the new assignee follows what they were given.
        await auto_follow(session, ids, [change.assignee_id])
    await session.flush()
    public = await build_public_issues(
        session, access.project, [issue_access.issue for issue_access in accesses.values()]
    )
    shown = dict(zip(accesses, public, strict=True))
    items = [
        failed[key] if key in failed else BulkItem(key=key, outcome=outcomes[key], issue=shown[key])
        for key in keys
    ]
    await session.commit()
    if change.status is not None:
        # The issues moved, not those changed in other fields only.
        moved = sum(changes_of[key].status is not None for key in accesses)
        ISSUE_TRANSITIONS.labels(to=change.status.value).inc(moved)
    return BulkResult(items=items)
