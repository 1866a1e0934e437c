"""Relation writes. A relation is one row with a direction (``source kind target``); either
issue may create or remove it, each issue's history records it as that issue sees it, and both
issues' events are written in the same transaction. Cycles are refused (``relations.graph``).
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import col
from sqlmodel import select as select_model
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.errors import Conflict, NotFound, UnprocessableEntity
from flyswatter.issues import service as issue_service
from flyswatter.issues.activity import record_activity
from flyswatter.issues.dependencies import (
    IssueAccess,
    IssueWrite,
    load_issue_access,
    parse_issue_key,
)
from flyswatter.issues.models import ActivityAction, Issue, IssuePublic, IssueStatus
from flyswatter.issues.models import TransitionRequest as Transition
from flyswatter.moves.redirects import IssueMoved
from flyswatter.projects.models import Project, Role
from flyswatter.projects.service import ProjectAccess, load_project_access
from flyswatter.relations.graph import Edge, refuse_cycle
from flyswatter.relations.models import IssueRelation, RelatedIssue, RelationKind, RelationPublic
from flyswatter.users.service import user_summaries

# The kinds whose graph must stay acyclic: a loop of blockers blocks forever, of sub-issues
# has no top, of duplicates no original (each issue a copy of another, none the one to keep).
_ACYCLIC = frozenset({RelationKind.blocks, RelationKind.parent, RelationKind.duplicates})


async def visible_issue(session: AsyncSession, principal: Principal, key: str) -> IssueAccess:
    """An issue the caller may see, by its key or by a key it had before it moved; 404 when
    it may not be seen, as everywhere."""
    try:
        return await load_issue_access(session, principal, key)
    except IssueMoved as moved:
        return await load_issue_access(session, principal, moved.new_key)


def _edge(access: IssueAccess, other: IssueAccess, kind: RelationKind) -> Edge:
    source, target = (other, access) if kind.reversed else (access, other)
    if kind.stored == RelationKind.relates_to and source.issue_id > target.issue_id:
        # Symmetric: stored once, lower id first, whichever side created it.
        source, target = target, source
    return Edge(source, target, kind.stored)


async def _stored(session: AsyncSession, edge: Edge) -> IssueRelation | None:
    statement = select_model(IssueRelation).where(
        col(IssueRelation.source_id) == edge.source.issue_id,
        col(IssueRelation.target_id) == edge.target.issue_id,
        col(IssueRelation.kind) == edge.kind.value,
    )
    return (await session.exec(statement)).first()


async def _other_issue(
    write: IssueWrite, key: str, loc: tuple[str, str], *, role: Role | None = None
) -> IssueAccess:
    """The other issue of a relation, which the caller must see; a new relation also needs
    ``role`` there, as its history and its subscribers change as much as the path issue's."""
    access = write.access
    other = await visible_issue(write.session, access.principal, key)
    if other.issue_id == access.issue_id:
        raise UnprocessableEntity(f"an issue cannot be related to itself ({access.key})", loc=loc)
    if other.project.id != access.project.id:
        # Held shared, as the path issue's project is: the other project's archiving, or the
        # caller's removal from it, waits for this write, or comes first and is seen.
        other.project_access = await load_project_access(
            write.session, access.principal, other.project.key, lock="share"
        )
    if role is not None:
        other.project_access.require(role, "relating issues")
    # Both issues' histories change: neither project may be archived.
    other.project_access.require_active()
    return other


async def _hidden_issue(write: IssueWrite, key: str, not_found: NotFound) -> IssueAccess:
    """The other issue of a relation being removed, in a project the caller may not see.

    Who may relate two issues must be a developer of both projects, so a relation across
    projects is seen only by members of both; the path project's developers can still remove
    it from their issue, naming the hidden issue by its key. The answer for an issue that is
    missing, unrelated or in an archived project is the 404 of an issue not seen, so nothing
    about the hidden project shows but that the relation, which is their issue's, existed:
    ``not_found`` is raised, here or by the caller.
    """
    project_key, number = parse_issue_key(key)
    statement = (
        select_model(Issue, Project)
        .join(Project, col(Project.id) == col(Issue.project_id))
        .where(col(Project.key) == project_key, col(Issue.number) == number)
        # Its project held shared, as every writer holds the projects it changes, and read as
        # the lock finds it: an archiving in flight is waited for and seen.
        .with_for_update(of=Project, read=True, key_share=True)
        .execution_options(populate_existing=True)
    )
    row = (await write.session.exec(statement)).first()
    if row is None or row[1].archived:
        raise not_found
    issue, project = row
    # Used for its id and key only: the caller has no standing in the project.
    return IssueAccess(issue, ProjectAccess(project, None, write.access.principal))


