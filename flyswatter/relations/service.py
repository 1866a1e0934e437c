"""Relation writes and reads. A relation is one row with a direction (``source kind target``);
either issue may create or remove it, each issue's history records it as that issue sees it,
and both issues' events are written in the same transaction.

Cycles are refused for ``blocks`` and ``parent``: what the new target already reaches is
found with a recursive CTE (the same SQL on SQLite and PostgreSQL), and the new edge closes a
cycle exactly when that set holds the new source.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, and_, cast, delete, func, literal, or_, select
from sqlmodel import col
from sqlmodel import select as select_model
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.errors import Conflict, NotFound, UnprocessableEntity
from flyswatter.http.conditional import check_if_match
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues import service as issue_service
from flyswatter.issues.activity import record_activity
from flyswatter.issues.dependencies import IssueAccess, IssueWrite, load_issue_access
from flyswatter.issues.models import ActivityAction, Issue, IssuePublic, IssueStatus
from flyswatter.issues.models import TransitionRequest as Transition
from flyswatter.moves.redirects import IssueMoved
from flyswatter.projects.models import Project, ProjectMember, Role
from flyswatter.relations.models import (
    IssueRelation,
    RelatedIssue,
    RelationKind,
    RelationPublic,
    seen_as,
)
from flyswatter.users.models import User, UserSummary
from flyswatter.users.service import SUMMARY_FIELDS, user_summaries

_RELATION, _ISSUE, _PROJECT, _MEMBER, _USER = (
    model.__table__  # type: ignore[union-attr]
    for model in (IssueRelation, Issue, Project, ProjectMember, User)
)
_OTHER = _ISSUE.alias("other_issue")
_OTHER_PROJECT = _PROJECT.alias("other_project")
# The kinds whose graph must stay acyclic.
_ACYCLIC = frozenset({RelationKind.blocks, RelationKind.parent})
# Taken (PostgreSQL) before a cycle check, so that two relations written at once cannot each
# pass the check and close a cycle together; relation writes are rare enough to queue.
_GRAPH_LOCK = 0x466C7952
# How an issue the caller may not see is named in a refused cycle.
HIDDEN = "(hidden)"


async def visible_issue(session: AsyncSession, principal: Principal, key: str) -> IssueAccess:
    """An issue the caller may see, by its key or by a key it had before it moved; 404 when
    it may not be seen, as everywhere."""
    try:
        return await load_issue_access(session, principal, key)
    except IssueMoved as moved:
        return await load_issue_access(session, principal, moved.new_key)


@dataclass(frozen=True, slots=True)
class Edge:
    """A relation between the issue in the path and another one, as a stored row."""

    source: IssueAccess
    target: IssueAccess
    kind: RelationKind


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


async def _other_issue(write: IssueWrite, key: str, loc: tuple[str, str]) -> IssueAccess:
    access = write.access
    other = await visible_issue(write.session, access.principal, key)
    if other.issue_id == access.issue_id:
        raise UnprocessableEntity(f"an issue cannot be related to itself ({access.key})", loc=loc)
    # Both issues' histories change: neither project may be archived.
    other.project_access.require_active()
    return other


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
    if edge.kind == RelationKind.duplicates:
        reverse = Edge(edge.target, edge.source, edge.kind)
        if await _stored(session, reverse) is not None:
            raise Conflict(f"{other.key} already duplicates {access.key}")
    if edge.kind in _ACYCLIC:
        await _refuse_cycle(session, access.principal, edge, max_depth)
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
    """Relate the issue to another (developers of the issue's project; the other issue must
    be visible), committed with both issues' history and events."""
    write.access.project_access.require(Role.developer, "relating issues")
    check_if_match(write.if_match, write.access.etag)
    other = await _other_issue(write, target_key, ("body", "target"))
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
    """Remove a relation, from either of its issues (developers of the issue's project)."""
    session, access = write.session, write.access
    access.project_access.require(Role.developer, "relating issues")
    check_if_match(write.if_match, access.etag)
    other = await _other_issue(write, target_key, ("path", "target"))
    relation = await _stored(session, _edge(access, other, kind))
    if relation is None:
        raise NotFound(f"{access.key} has no relation {kind.value} {other.key}")
    await session.exec(delete(IssueRelation).where(col(IssueRelation.id) == relation.id))
    _record(write, other, kind, ActivityAction.unrelated)
    await session.commit()


