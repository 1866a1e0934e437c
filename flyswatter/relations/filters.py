"""The issue list's relation filters (``blocked``, ``parent``, ``has_children``): each an
index lookup on the relations per issue of the page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Integer, any_, cast, exists, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from flyswatter.db import table
from flyswatter.issues.models import Issue, IssueStatus
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.relations.models import IssueRelation, RelationKind

if TYPE_CHECKING:
    # The list imports this module; its filters are only named here.
    from flyswatter.issues.listing import IssueFilters


def _seen_project(project_id: Any, user_id: str | None, dialect: str) -> ColumnElement[bool]:
    """``project_id`` is a project the caller may see: not deleted, and one of theirs unless
    they are an admin (``user_id`` None). A blocker or a sub-issue the caller may not see
    does not count, as the relations list leaves it out: the filter would tell of it
    otherwise."""
    seen = select(Project.id).where(col(Project.deleted_at).is_(None))
    if user_id is not None:
        seen = seen.join(ProjectMember).where(ProjectMember.user_id == user_id)
    if dialect != "postgresql":
        return project_id.in_(seen)
    # One array, computed once, tested on each blocker: as IN (SELECT ...), a semi-join, the
    # planner would rather start from the caller's projects and read all their blockers.
    ids = select(func.array_agg(seen.subquery().c.id)).scalar_subquery()
    return project_id == any_(cast(ids, ARRAY(Integer)))


def relation_filters(
    statement: SelectOfScalar[Issue], filters: IssueFilters, dialect: str
) -> SelectOfScalar[Issue]:
    """``blocked``, ``parent`` and ``has_children``: each an index lookup on the relations
    (by target for blockers and parents, by source for children), per issue of the page."""
    relation = table(IssueRelation)
    if filters.blocked is not None:
        blocker = table(Issue).alias("blocker")
        has_open_blocker = (
            exists()
            .where(relation.c.target_id == Issue.id, relation.c.kind == RelationKind.blocks.value)
            .where(
                blocker.c.id == relation.c.source_id,
                blocker.c.status.in_([IssueStatus.open.value, IssueStatus.in_progress.value]),
                _seen_project(blocker.c.project_id, filters.related_seen_by, dialect),
            )
        )
        statement = statement.where(has_open_blocker if filters.blocked else ~has_open_blocker)
    if filters.parent_id is not None:
        statement = statement.where(
            exists().where(
                relation.c.target_id == Issue.id,
                relation.c.kind == RelationKind.parent.value,
                relation.c.source_id == filters.parent_id,
            )
        )
    if filters.has_children is not None:
        child = table(Issue).alias("child")
        has_children = exists().where(
            relation.c.source_id == Issue.id,
            relation.c.kind == RelationKind.parent.value,
            child.c.id == relation.c.target_id,
            _seen_project(child.c.project_id, filters.related_seen_by, dialect),
        )
        statement = statement.where(has_children if filters.has_children else ~has_children)
    return statement
