"""Watcher routes: follow and unfollow an issue, its watchers, what the caller watches, and
the caller's auto-follow preference."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from flyswatter.auth.dependencies import IssuesRead, IssuesWrite
from flyswatter.db import SessionDep
from flyswatter.errors import problem_responses
from flyswatter.http.pagination import KeysetDep, Page, lists
from flyswatter.issues.dependencies import (
    IssueAccess,
    IssueForReading,
    IssueKeyPath,
    IssueKeysetDep,
    load_issue_access,
)
from flyswatter.issues.models import IssuePublic
from flyswatter.moves.redirects import successor_headers
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


async def issue_to_follow(
    issue_key: IssueKeyPath, session: SessionDep, response: Response, principal: IssuesWrite
) -> IssueAccess:
    """The issue, as an issue writer holds it (the project row shared, the issue's row
    locked: a member's removal in flight is waited for and seen, and one after it removes
    the follow), in a project that may be archived: following is the caller's own standing,
    not a change of the issue, and one must be able to stop following a read-only project's
    issues. An old key of a moved issue names it, as for writes."""
    access = await load_issue_access(session, principal, issue_key, for_update=True)
    if access.moved is not None:
        response.headers.update(successor_headers(access.moved))
    return access


IssueToFollow = Annotated[IssueAccess, Depends(issue_to_follow)]


@router.get("/issues/{issue_key}/watchers", **lists(WatcherPublic, PROJECT_ERRORS))
async def list_watchers(
    session: SessionDep, access: IssueForReading, keyset: IssueKeysetDep
) -> Page[WatcherPublic]:
    """The people following the issue."""
    return await service.watchers_page(session, access, keyset)


@router.get(MY_WATCH, response_model=WatchStatus, responses=PROJECT_ERRORS)
async def read_my_watch(session: SessionDep, access: IssueForReading) -> WatchStatus:
    """Whether the caller follows the issue."""
    return await service.watch_status(session, access)


@router.put(MY_WATCH, response_model=WatchStatus, responses=problem_responses(409) | PROJECT_ERRORS)
async def follow_issue(session: SessionDep, access: IssueToFollow) -> WatchStatus:
    """Follow the issue (anyone who can see it); following twice changes nothing."""
    return await service.set_following(session, access, following=True)


@router.delete(
    MY_WATCH, response_model=WatchStatus, responses=problem_responses(409) | PROJECT_ERRORS
)
async def unfollow_issue(session: SessionDep, access: IssueToFollow) -> WatchStatus:
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