async def close_as_duplicate(write: IssueWrite, original_key: str, max_depth: int) -> IssuePublic:
    """Mark the issue a duplicate of another and close it through the workflow, in one
    transaction (developers): either both happen or neither does."""
    write.access.project_access.require(Role.developer, "closing issues as duplicates")
    check_if_match(write.if_match, write.access.etag)
    other = await _other_issue(write, original_key, ("body", "of"))
    if await _stored(write.session, _edge(write.access, other, RelationKind.duplicates)) is None:
        await _stage_relation(write, other, RelationKind.duplicates, max_depth)
    return await issue_service.transition(write, Transition(to=IssueStatus.closed))


def _reach_from(start: int, kind: RelationKind) -> Any:
    """Every relation of ``kind`` reachable from ``start`` along its direction."""
    reach = select(cast(literal(start), Integer).label("id")).cte("reach", recursive=True)
    previous = reach.alias("previous")
    reach = reach.union(
        select(_RELATION.c.target_id).where(
            _RELATION.c.source_id == previous.c.id, _RELATION.c.kind == kind.value
        )
    )
    return select(_RELATION.c.source_id, _RELATION.c.target_id).where(
        _RELATION.c.kind == kind.value, _RELATION.c.source_id.in_(select(reach.c.id))
    )


def _ancestors(start: int, limit: int) -> Any:
    """How many parents above ``start`` (at most ``limit`` + 1 are counted)."""
    up = select(
        cast(literal(start), Integer).label("id"), cast(literal(0), Integer).label("depth")
    ).cte("ancestors", recursive=True)
    below = up.alias("below")
    up = up.union_all(
        select(_RELATION.c.source_id, below.c.depth + 1).where(
            _RELATION.c.target_id == below.c.id,
            _RELATION.c.kind == RelationKind.parent.value,
            below.c.depth <= limit,
        )
    )
    return select(func.max(up.c.depth))


