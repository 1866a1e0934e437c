"""Events: the transactional outbox every change to an issue writes, and their public shape."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from flyswatter.comments.models import CommentPublic
from flyswatter.db import UTCDateTime, utcnow
from flyswatter.issues.models import ActivityAction, IssuePublic, UserSummary


class EventType(StrEnum):
    issue_created = "issue.created"
    issue_updated = "issue.updated"
    issue_transitioned = "issue.transitioned"
    issue_assigned = "issue.assigned"
    issue_labelled = "issue.labelled"
    comment_created = "comment.created"
    comment_updated = "comment.updated"
    comment_deleted = "comment.deleted"
    issue_deleted = "issue.deleted"


class Event(SQLModel, table=True):
    """One committed change, written in the changing transaction (the outbox).

    ``sequence`` numbers a project's events without gaps in commit order: it is taken under
    the project's ``event_sequence`` row lock, held until the transaction ends, so event N+1
    of a project can only be written once event N is committed (or rolled back, which gives
    its number back). Readers resume after a number and never miss a later commit.
    """

    __table_args__ = (
        UniqueConstraint("project_id", "sequence"),
        CheckConstraint(
            "type IN ({})".format(", ".join(f"'{kind.value}'" for kind in EventType)),
            name="type_known",
        ),
        # Pruning by age.
        Index("ix_event_occurred_at", "occurred_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The public id: Standard Webhooks' ``webhook-id``, the same on every retry.
    uid: str = Field(max_length=40, unique=True)
    project_id: int = Field(foreign_key="project.id", ondelete="CASCADE")
    sequence: int
    type: EventType = Field(sa_type=String(40))
    # No foreign key: an event outlives the issue it tells about.
    issue_id: int | None = None
    actor_id: str = Field(foreign_key="user.id", max_length=255)
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # The event's public JSON document, as delivered and streamed (EventPublic).
    payload: str = Field(sa_type=Text)


class EventSequence(SQLModel, table=True):
    """The last event number handed out in a project; its row lock orders the project's events."""

    __tablename__ = "event_sequence"

    project_id: int = Field(foreign_key="project.id", primary_key=True, ondelete="CASCADE")
    last_sequence: int = 0


class EventChange(SQLModel):
    """One field that changed, as the issue's history records it."""

    action: ActivityAction
    field: str | None
    old: Any = None
    new: Any = None


class EventData(SQLModel):
    issue: IssuePublic = Field(
        description="The issue after the change (for issue.deleted: as it was when deleted)."
    )
    changes: list[EventChange]
    comment: CommentPublic | None = Field(
        default=None,
        description=(
            "The comment, for comment.created and comment.updated; null once the comment"
            " is deleted (its text is not kept, nor sent again)."
        ),
    )
    comment_id: int | None = Field(default=None, description="For every comment event.")
    watchers: list[UserSummary] = Field(
        default=[],
        description="The people following the issue after the change (for notifications).",
    )


class EventPublic(SQLModel):
    """What a webhook receives and the stream sends (Standard Webhooks' payload shape)."""

    id: str = Field(description="Unique; the `webhook-id` of every delivery of this event.")
    type: EventType
    timestamp: datetime = Field(description="When the change was committed.")
    project_key: str
    sequence: int = Field(description="The event's number in its project (the stream's `id:`).")
    actor: UserSummary
    client_id: str | None = Field(description="The Keycloak client, for service accounts.")
    data: EventData
