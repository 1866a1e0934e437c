"""Issues, their workflow and their append-only history."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, StringConstraints
from sqlalchemy import CheckConstraint, Index, SmallInteger, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.labels.models import LabelName, LabelPublic
from flyswatter.milestones.models import UNDATED_RANK
from flyswatter.patch import unless_sent
from flyswatter.text import ONE_LINE_AS_SENT, ONE_LINE_DOCUMENTED, MultiLine, SingleLine
from flyswatter.users.models import UserSummary

MAX_DESCRIPTION = 65_536
MAX_LABELS = 50


class IssueType(StrEnum):
    bug = "bug"
    feature = "feature"
    task = "task"


class IssueStatus(StrEnum):
    open = "open"
    in_progress = "in_progress"
    resolved = "resolved"
    closed = "closed"


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Priority).index(self)


# The workflow: forward along open -> in_progress -> resolved -> closed, back to work from
# in progress, reopen from resolved or closed, and close straight from open (won't fix).
TRANSITIONS: dict[IssueStatus, tuple[IssueStatus, ...]] = {
    IssueStatus.open: (IssueStatus.in_progress, IssueStatus.closed),
    IssueStatus.in_progress: (IssueStatus.open, IssueStatus.resolved),
    IssueStatus.resolved: (IssueStatus.closed, IssueStatus.open),
    IssueStatus.closed: (IssueStatus.open,),
}
# The statuses a milestone's progress counts as done.
CLOSED_STATUSES = (IssueStatus.resolved, IssueStatus.closed)

Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    ONE_LINE_AS_SENT,
    ONE_LINE_DOCUMENTED,
]


def _in(column: str, enum: type[StrEnum]) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=f"{column}_known")


class IssueBase(SQLModel):
    title: Title = Field(max_length=200)
    description: MultiLine = Field(default="", max_length=MAX_DESCRIPTION, sa_type=Text)
    type: IssueType = Field(default=IssueType.bug, sa_type=String(10))
    priority: Priority = Field(default=Priority.medium, sa_type=String(10))


class Issue(IssueBase, table=True):
    __table_args__ = (
        UniqueConstraint("project_id", "number"),
        _in("type", IssueType),
        _in("priority", Priority),
        _in("status", IssueStatus),
        # One index per filter the list offers, each ending in the sort key and id so that
        # keyset pages are index range scans (see issues.service.list_issues).
        Index("ix_issue_project_updated", "project_id", "updated_at", "id"),
        Index("ix_issue_project_created", "project_id", "created_at", "id"),
        Index("ix_issue_project_priority", "project_id", "priority_rank", "id"),
        Index("ix_issue_project_status_updated", "project_id", "status", "updated_at", "id"),
        Index("ix_issue_project_assignee_updated", "project_id", "assignee_id", "updated_at", "id"),
        Index("ix_issue_project_reporter_updated", "project_id", "reporter_id", "updated_at", "id"),
        Index(
            "ix_issue_project_milestone_updated", "project_id", "milestone_id", "updated_at", "id"
        ),
        Index("ix_issue_project_milestone_due", "project_id", "milestone_due_rank", "id"),
        # Full-text search within a project (PostgreSQL; SQLite uses LIKE): GIN over the
        # project and the stored document column, which only the migration declares (it is
        # kept off the model so that loading an issue never loads its document).
        Index(
            "ix_issue_search_document",
            "project_id",
            text("search_document"),
            postgresql_using="gin",
        ).ddl_if(dialect="postgresql"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", ondelete="CASCADE")
    number: int
    status: IssueStatus = Field(default=IssueStatus.open, sa_type=String(12))
    # Priority as a number, so "sort by priority" is an index order.
    priority_rank: int = Field(sa_type=SmallInteger)
    reporter_id: str = Field(foreign_key="user.id", max_length=255)
    assignee_id: str | None = Field(default=None, foreign_key="user.id", max_length=255)
    # Detached (NULL) when the milestone is deleted.
    milestone_id: int | None = Field(default=None, foreign_key="milestone.id", ondelete="SET NULL")
    # The milestone's due date as a number (UNDATED_RANK without one), kept by the writers,
    # so that "sort by the milestone's due date" is an index order.
    milestone_due_rank: int = Field(
        default=UNDATED_RANK, sa_column_kwargs={"server_default": str(UNDATED_RANK)}
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Optimistic locking: bumped by every change; the ETag is built from it.
    version: int = Field(default=1)


# The demo user ``dev`` (keycloak/flyswatter-realm.json), a member of DEMO.
_DEMO_DEVELOPER_ID = "9a6e1e0c-4a4b-4c39-9d4e-0a1f5b6c7d03"


class IssueCreate(IssueBase):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Crash on save",
                    "description": "Saving a draft twice closes the app.",
                    "type": "bug",
                    "priority": "high",
                    "assignee_id": _DEMO_DEVELOPER_ID,
                }
            ]
        },
    )

    assignee_id: SingleLine | None = Field(default=None, max_length=255)
    labels: list[LabelName] = Field(default_factory=list, max_length=MAX_LABELS)
    milestone: SingleLine | None = Field(
        default=None, max_length=200, description="A milestone of the project, by title."
    )


class IssueUpdate(SQLModel):
    """Fields to change; absent fields stay. ``assignee_id: null`` unassigns, ``milestone:
    null`` detaches; ``""`` clears the description, ``[]`` the labels."""

    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"priority": "critical"}]}
    )

    title: Title = unless_sent()
    description: MultiLine = unless_sent(max_length=MAX_DESCRIPTION)
    type: IssueType = unless_sent()
    priority: Priority = unless_sent()
    assignee_id: SingleLine | None = Field(default=None, max_length=255)
    labels: list[LabelName] = unless_sent(max_length=MAX_LABELS)
    milestone: SingleLine | None = Field(
        default=None, max_length=200, description="A milestone by title; `null` detaches."
    )


class TransitionRequest(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"to": "in_progress"}]}
    )

    to: IssueStatus


class IssuePublic(IssueBase):
    key: str = Field(schema_extra={"examples": ["DEMO-1"]})
    number: int
    project_key: str
    status: IssueStatus
    reporter: UserSummary
    assignee: UserSummary | None
    labels: list[LabelPublic]
    milestone_id: int | None = Field(description="The issue's milestone, if any.")
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    version: int


class ActivityAction(StrEnum):
    created = "created"
    updated = "updated"
    transitioned = "transitioned"
    assigned = "assigned"
    labeled = "labeled"
    unlabeled = "unlabeled"
    commented = "commented"
    comment_edited = "comment_edited"
    comment_deleted = "comment_deleted"
    related = "related"
    unrelated = "unrelated"
    moved = "moved"
    attached = "attached"
    detached = "detached"


# The entries whose values are the key of another issue, which may be in a project the
# reader of the history (or of the event) may not see.
RELATION_ACTIONS = frozenset({ActivityAction.related, ActivityAction.unrelated})

# How an issue the caller may not see is named where its key would be: in a refused cycle,
# in the history, in an event.
HIDDEN_ISSUE = "(hidden)"


class Activity(SQLModel, table=True):
    """One change to an issue. Rows are only ever inserted, in the changing transaction."""

    __table_args__ = (Index("ix_activity_issue_id_id", "issue_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", ondelete="CASCADE")
    actor_id: str = Field(foreign_key="user.id", max_length=255)
    # The Keycloak client that made the call, for service accounts.
    client_id: str | None = Field(default=None, max_length=255)
    action: ActivityAction = Field(sa_type=String(20))
    # What old_value and new_value are the values of (ACTIVITY_FIELDS); every entry since
    # the activity-fields migration has one (the column stays nullable: SQLite would have to
    # rebuild the table to say otherwise).
    field: str | None = Field(default=None, max_length=50)
    # JSON texts, so every value keeps its type (null, string, integer).
    old_value: str | None = Field(default=None, sa_type=Text)
    new_value: str | None = Field(default=None, sa_type=Text)
    request_id: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


ACTIVITY_FIELDS = (
    "`field` names what `old_value` and `new_value` are, and they keep its type (null where "
    "there is none): `created`: `key` (the issue's key, a string); `updated`: `title`, "
    "`description`, `type`, `priority` or `milestone` (strings; a milestone by its title); "
    "`assigned`: `assignee_id` (a user id or "
    "null); `transitioned`: `status` (a string); `labeled` / `unlabeled`: `label` (one "
    "label's name); `commented`, `comment_edited`, `comment_deleted`: `comment_id` (an "
    "integer: the comment written, edited or deleted); `related` / `unrelated`: the relation's "
    "kind as this issue sees it, e.g. `blocks` or `child` (the other issue's key); `moved`: "
    "`key` (the old and the new key); `attached`, `detached`: `attachment_id` (an integer: "
    "the file attached or deleted)."
)


class ActivityPublic(SQLModel):
    """One change to an issue."""

    id: int
    action: ActivityAction
    field: str = Field(description=ACTIVITY_FIELDS)
    old_value: str | int | None = Field(description="The value before the change, if any.")
    new_value: str | int | None = Field(description="The value after the change, if any.")
    actor: UserSummary
    client_id: str | None
    request_id: str | None
    created_at: datetime
