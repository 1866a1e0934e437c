"""Comments on issues."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, StringConstraints
from sqlalchemy import Index, Text
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
