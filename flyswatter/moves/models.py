"""The keys a moved issue had: each still names it, in one lookup however often it moved."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, StringConstraints
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow


class IssueKeyRedirect(SQLModel, table=True):
    """An old key (project and number) of an issue that moved; it points at the issue itself,
    so a chain of moves resolves in one step."""

    __tablename__ = "issue_key_redirect"

    project_id: int = Field(foreign_key="project.id", primary_key=True, ondelete="CASCADE")
    number: int = Field(primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", ondelete="CASCADE", index=True)
    moved_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class MoveRequest(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"project": "MINE"}]}
    )

    project: Annotated[
        str, StringConstraints(min_length=2, max_length=10, pattern=r"^[A-Za-z][A-Za-z0-9]{1,9}$")
    ] = Field(description="The key of the project to move the issue to.")
