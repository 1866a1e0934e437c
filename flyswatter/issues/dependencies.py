"""Addressing an issue by key, and the issue-or-404 dependencies of the routes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.dependencies import require_scopes
from flyswatter.auth.scopes import Scope
from flyswatter.auth.tokens import Principal
from flyswatter.db import MAX_ROW_ID, SessionDep, first_or_not_found
from flyswatter.errors import NotFound
from flyswatter.http.conditional import ConditionalWrite, ConditionalWriteDep, etag_of
from flyswatter.http.pagination import Keyset, KeysetDep
from flyswatter.issues.models import Issue, IssuePublic
from flyswatter.moves.redirects import IssueMoved, Successor, successor_headers, successor_of
from flyswatter.projects.models import Project
from flyswatter.projects.service import ProjectAccess, ProjectLock, load_project_access

ISSUE_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9]{1,9}-[1-9][0-9]{0,9}$"
_ISSUE_KEY = re.compile(ISSUE_KEY_PATTERN)

IssueKeyPath = Annotated[
    str,
    Path(
        min_length=4,
        max_length=21,
        pattern=ISSUE_KEY_PATTERN,
        description="Project key and number, e.g. `FLY-42`.",
        examples=["DEMO-1"],
    ),
]


def parse_issue_key(issue_key: str) -> tuple[str, int]:
    if not _ISSUE_KEY.match(issue_key):
        raise NotFound(f"issue {issue_key} not found")
    project_key, _, number = issue_key.rpartition("-")
    if int(number) > MAX_ROW_ID:
        raise NotFound(f"issue {issue_key} not found")
    return project_key.upper(), int(number)


@dataclass(slots=True)
class IssueAccess:
    """An issue the caller may see, its project, and the caller's standing there."""

    issue: Issue
    project_access: ProjectAccess
    # Set when the caller named the issue by a key it had before it moved.
    moved: Successor | None = None

    @property
    def project(self) -> Project:
        return self.project_access.project

    @property
    def principal(self) -> Principal:
        return self.project_access.principal

    @property
    def issue_id(self) -> int:
        assert self.issue.id is not None, "a stored issue has an id"
        return self.issue.id

    @property
    def key(self) -> str:
        return f"{self.project.key}-{self.issue.number}"

    @property
    def etag(self) -> str:
        return etag_of("issue", self.issue.id, self.issue.version)


async def load_issue_access(
    session: AsyncSession,
    principal: Principal,
    issue_key: str,
    *,
    for_update: bool = False,
    follow_moves: bool = False,
) -> IssueAccess:
    """The issue and the caller's project standing; 404 when it may not be seen.

    Writers lock the issue row (``for_update``) so that concurrent changes apply one after
    the other and every one of them sees, and bumps, the latest version. An old key of a
    moved issue is a 301 (``IssueMoved``) for readers; writers (and ``follow_moves``, for one
    that writes without the lock) get the issue where it is now, ``moved`` set.
    """
    project_key, number = parse_issue_key(issue_key)
    try:
        return await _load_issue(session, principal, project_key, number, for_update)
    except NotFound:
        successor = await successor_of(session, principal, project_key, number)
        if successor is None:
            raise
    if not (for_update or follow_moves):
        raise IssueMoved(issue_key, successor.key)
    # Writers of an old key change the issue where it is now, and are told of its new key.
    access = await _load_issue(session, principal, *parse_issue_key(successor.key), for_update)
    access.moved = successor
    return access


async def _load_issue(
    session: AsyncSession, principal: Principal, project_key: str, number: int, for_update: bool
) -> IssueAccess:
    # Writers hold the project row (shared) before the issue's: a member's removal, which
    # locks the project first, then waits for them, and they see it when it came first.
    lock: ProjectLock | None = "share" if for_update else None
    access = await load_project_access(session, principal, project_key, lock=lock)
    statement = select(Issue).where(Issue.project_id == access.project_id, Issue.number == number)
    missing = f"issue {project_key}-{number} not found"
    issue = await first_or_not_found(session, statement, missing, for_update=for_update)
    return IssueAccess(issue=issue, project_access=access)


def _issue_access(scope: Scope, *, writing: bool) -> Any:
    async def dependency(
        issue_key: IssueKeyPath,
        session: SessionDep,
        request: Request,
        response: Response,
        # A default rather than Annotated: the scope is a closure variable, which string
        # annotations (PEP 563) could not resolve.
        principal: Principal = require_scopes(scope),
    ) -> IssueAccess:
        try:
            access = await load_issue_access(session, principal, issue_key, for_update=writing)
        except IssueMoved as moved:
            raise moved.at(request.url.path, request.url.query) from None
        if access.moved is not None:
            response.headers.update(successor_headers(access.moved))
        if writing:
            access.project_access.require_active()
        return access

    return Depends(dependency)


# Readers see the issue; writers also hold its row lock, in a project that is not archived.
IssueForReading = Annotated[IssueAccess, _issue_access(Scope.issues_read, writing=False)]


async def _issue_keyset(access: IssueForReading, keyset: KeysetDep) -> Keyset:
    # Signed over the issue's id, not its key: a move changes the key (the next link then
    # redirects, cursor and all) but not which list the cursor was made for.
    return keyset.within(f"issue:{access.issue_id}")


# The page of one of an issue's lists (history, comments, attachments, relations, watchers).
IssueKeysetDep = Annotated[Keyset, Depends(_issue_keyset)]
IssueForWriting = Annotated[IssueAccess, _issue_access(Scope.issues_write, writing=True)]


@dataclass(slots=True)
class IssueWrite:
    """A conditional change of one issue: its session, the locked issue, the client's
    ``If-Match``, and the response whose ``ETag`` will name the version written."""

    session: AsyncSession
    access: IssueAccess
    conditional: ConditionalWrite

    def answer(self, public: IssuePublic) -> IssuePublic:
        self.conditional.tag(self.access.etag)
        return public


async def issue_write(
    session: SessionDep, access: IssueForWriting, conditional: ConditionalWriteDep
) -> IssueWrite:
    return IssueWrite(session, access, conditional)


IssueWriteDep = Annotated[IssueWrite, Depends(issue_write)]
