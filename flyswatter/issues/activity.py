"""An issue's history: every change recorded in the changing transaction, read oldest first."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.events.outbox import note_activity, write_deletion_event
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues.dependencies import IssueAccess
from flyswatter.issues.models import (
    HIDDEN_ISSUE,
    RELATION_ACTIONS,
    Activity,
    ActivityAction,
    ActivityPublic,
)
from flyswatter.observability.logs import request_id_var
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.users.service import user_summaries


def record_activity(
    session: AsyncSession,
    principal: Principal,
    issue_id: int,
    action: ActivityAction,
    *,
    field: str,
    old: Any = None,
    new: Any = None,
) -> None:
    """Stage one entry of the history in the session's transaction.

    It names the request by the id its log lines carry, so a change can be traced to them.
    The entry is not added to the session: the commit inserts every entry it staged in one
    statement (``insert_history``), as nothing reads the history back before the commit.
    """
    activity = Activity(
        issue_id=issue_id,
        actor_id=principal.subject,
        client_id=principal.client_id if principal.is_service_account else None,
        action=action,
        field=field,
        old_value=None if old is None else json.dumps(old, default=str),
        new_value=None if new is None else json.dumps(new, default=str),
        request_id=request_id_var.get(),
    )
    # Inserted at commit with the transaction's events (one per issue changed).
    note_activity(session, activity)


_HISTORY = Activity.__table__  # type: ignore[attr-defined]
_HISTORY_COLUMNS = tuple(column.name for column in _HISTORY.columns if not column.primary_key)


def insert_history(connection: Connection, activities: Sequence[Activity]) -> None:
    """Insert the staged entries in one statement, whatever their number.

    Added to the session one by one, they would go one INSERT each on SQLite: the ORM needs
    each new row's id back in order, which SQLite cannot give for a multi-row insert. Nothing
    needs those ids (the events carry the entries' contents), so no RETURNING is asked for.
    """
    rows = [{name: getattr(activity, name) for name in _HISTORY_COLUMNS} for activity in activities]
    connection.execute(insert(_HISTORY), rows)


async def record_deletion(session: AsyncSession, principal: Principal, issue_id: int) -> None:
    """The deletion's event, in the deleting transaction; the issue's history goes with it."""
    client_id = principal.client_id if principal.is_service_account else None
    await session.run_sync(write_deletion_event, issue_id, principal.subject, client_id)


def _project_of(value: Any) -> str | None:
    """The project key of an issue key an entry names (``SEC`` of ``SEC-4``)."""
    return value.rpartition("-")[0].upper() if isinstance(value, str) else None


async def _seen_projects(
    session: AsyncSession, principal: Principal, own: str, page: Sequence[Activity]
) -> set[str]:
    """The projects, of those the page's relation entries name, that the reader may see:
    one statement a page, none when every related issue is in the issue's own project."""
    named = {
        project
        for row in page
        if row.action in RELATION_ACTIONS
        for value in (row.old_value, row.new_value)
        if value is not None and (project := _project_of(json.loads(value))) is not None
    }
    others = named - {own}
    if not others:
        return {own}
    statement = select(Project.key).where(
        col(Project.key).in_(others), col(Project.deleted_at).is_(None)
    )
    if not principal.is_admin:
        statement = statement.join(
            ProjectMember,
            (col(ProjectMember.project_id) == Project.id)
            & (col(ProjectMember.user_id) == principal.subject),
        )
    return {own, *(await session.exec(statement)).all()}


def _value(row: Activity, stored: str | None, seen: set[str]) -> Any:
    value = None if stored is None else json.loads(stored)
    project = _project_of(value)
    if row.action in RELATION_ACTIONS and project is not None and project not in seen:
        # As the relations list leaves the relation out, the history does not name it.
        return HIDDEN_ISSUE
    return value


async def activity_page(
    session: AsyncSession, access: IssueAccess, keyset: Keyset
) -> Page[ActivityPublic]:
    """The issue's history; the key of a related issue in a project the caller may not see
    (or a deleted one) reads ``(hidden)``, decided as it is read: who may see what changes."""
    statement = select(Activity).where(Activity.issue_id == access.issue_id)
    if (after := keyset.after("id", (int,))) is not None:
        statement = statement.where(col(Activity.id) > after[0])
    rows = (await session.exec(statement.order_by(col(Activity.id)).limit(keyset.fetch))).all()

    async def public(page: Sequence[Activity]) -> list[ActivityPublic]:
        actors = await user_summaries(session, [row.actor_id for row in page])
        seen = await _seen_projects(session, access.principal, access.project.key, page)
        return [
            ActivityPublic(
                id=row.id or 0,
                action=row.action,
                # Never empty since the activity-fields migration filled in the old rows.
                field=row.field or "",
                old_value=_value(row, row.old_value, seen),
                new_value=_value(row, row.new_value, seen),
                actor=actors[row.actor_id],
                client_id=row.client_id,
                request_id=row.request_id,
                created_at=row.created_at,
            )
            for row in page
        ]

    return await keyset.page(rows, sort="id", key=lambda row: [row.id], build=public)
