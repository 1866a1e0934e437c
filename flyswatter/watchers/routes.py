"""Watcher routes: follow and unfollow an issue, its watchers, what the caller watches, and
the caller's auto-follow preference."""

from __future__ import annotations

from fastapi import APIRouter

from flyswatter.auth.dependencies import IssuesRead, IssuesWrite
from flyswatter.db import SessionDep
from flyswatter.errors import problem_responses
from flyswatter.http.pagination import KeysetDep, Page, lists
from flyswatter.issues.dependencies import IssueForReading, IssueForWriting
from flyswatter.issues.models import IssuePublic
from flyswatter.projects.service import PROJECT_ERRORS
from flyswatter.watchers import service
from flyswatter.watchers.models import (
    UserPreferencesPublic,
    UserPreferencesUpdate,
    WatcherPublic,
    WatchStatus,
)

router = APIRouter(tags=["watchers"])

MY_WATCH = "/issues/{issue_key}/watchers/me"
AUTH_ERRORS = problem_responses(401, 403, 422, 429)


@router.get("/issues/{issue_key}/watchers", **lists(WatcherPublic, PROJECT_ERRORS))
async def list_watchers(
    session: SessionDep, access: IssueForReading, keyset: KeysetDep
) -> Page[WatcherPublic]:
    """The people following the issue."""
    return await service.watchers_page(session, access, keyset)


@router.get(MY_WATCH, response_model=WatchStatus, responses=PROJECT_ERRORS)
async def read_my_watch(session: SessionDep, access: IssueForReading) -> WatchStatus:
    """Whether the caller follows the issue."""
    return await service.watch_status(session, access)


@router.put(MY_WATCH, response_model=WatchStatus, responses=problem_responses(409) | PROJECT_ERRORS)
async def follow_issue(session: SessionDep, access: IssueForWriting) -> WatchStatus:
    """Follow the issue (anyone who can see it); following twice changes nothing."""
    return await service.set_following(session, access, following=True)


@router.delete(
    MY_WATCH, response_model=WatchStatus, responses=problem_responses(409) | PROJECT_ERRORS
)
async def unfollow_issue(session: SessionDep, access: IssueForWriting) -> WatchStatus:
    """Stop following the issue. Remembered: reporting, being assigned or commenting later
    does not make the caller follow it again (following it explicitly does)."""
    return await service.set_following(session, access, following=False)


@router.get("/users/me/watching", **lists(IssuePublic, AUTH_ERRORS))
async def list_watched_issues(
    session: SessionDep, principal: IssuesRead, keyset: KeysetDep
) -> Page[IssuePublic]:
    """The issues the caller follows, in projects it may still see, latest activity (a change,
    a comment, a file) first."""
    return await service.watching_page(session, principal, keyset)


@router.get("/users/me/preferences", response_model=UserPreferencesPublic, responses=AUTH_ERRORS)
async def read_preferences(session: SessionDep, principal: IssuesRead) -> UserPreferencesPublic:
    """The caller's preferences."""
    return await service.preferences_of(session, principal)


@router.patch("/users/me/preferences", response_model=UserPreferencesPublic, responses=AUTH_ERRORS)
async def update_preferences(
    body: UserPreferencesUpdate, session: SessionDep, principal: IssuesWrite
) -> UserPreferencesPublic:
    """Change the caller's preferences: `auto_follow` false stops following issues on
    reporting, being assigned or commenting (issues already followed stay followed)."""
    return await service.update_preferences(session, principal, body)
