"""Following issues: who watches what, and each person's choice about following automatically."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, StrictBool
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.patch import unless_sent
from flyswatter.users.models import UserSummary


class Watcher(SQLModel, table=True):
    """One person's standing on one issue: following it, or having unfollowed it.

    An unfollow keeps the row (``following`` false), so that reporting, being assigned or
    commenting later does not make the person follow the issue again; only following it
    explicitly does.
    """

    # The caller's watched issues ("watching"); the primary key serves an issue's watchers.
    __table_args__ = (Index("ix_watcher_user_id_issue_id", "user_id", "issue_id"),)

    issue_id: int = Field(foreign_key="issue.id", primary_key=True, ondelete="CASCADE")
    user_id: str = Field(foreign_key="user.id", primary_key=True, max_length=255)
    following: bool = True
    # Followed by reporting, being assigned or commenting, rather than by asking.
    automatic: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class WatcherPublic(SQLModel):
    """Someone following the issue."""

    user: UserSummary
    automatic: bool = Field(description="Followed by reporting, being assigned or commenting.")
    since: datetime


class WatchStatus(SQLModel):
    """Whether the caller follows the issue."""

    issue_key: str
    following: bool


class UserPreferencesBase(SQLModel):
    auto_follow: bool = Field(
        default=True,
        description="Follow the issues one reports, is assigned or comments on.",
    )


class UserPreferences(UserPreferencesBase, table=True):
    __tablename__ = "user_preferences"

    user_id: str = Field(foreign_key="user.id", primary_key=True, max_length=255)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class UserPreferencesUpdate(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"auto_follow": False}]}
    )

    # Strict: a JSON 0 or "no" is a client bug, not a choice.
    auto_follow: StrictBool = unless_sent()


class UserPreferencesPublic(UserPreferencesBase):
    pass