def _path(children: dict[int, list[int]], start: int, goal: int) -> list[int] | None:
    """A shortest path from ``start`` to ``goal`` (breadth first), or None."""
    came_from: dict[int, int | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while (step := came_from[path[-1]]) is not None:
                path.append(step)
            return path[::-1]
        for child in children.get(node, ()):
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    return None


def _height(children: dict[int, list[int]], start: int) -> int:
    """Levels of sub-issues below ``start`` (0 for none)."""
    level, height = [start], 0
    while level := [child for node in level for child in children.get(node, ())]:
        height += 1
    return height


async def _refuse_cycle(
    session: AsyncSession, principal: Principal, edge: Edge, max_depth: int
) -> None:
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(select(func.pg_advisory_xact_lock(_GRAPH_LOCK)))
    source, target = edge.source.issue_id, edge.target.issue_id
    children: dict[int, list[int]] = {}
    for parent, child in await connection.execute(_reach_from(target, edge.kind)):
        children.setdefault(parent, []).append(child)
    path = _path(children, target, source)
    if path is not None:
        cycle = await _keys(session, principal, [source, *path])
        raise Conflict(
            f"{edge.source.key} {edge.kind.value} {edge.target.key} would close a cycle: "
            + " → ".join(cycle),
            extra={"cycle": cycle},
        )
    if edge.kind != RelationKind.parent:
        return
    if await _has_parent(session, target):
        raise Conflict(f"{edge.target.key} already has a parent; an issue has at most one")
    above = (await connection.execute(_ancestors(source, max_depth))).scalar_one() or 0
    depth = above + 1 + _height(children, target)
    if depth > max_depth:
        raise Conflict(
            f"sub-issues nest at most {max_depth} levels deep; this would make {depth}",
            extra={"max_depth": max_depth},
        )


async def _has_parent(session: AsyncSession, issue_id: int) -> bool:
    statement = select_model(col(IssueRelation.id)).where(
        col(IssueRelation.target_id) == issue_id,
        col(IssueRelation.kind) == RelationKind.parent.value,
    )
    return (await session.exec(statement)).first() is not None


async def _keys(session: AsyncSession, principal: Principal, ids: Sequence[int]) -> list[str]:
    """The issues' keys in order; an issue in a project the caller may not see is hidden."""
    statement = (
        select(_ISSUE.c.id, _PROJECT.c.key, _PROJECT.c.deleted_at, _ISSUE.c.number, _MEMBER.c.role)
        .join(_PROJECT, _PROJECT.c.id == _ISSUE.c.project_id)
        .outerjoin(
            _MEMBER,
            and_(_MEMBER.c.project_id == _PROJECT.c.id, _MEMBER.c.user_id == principal.subject),
        )
        .where(_ISSUE.c.id.in_(list(ids)))
    )
    connection = await session.connection()
    known = {
        row.id: f"{row.key}-{row.number}"
        for row in await connection.execute(statement)
        if (row.role is not None or principal.is_admin) and row.deleted_at is None
    }
    return [known.get(issue_id, HIDDEN) for issue_id in ids]


def _relations_of(issue_id: int, principal: Principal, after: int | None, rows: int) -> Any:
    """One statement: the issue's relations in id order, with the other issue, its project
    and the caller's membership there (hidden ones left out), and who made each."""
    mine = or_(_RELATION.c.source_id == issue_id, _RELATION.c.target_id == issue_id)
    statement = (
        select(
            _RELATION.c.id,
            _RELATION.c.kind,
            _RELATION.c.source_id,
            _RELATION.c.created_at,
            _OTHER_PROJECT.c.key.label("project_key"),
            _OTHER.c.number,
            _OTHER.c.title,
            _OTHER.c.status,
            *(_USER.c[name].label(f"user_{name}") for name in SUMMARY_FIELDS),
        )
        .select_from(
            _RELATION.join(
                _OTHER,
                or_(
                    and_(_RELATION.c.source_id == issue_id, _OTHER.c.id == _RELATION.c.target_id),
                    and_(_RELATION.c.target_id == issue_id, _OTHER.c.id == _RELATION.c.source_id),
                ),
            )
            .join(_OTHER_PROJECT, _OTHER_PROJECT.c.id == _OTHER.c.project_id)
            .join(_USER, _USER.c.id == _RELATION.c.created_by)
            .outerjoin(
                _MEMBER,
                and_(
                    _MEMBER.c.project_id == _OTHER_PROJECT.c.id,
                    _MEMBER.c.user_id == principal.subject,
                ),
            )
        )
        .where(mine, _OTHER_PROJECT.c.deleted_at.is_(None))
        .order_by(_RELATION.c.id)
        .limit(rows)
    )
    if not principal.is_admin:
        statement = statement.where(_MEMBER.c.role.is_not(None))
    if after is not None:
        statement = statement.where(_RELATION.c.id > after)
    return statement


def _public(row: Any, issue_id: int) -> RelationPublic:
    return RelationPublic(
        id=row.id,
        kind=seen_as(RelationKind(row.kind), from_source=row.source_id == issue_id),
        issue=RelatedIssue(
            key=f"{row.project_key}-{row.number}", title=row.title, status=row.status
        ),
        created_by=UserSummary(**{name: getattr(row, f"user_{name}") for name in SUMMARY_FIELDS}),
        created_at=row.created_at,
    )


async def relation_page(
    session: AsyncSession, access: IssueAccess, keyset: Keyset
) -> Page[RelationPublic]:
    """The issue's relations, oldest first, as the issue sees them."""
    after = keyset.after("id", (int,))
    statement = _relations_of(
        access.issue_id, access.principal, after[0] if after else None, keyset.fetch
    )
    connection = await session.connection()
    rows = list(await connection.execute(statement))
    return await keyset.page(
        rows,
        sort="id",
        key=lambda row: [row.id],
        build=lambda page: [_public(row, access.issue_id) for row in page],
    )


async def parent_id(session: AsyncSession, principal: Principal, key: str) -> int:
    """The issue the list filter ``parent=`` names; 422 when the caller may not see it."""
    try:
        return (await visible_issue(session, principal, key)).issue_id
    except NotFound:
        raise UnprocessableEntity(f"issue {key} not found", loc=("query", "parent")) from None
