"""Comments on issues."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, StringConstraints
from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.text import NOT_BLANK, MultiLine
from flyswatter.users.models import UserSummary

MAX_BODY = 65_536

# Not whitespace only, yet stored as sent: Markdown reads leading spaces.
Body = Annotated[MultiLine, StringConstraints(min_length=1, max_length=MAX_BODY), NOT_BLANK]


class CommentBase(SQLModel):
    body: Body = Field(sa_type=Text, description="Markdown text.")


class Comment(CommentBase, table=True):
    __table_args__ = (Index("ix_comment_issue_id_id", "issue_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", ondelete="CASCADE")
    author_id: str = Field(foreign_key="user.id", max_length=255)
    # Bumped by every edit; the ETag is built from it.
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    edited_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CommentRevision(SQLModel, table=True):
    """A text a comment had, kept when an edit replaced it: the comment's history, as
    trackers show it ("edited"). Removed with the comment; its text can be removed on its
    own (a pasted secret edited out stays in the history otherwise), leaving who wrote it
    and when, and who removed it."""

    __tablename__ = "comment_revision"
    __table_args__ = (UniqueConstraint("comment_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    comment_id: int = Field(foreign_key="comment.id", ondelete="CASCADE")
    # The last version of the comment that had this text.
    version: int
    body: str | None = Field(default=None, sa_type=Text)
    written_by_id: str = Field(foreign_key="user.id", max_length=255)
    written_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    # Who made the edit that replaced it: who wrote the next text.
    replaced_by_id: str = Field(foreign_key="user.id", max_length=255)
    replaced_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    removed_by_id: str | None = Field(default=None, foreign_key="user.id", max_length=255)
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CommentCreate(CommentBase):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"body": "Reproduced on 1.4.2."}]}
    )


class CommentUpdate(CommentBase):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={"examples": [{"body": "Reproduced on 1.4.2 and 1.5.0."}]},
    )


class CommentPublic(CommentBase):
    id: int
    issue_key: str
    author_id: str
    author: UserSummary
    created_at: datetime
    updated_at: datetime
    edited: bool
    edited_at: datetime | None
    version: int


class CommentRevisionPublic(SQLModel):
    version: int = Field(
        description="The last version of the comment that had this text (a move of its"
        " issue gives the comment a new version too); what removing it names."
    )
    body: str | None = Field(description="The text; `null` once removed from the history.")
    written_by: UserSummary
    written_at: datetime
    replaced_by: UserSummary = Field(description="Who made the edit that replaced it.")
    replaced_at: datetime = Field(description="When that edit was made.")
    removed_by: UserSummary | None
    removed_at: datetime | None
