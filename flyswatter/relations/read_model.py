"""An issue's relations as it sees them: one statement a page, the other issue, its project
and who made each relation joined in, relations to issues the caller may not see left out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.db import tables
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues.dependencies import IssueAccess
from flyswatter.issues.models import Issue
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.projects.service import caller_membership
from flyswatter.relations.models import (
    IssueRelation,
    RelatedIssue,
    RelationKind,
    RelationPublic,
    seen_as,
)
from flyswatter.users.models import User, UserSummary
from flyswatter.users.service import SUMMARY_FIELDS

_RELATION, _ISSUE, _PROJECT, _MEMBER, _USER = tables(
    IssueRelation, Issue, Project, ProjectMember, User
)
_OTHER = _ISSUE.alias("other_issue")
_OTHER_PROJECT = _PROJECT.alias("other_project")


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
            .outerjoin(_MEMBER, caller_membership(principal, _OTHER_PROJECT.c.id))
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
