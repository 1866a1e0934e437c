"""Watching logic: following and unfollowing, following automatically, the people watching
an issue, the issues a person watches, and the preference that switches auto-follow off."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, delete, exists, func, literal, select, true, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.db import UTCDateTime, tables, utcnow
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues.dependencies import IssueAccess
from flyswatter.issues.models import Activity, Issue, IssuePublic
from flyswatter.issues.read_model import (
    ISSUES_WITH_PEOPLE,
    PUBLIC_ISSUE_COLUMNS,
    labels_of,
    public_issue,
)
from flyswatter.projects.models import Project, ProjectMember
from flyswatter.projects.service import caller_membership
from flyswatter.users.models import User, UserSummary
from flyswatter.users.service import SUMMARY_FIELDS
from flyswatter.watchers.models import (
    UserPreferences,
    UserPreferencesPublic,
    UserPreferencesUpdate,
    Watcher,
    WatcherPublic,
    WatchStatus,
)

_WATCHER, _PREFERENCES, _USER, _ISSUE, _PROJECT, _MEMBER, _ACTIVITY = tables(
    Watcher, UserPreferences, User, Issue, Project, ProjectMember, Activity
)

WATCHING_SORT = "-last_activity"
WATCHERS_SORT = "user_id"
_WATCHER_COLUMNS = ("issue_id", "user_id", "following", "automatic", "created_at", "updated_at")


def _insert(session: AsyncSession) -> Any:
    bind = session.get_bind()
    return (postgresql if bind.dialect.name == "postgresql" else sqlite).insert


async def auto_follow(
    session: AsyncSession, issue_ids: Iterable[int], user_ids: Iterable[str | None]
) -> None:
    """These people follow these issues, in the session's transaction, unless they switched
    auto-follow off or once unfollowed one; one statement, whatever their numbers (a bulk
    change of assignee makes the new assignee follow every issue it reached)."""
    issues = sorted(set(issue_ids))
    wanted = sorted({user_id for user_id in user_ids if user_id})
    if not issues or not wanted:
        return
    now = literal(utcnow(), type_=UTCDateTime())
    opted_out = exists().where(
        _PREFERENCES.c.user_id == _USER.c.id, _PREFERENCES.c.auto_follow.is_(False)
    )
    source = (
        select(_ISSUE.c.id, _USER.c.id, true(), true(), now, now)
        # Every issue with every person: an explicit join, so that no cartesian-product
        # warning is raised for a product that is meant.
        .select_from(_ISSUE.join(_USER, true()))
        .where(_ISSUE.c.id.in_(issues), _USER.c.id.in_(wanted), ~opted_out)
    )
    statement = (
        _insert(session)(_WATCHER)
        .from_select(_WATCHER_COLUMNS, source)
        .on_conflict_do_nothing(index_elements=["issue_id", "user_id"])
    )
    await session.exec(statement)


async def set_following(session: AsyncSession, access: IssueAccess, following: bool) -> WatchStatus:
    """Follow or unfollow, asked for by the caller; an unfollow is remembered."""
    now = utcnow()
    statement = _insert(session)(_WATCHER).values(
        issue_id=access.issue_id,
        user_id=access.principal.subject,
        following=following,
        automatic=False,
        created_at=now,
        updated_at=now,
    )
    statement = statement.on_conflict_do_update(
        index_elements=["issue_id", "user_id"],
        set_={"following": following, "automatic": False, "updated_at": now},
    )
    await session.exec(statement)
    await session.commit()
    return WatchStatus(issue_key=access.key, following=following)


# The watcher rows are who is named as following an issue, in its list and in every event of
# it; so they hold only people who may see the issue, kept so where someone stops being able
# to (a member leaves, the issue moves), not filtered by each reader. An unfollow row names
# no one, and stays: the choice holds should they come back.


async def member_left_watching(session: AsyncSession, project_id: int, user_id: str) -> None:
    """Someone left the project: they follow none of its issues any more."""
    issues = select(_ISSUE.c.id).where(_ISSUE.c.project_id == project_id)
    await session.exec(
        delete(_WATCHER).where(
            _WATCHER.c.user_id == user_id,
            _WATCHER.c.following.is_(True),
            _WATCHER.c.issue_id.in_(issues),
        )
    )


async def moved_out_of_reach(
    session: AsyncSession, issue_id: int, source_id: int, destination_id: int
) -> None:
    """The issue moves from project ``source_id`` to ``destination_id``: who saw it as a
    member of the first and is no member of the second follows it no more.

    A follower who was no member of the first saw it as an admin (a role of the token, not
    stored), and sees it in the second too: their follow stays.
    """

    def member_of(project_id: int) -> Any:
        return exists().where(
            _MEMBER.c.project_id == project_id, _MEMBER.c.user_id == _WATCHER.c.user_id
        )

    await session.exec(
        delete(_WATCHER).where(
            _WATCHER.c.issue_id == issue_id,
            _WATCHER.c.following.is_(True),
            member_of(source_id),
            ~member_of(destination_id),
        )
    )


def watchers_statement(issue_id: int, after: list[Any] | None, rows: int) -> Select[Any]:
    statement = (
        select(
            _WATCHER.c.automatic,
            _WATCHER.c.created_at,
            *(_USER.c[name] for name in SUMMARY_FIELDS),
        )
        .join(_USER, _USER.c.id == _WATCHER.c.user_id)
        .where(_WATCHER.c.issue_id == issue_id, _WATCHER.c.following.is_(True))
    )
    if after is not None:
        statement = statement.where(_WATCHER.c.user_id > after[0])
    return statement.order_by(_WATCHER.c.user_id).limit(rows)


async def watchers_page(
    session: AsyncSession, access: IssueAccess, keyset: Keyset
) -> Page[WatcherPublic]:
    """The people following the issue, by user id."""
    after = keyset.after(WATCHERS_SORT, (str,))
    connection = await session.connection()
    rows = list(await connection.execute(watchers_statement(access.issue_id, after, keyset.fetch)))
    return await keyset.page(
        rows,
        sort=WATCHERS_SORT,
        key=lambda row: [row.id],
        build=lambda page: [
            WatcherPublic(
                user=UserSummary.model_validate(
                    {name: row._mapping[name] for name in SUMMARY_FIELDS}
                ),
                automatic=row.automatic,
                since=row.created_at,
            )
            for row in page
        ],
    )


# An issue's latest entry of history (every change, comment and file writes one), read from
# the end of its (issue_id, id) index; ids grow with time, and number the entries uniquely.
_LAST_ACTIVITY = (
    select(func.coalesce(func.max(_ACTIVITY.c.id), 0))
    .where(_ACTIVITY.c.issue_id == _ISSUE.c.id)
    .scalar_subquery()
)


def watching_statement(principal: Principal, after: list[Any] | None, rows: int) -> Select[Any]:
    """The issues the caller follows in projects it may still see, latest activity first."""
    statement = (
        select(
            _PROJECT.c.key.label("project_key"),
            _LAST_ACTIVITY.label("last_activity"),
            *PUBLIC_ISSUE_COLUMNS,
        )
        .select_from(
            ISSUES_WITH_PEOPLE.join(_WATCHER, _WATCHER.c.issue_id == _ISSUE.c.id)
            .join(_PROJECT, _PROJECT.c.id == _ISSUE.c.project_id)
            .outerjoin(_MEMBER, caller_membership(principal, _ISSUE.c.project_id))
        )
        .where(
            _WATCHER.c.user_id == principal.subject,
            _WATCHER.c.following.is_(True),
            _PROJECT.c.deleted_at.is_(None),
        )
    )
    if not principal.is_admin:
        statement = statement.where(_MEMBER.c.role.is_not(None))
    if after is not None:
        last_activity, issue_id = after
        start = tuple_(literal(last_activity), literal(issue_id))
        statement = statement.where(tuple_(_LAST_ACTIVITY, _ISSUE.c.id) < start)
    return statement.order_by(_LAST_ACTIVITY.desc(), _ISSUE.c.id.desc()).limit(rows)


async def watching_page(
    session: AsyncSession, principal: Principal, keyset: Keyset
) -> Page[IssuePublic]:
    after = keyset.after(WATCHING_SORT, (int, int))
    connection = await session.connection()
    rows = list(await connection.execute(watching_statement(principal, after, keyset.fetch)))

    async def build(page: list[Any]) -> list[IssuePublic]:
        labels = await labels_of(session, [row.id for row in page])
        return [public_issue(row, row.project_key, labels) for row in page]

    return await keyset.page(
        rows,
        sort=WATCHING_SORT,
        key=lambda row: [row.last_activity, row.id],
        build=build,
    )


async def preferences_of(session: AsyncSession, principal: Principal) -> UserPreferencesPublic:
    row = await session.get(UserPreferences, principal.subject)
    return UserPreferencesPublic.model_validate(row) if row else UserPreferencesPublic()


async def update_preferences(
    session: AsyncSession, principal: Principal, body: UserPreferencesUpdate
) -> UserPreferencesPublic:
    changes = body.model_dump(exclude_unset=True)
    if changes:
        now = utcnow()
        statement = _insert(session)(_PREFERENCES).values(
            user_id=principal.subject, updated_at=now, **changes
        )
        statement = statement.on_conflict_do_update(
            index_elements=["user_id"], set_={"updated_at": now, **changes}
        )
        await session.exec(statement)
        await session.commit()
    return await preferences_of(session, principal)


async def watch_status(session: AsyncSession, access: IssueAccess) -> WatchStatus:
    row = await session.get(Watcher, (access.issue_id, access.principal.subject))
    return WatchStatus(issue_key=access.key, following=bool(row and row.following))
