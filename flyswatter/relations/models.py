"""Relations between two issues: stored once, with a direction; read from either side."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, StringConstraints
from sqlalchemy import CheckConstraint, Index, String, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.issues.dependencies import ISSUE_KEY_PATTERN
from flyswatter.issues.models import IssueStatus
from flyswatter.users.models import UserSummary

IssueKey = Annotated[str, StringConstraints(min_length=4, max_length=21, pattern=ISSUE_KEY_PATTERN)]


class RelationKind(StrEnum):
    """A relation as one issue sees it: ``<this issue> <kind> <the other>``."""

    blocks = "blocks"
    blocked_by = "blocked_by"
    duplicates = "duplicates"
    duplicated_by = "duplicated_by"
    relates_to = "relates_to"
    # ``FLY-1 parent FLY-2``: FLY-2 is a sub-issue of FLY-1; ``FLY-2 child FLY-1`` says the same.
    parent = "parent"
    child = "child"

    @property
    def stored(self) -> RelationKind:
        """The kind of the row that stores it: its source's (one of ``STORED_KINDS``)."""
        return _STORED[self][0]

    @property
    def reversed(self) -> bool:
        """Whether this issue is the stored row's target rather than its source."""
        return _STORED[self][1]

    @property
    def inverse(self) -> RelationKind:
        """The same relation as the other issue sees it."""
        return seen_as(self.stored, from_source=self.reversed)


# Each kind as stored (the source's kind) and whether the issue is the row's target.
_STORED: dict[RelationKind, tuple[RelationKind, bool]] = {
    kind: (stored, stored != kind)
    for stored, inverse in (
        (RelationKind.blocks, RelationKind.blocked_by),
        (RelationKind.duplicates, RelationKind.duplicated_by),
        (RelationKind.relates_to, RelationKind.relates_to),
        (RelationKind.parent, RelationKind.child),
    )
    for kind in (stored, inverse)
}
STORED_KINDS = tuple(dict.fromkeys(stored for stored, _ in _STORED.values()))


def seen_as(kind: RelationKind, *, from_source: bool) -> RelationKind:
    """The public kind of a stored row, as its source (or its target) sees it."""
    for public, (stored, reversed_) in _STORED.items():
        if stored == kind and reversed_ != from_source:
            return public
    # relates_to reads the same from both sides.
    return RelationKind.relates_to


class IssueRelation(SQLModel, table=True):
    """One relation between two issues, stored once; the other side's kind is derived."""

    __tablename__ = "issue_relation"
    __table_args__ = (
        # The source's relations, and the filters `has_children` and `parent=`.
        UniqueConstraint("source_id", "kind", "target_id"),
        # The target's relations, and the filter `blocked`.
        Index("ix_issue_relation_target_id_kind_source_id", "target_id", "kind", "source_id"),
        # An issue has at most one parent.
        Index(
            "uq_issue_relation_one_parent",
            "target_id",
            unique=True,
            sqlite_where=text("kind = 'parent'"),
            postgresql_where=text("kind = 'parent'"),
        ),
        CheckConstraint("source_id <> target_id", name="not_self"),
        CheckConstraint(
            "kind IN ({})".format(", ".join(f"'{kind.value}'" for kind in STORED_KINDS)),
            name="kind_known",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    source_id: int = Field(foreign_key="issue.id", ondelete="CASCADE")
    target_id: int = Field(foreign_key="issue.id", ondelete="CASCADE")
    # One of STORED_KINDS: the source's view of the relation.
    kind: RelationKind = Field(sa_type=String(12))
    created_by: str = Field(foreign_key="user.id", max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class RelationCreate(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"kind": "blocks", "target": "DEMO-2"}]}
    )

    kind: RelationKind = Field(description="`<this issue> <kind> <target>`.")
    target: IssueKey = Field(description="The other issue's key.")


class DuplicateOf(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"of": "DEMO-2"}]}
    )

    of: IssueKey = Field(description="The original issue's key.")


class RelatedIssue(SQLModel):
    """The other issue of a relation, in short."""

    key: str = Field(schema_extra={"examples": ["DEMO-2"]})
    title: str
    status: IssueStatus


class RelationPublic(SQLModel):
    """A relation as the issue in the path sees it: ``<that issue> <kind> <issue>``."""

    id: int
    kind: RelationKind
    issue: RelatedIssue
    created_by: UserSummary
    created_at: datetime