def _record(
    write: IssueWrite, other: IssueAccess, kind: RelationKind, action: ActivityAction
) -> None:
    """The change in both issues' histories, each as that issue sees the relation."""
    access, principal = write.access, write.access.principal
    values = ("new", "old") if action == ActivityAction.related else ("old", "new")
    record_activity(
        write.session,
        principal,
        access.issue_id,
        action,
        field=kind.value,
        **{values[0]: other.key},
    )
    record_activity(
        write.session,
        principal,
        other.issue_id,
        action,
        field=kind.inverse.value,
        **{values[0]: access.key},
    )


async def _stage_relation(
    write: IssueWrite, other: IssueAccess, kind: RelationKind, max_depth: int
) -> IssueRelation:
    """Check and stage a new relation with its history, for the caller to commit."""
    session, access = write.session, write.access
    edge = _edge(access, other, kind)
    if await _stored(session, edge) is not None:
        raise Conflict(f"{access.key} already {kind.value} {other.key}")
    if edge.kind in _ACYCLIC:
        await refuse_cycle(session, access.principal, edge, max_depth)
    relation = IssueRelation(
        source_id=edge.source.issue_id,
        target_id=edge.target.issue_id,
        kind=edge.kind,
        created_by=access.principal.subject,
    )
    session.add(relation)
    _record(write, other, kind, ActivityAction.related)
    await session.flush()
    return relation


async def add_relation(
    write: IssueWrite, kind: RelationKind, target_key: str, max_depth: int
) -> RelationPublic:
    """Relate the issue to another (developers of both issues' projects), committed with
    both issues' history and events."""
    write.access.project_access.require(Role.developer, "relating issues")
    write.conditional.check(write.access.etag)
    other = await _other_issue(write, target_key, ("body", "target"), role=Role.developer)
    relation = await _stage_relation(write, other, kind, max_depth)
    creators = await user_summaries(write.session, [write.access.principal.subject])
    public = RelationPublic(
        id=relation.id or 0,
        kind=kind,
        issue=RelatedIssue(
            key=other.key, title=other.issue.title, status=IssueStatus(other.issue.status)
        ),
        created_by=creators[write.access.principal.subject],
        created_at=relation.created_at,
    )
    await write.session.commit()
    return public


async def remove_relation(write: IssueWrite, kind: RelationKind, target_key: str) -> None:
    """Remove a relation, from either of its issues (developers of the issue's project,
    whether or not they may see the other issue)."""
    session, access = write.session, write.access
    access.project_access.require(Role.developer, "relating issues")
    write.conditional.check(access.etag)
    hidden: NotFound | None = None
    try:
        other = await _other_issue(write, target_key, ("path", "target"))
    except NotFound as not_found:
        hidden = not_found
        other = await _hidden_issue(write, target_key, not_found)
    relation = await _stored(session, _edge(access, other, kind))
    if relation is None:
        raise hidden or NotFound(f"{access.key} has no relation {kind.value} {other.key}")
    await session.exec(delete(IssueRelation).where(col(IssueRelation.id) == relation.id))
    _record(write, other, kind, ActivityAction.unrelated)
    await session.commit()


async def close_as_duplicate(write: IssueWrite, original_key: str, max_depth: int) -> IssuePublic:
    """Mark the issue a duplicate of another and close it through the workflow, in one
    transaction (developers): either both happen or neither does."""
    write.access.project_access.require(Role.developer, "closing issues as duplicates")
    write.conditional.check(write.access.etag)
    other = await _other_issue(write, original_key, ("body", "of"))
    if await _stored(write.session, _edge(write.access, other, RelationKind.duplicates)) is None:
        other.project_access.require(Role.developer, "relating issues")
        await _stage_relation(write, other, RelationKind.duplicates, max_depth)
    return await issue_service.transition(write, Transition(to=IssueStatus.closed))


async def parent_id(session: AsyncSession, principal: Principal, key: str) -> int:
    """The issue the list filter ``parent=`` names; 422 when the caller may not see it."""
    try:
        return (await visible_issue(session, principal, key)).issue_id
    except NotFound:
        raise UnprocessableEntity(f"issue {key} not found", loc=("query", "parent")) from None
