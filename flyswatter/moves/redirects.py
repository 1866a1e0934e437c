"""Following an old key of a moved issue to the issue's current key, in one statement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, select
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.auth.tokens import Principal
from flyswatter.db import table, tables
from flyswatter.errors import Problem, problem_responses
from flyswatter.http.headers import api_path
from flyswatter.issues.models import Issue
from flyswatter.moves.models import IssueKeyRedirect
from flyswatter.projects.models import Project, ProjectMember

_REDIRECT, _ISSUE = tables(IssueKeyRedirect, Issue)
_OLD = table(Project).alias("old_project")
_NEW = table(Project).alias("new_project")
_MEMBER = table(ProjectMember)

# The old key's issue where it is now, with the caller's membership there: whoever may not
# see the issue's current project learns nothing of the move. The keys of a deleted project
# answer nothing, as every other route of it does (an admin's restore brings them back).
_SUCCESSOR = (
    select(_NEW.c.key, _ISSUE.c.number, _REDIRECT.c.moved_at, _MEMBER.c.role)
    .select_from(
        _REDIRECT.join(_OLD, _OLD.c.id == _REDIRECT.c.project_id)
        .join(_ISSUE, _ISSUE.c.id == _REDIRECT.c.issue_id)
        .join(_NEW, _NEW.c.id == _ISSUE.c.project_id)
        .outerjoin(
            _MEMBER,
            and_(_MEMBER.c.project_id == _NEW.c.id, _MEMBER.c.user_id == bindparam("subject")),
        )
    )
    .where(
        _OLD.c.key == bindparam("project_key"),
        _REDIRECT.c.number == bindparam("number"),
        _OLD.c.deleted_at.is_(None),
        _NEW.c.deleted_at.is_(None),
    )
)


@dataclass(frozen=True, slots=True)
class Successor:
    """Where an old key's issue is now, and since when."""

    key: str
    moved_at: datetime


async def successor_of(
    session: AsyncSession, principal: Principal, project_key: str, number: int
) -> Successor | None:
    """The current key of the issue that ``project_key-number`` named, if the caller may see it."""
    connection = await session.connection()
    parameters = {"subject": principal.subject, "project_key": project_key, "number": number}
    row = (await connection.execute(_SUCCESSOR, parameters)).first()
    if row is None or (row.role is None and not principal.is_admin):
        return None
    return Successor(key=f"{row.key}-{row.number}", moved_at=row.moved_at)


# What a read of an issue (or of what is below it) may answer for a key the issue had before.
MOVED = problem_responses(301)


class IssueMoved(Problem):
    """A read of a moved issue's old key: ``301`` to where the issue is now.

    Not an error, but answered as the errors are, so that the body says why (and the
    request id is there); ``Location`` carries the new key's URL.
    """

    status, slug, title = 301, "moved-permanently", "Moved permanently"

    def __init__(self, old_key: str, new_key: str, location: str | None = None) -> None:
        super().__init__(
            f"issue {old_key} moved; it is now {new_key}",
            headers={"Location": location or api_path("issues", new_key)},
            extra={"key": new_key},
        )
        self.old_key, self.new_key = old_key, new_key

    def at(self, path: str, query: str) -> IssueMoved:
        """The same answer for a request to a route below the issue (its comments, history)."""
        old = api_path("issues", self.old_key)
        if not path.startswith(old):
            return self
        location = api_path("issues", self.new_key) + path[len(old) :]
        return IssueMoved(self.old_key, self.new_key, location + (f"?{query}" if query else ""))


def successor_headers(successor: Successor) -> dict[str, str]:
    """What a write to an old key is answered with: the key is deprecated (RFC 9745) since
    the move, and its successor is the issue's current URL (RFC 8288)."""
    return {
        "Deprecation": f"@{int(successor.moved_at.timestamp())}",
        "Link": f'<{api_path("issues", successor.key)}>; rel="successor-version"',
    }
