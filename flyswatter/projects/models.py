"""Projects and their members."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, StrictBool, StringConstraints
from sqlalchemy import CheckConstraint, Index, String
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.patch import unless_sent
from flyswatter.text import ONE_LINE, ONE_LINE_AS_SENT, ONE_LINE_DOCUMENTED, MultiLine

PROJECT_KEY_PATTERN = r"^[A-Z][A-Z0-9]{1,9}$"
# As an issue's title: stored without its surrounding whitespace; blank is a 422.
ProjectName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    ONE_LINE_AS_SENT,
    ONE_LINE_DOCUMENTED,
]


class Role(StrEnum):
    """Membership roles, each including everything the ones before it may do."""

    viewer = "viewer"
    reporter = "reporter"
    developer = "developer"
    maintainer = "maintainer"

    @property
    def rank(self) -> int:
        return _ROLE_ORDER.index(self)

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


_ROLE_ORDER = list(Role)


class ProjectBase(SQLModel):
    name: ProjectName = Field(max_length=200)
    description: MultiLine = Field(default="", max_length=10_000)


class Project(ProjectBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # Issue keys start with it (FLY-42); starting with a letter keeps keys unambiguous.
    key: str = Field(max_length=10, unique=True)
    created_by: str = Field(foreign_key="user.id", max_length=255)
    archived: bool = Field(default=False)
    # Set by DELETE: the project and everything beneath it are gone for every route, while
    # the rows are kept for an admin to restore. Its key stays taken meanwhile.
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The last issue number handed out; incremented under a row lock (see issues.references).
    last_issue_number: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class ProjectCreate(ProjectBase):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={"examples": [{"key": "MINE", "name": "My project"}]},
    )

    # SQLModel's Field drops ``regex=``; the pattern has to ride on the type to be enforced.
    key: Annotated[str, StringConstraints(pattern=PROJECT_KEY_PATTERN), ONE_LINE] = Field(
        description="2-10 capital letters or digits, starting with a letter; issue keys "
        "start with it.",
        schema_extra={"examples": ["MINE"]},
    )


class ProjectUpdate(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={"examples": [{"description": "Where the demo users try things."}]},
    )

    name: ProjectName = unless_sent()
    description: MultiLine = unless_sent(max_length=10_000)
    # Strict: a JSON 0 or "yes" is a client bug, not a request to unarchive.
    archived: StrictBool = unless_sent()


class ProjectPublic(ProjectBase):
    key: str
    created_by: str
    archived: bool
    created_at: datetime
    updated_at: datetime
    role: Role | None = Field(
        default=None,
        description="The caller's role in the project (admins without membership: null).",
    )


class ProjectMember(SQLModel, table=True):
    __tablename__ = "project_member"
    __table_args__ = (
        CheckConstraint(
            "role IN ('viewer', 'reporter', 'developer', 'maintainer')", name="role_known"
        ),
        # "Which projects may this user see": the projects list starts here.
        Index("ix_project_member_user_id_project_id", "user_id", "project_id"),
    )

    project_id: int = Field(foreign_key="project.id", primary_key=True, ondelete="CASCADE")
    user_id: str = Field(foreign_key="user.id", primary_key=True, max_length=255)
    role: Role = Field(sa_type=String(20))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class MemberUpsert(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"role": "developer"}]}
    )

    role: Role


class MemberPublic(SQLModel):
    user_id: str
    username: str
    name: str | None
    is_service_account: bool
    role: Role
    created_at: datetime
