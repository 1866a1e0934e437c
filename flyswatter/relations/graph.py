"""The graph of relations: ``blocks``, ``parent`` and ``duplicates`` stay acyclic, sub-issues
nest at most so deep.

What the new target already reaches is found with a recursive CTE (the same SQL on SQLite
and PostgreSQL), and the new edge closes a cycle exactly when that set holds the new source.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, cast, func, literal, select
from sqlmodel import col
from sqlmodel import select as select_model
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.db import tables
from flyswatter.errors import Conflict
from flyswatter.issues.dependencies import IssueAccess
from flyswatter.issues.models import HIDDEN_ISSUE, Issue
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.projects.service import caller_membership
from flyswatter.relations.models import IssueRelation, RelationKind

_RELATION, _ISSUE, _PROJECT, _MEMBER = tables(IssueRelation, Issue, Project, ProjectMember)


# Taken (PostgreSQL) before a cycle check, so that two relations written at once cannot each
# pass the check and close a cycle together; relation writes are rare enough to queue.
_GRAPH_LOCK = 0x466C7952


@dataclass(frozen=True, slots=True)
class Edge:
    """A relation between the issue in the path and another one, as a stored row."""

    source: IssueAccess
    target: IssueAccess
    kind: RelationKind


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


async def refuse_cycle(
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
        .outerjoin(_MEMBER, caller_membership(principal, _PROJECT.c.id))
        .where(_ISSUE.c.id.in_(list(ids)))
    )
    connection = await session.connection()
    known = {
        row.id: f"{row.key}-{row.number}"
        for row in await connection.execute(statement)
        if (row.role is not None or principal.is_admin) and row.deleted_at is None
    }
    return [known.get(issue_id, HIDDEN_ISSUE) for issue_id in ids]
