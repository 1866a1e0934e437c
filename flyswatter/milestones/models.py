"""Milestones: a project's due-dated groups of issues, each issue in at most one."""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ConfigDict, StringConstraints
from sqlalchemy import CheckConstraint, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.patch import unless_sent
from flyswatter.text import ONE_LINE_AS_SENT, ONE_LINE_DOCUMENTED, MultiLine

MAX_DESCRIPTION = 10_000
# The issue list's `milestone=none` means "in no milestone": no milestone may be called so.
NO_MILESTONE = "none"
# The sort rank of an issue in no milestone, or in one without a due date: after every date.
UNDATED_RANK = date.max.toordinal() + 1


def due_rank(due_on: date | None) -> int:
    """The issue list's sort key for a milestone's due date (issue.milestone_due_rank)."""
    return UNDATED_RANK if due_on is None else due_on.toordinal()


def _not_reserved(title: str) -> str:
    if title.lower() == NO_MILESTONE:
        raise ValueError(f"'{NO_MILESTONE}' is reserved: the issue list reads it as no milestone")
    return title


_CALENDAR_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _calendar_date(value: object) -> object:
    # Pydantic reads a number, a number in a string and a midnight datetime as a date too:
    # a client sending 0 for "no due date" would get 1970-01-01. A due date is written
    # YYYY-MM-DD (null removes it); a date object is the model's own (``model_validate``).
    if isinstance(value, date) or (isinstance(value, str) and _CALENDAR_DATE.fullmatch(value)):
        return value
    raise ValueError("a due date is written YYYY-MM-DD")


DueDate = Annotated[date, BeforeValidator(_calendar_date)]

MilestoneTitle = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    ONE_LINE_AS_SENT,
    ONE_LINE_DOCUMENTED,
    AfterValidator(_not_reserved),
]


class MilestoneState(StrEnum):
    open = "open"
    closed = "closed"


class MilestoneBase(SQLModel):
    # Unique in its project: issues name their milestone by title, as they name labels.
    title: MilestoneTitle = Field(max_length=200)
    description: MultiLine = Field(default="", max_length=MAX_DESCRIPTION, sa_type=Text)
    due_on: DueDate | None = Field(default=None, description="The due date, if any.")
    state: MilestoneState = Field(default=MilestoneState.open, sa_type=String(10))


class Milestone(MilestoneBase, table=True):
    __table_args__ = (
        UniqueConstraint("project_id", "title"),
        CheckConstraint("state IN ('open', 'closed')", name="state_known"),
        # The list's order: due date (nulls last), then title.
        Index("ix_milestone_project_due_title", "project_id", "due_on", "title"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # Optimistic locking: bumped by every change; the ETag is built from it.
    version: int = Field(default=1)


class MilestoneCreate(MilestoneBase):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"title": "1.0", "description": "First stable release.", "due_on": "2027-03-31"}
            ]
        },
    )


class MilestoneUpdate(SQLModel):
    """Fields to change; absent fields stay. ``due_on: null`` removes the due date."""

    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"state": "closed"}]}
    )

    title: MilestoneTitle = unless_sent()
    description: MultiLine = unless_sent(max_length=MAX_DESCRIPTION)
    due_on: DueDate | None = None
    state: MilestoneState = unless_sent()


class MilestonePublic(MilestoneBase):
    id: int
    open_issues: int = Field(description="Issues in it whose status is not a closed one.")
    closed_issues: int = Field(description="Issues in it that are resolved or closed.")
    created_at: datetime
    updated_at: datetime
    version: int
