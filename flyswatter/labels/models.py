"""Labels: per-project names with a colour, attached to issues."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import ConfigDict, StringConstraints
from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.patch import unless_sent
from flyswatter.text import ONE_LINE, MultiLine, SingleLine

COLOR_PATTERN = r"^#[0-9a-fA-F]{6}$"
# No slash, no outer space, no control character, not only dots ("." and ".." are dot
# segments, which clients remove from a URL); as a JSON schema pattern too, so without a
# look-ahead (Rust's regex has none): after any leading dots, some character is not a dot.
_END = r"[^\s/\u0000-\u001f\u007f-\u009f]"
_INNER = r"[^/\u0000-\u001f\u007f-\u009f\u2028\u2029]"
_END_NOT_DOT = r"[^\s/.\u0000-\u001f\u007f-\u009f]"
_INNER_NOT_DOT = r"[^/.\u0000-\u001f\u007f-\u009f\u2028\u2029]"
LABEL_NAME_PATTERN = (
    rf"^(?:{_END_NOT_DOT}(?:{_INNER}*{_END})?"
    rf"|\.+(?:{_END_NOT_DOT}|{_INNER_NOT_DOT}{_INNER}*{_END}))$"
)

LabelName = Annotated[
    str, StringConstraints(min_length=1, max_length=50, pattern=LABEL_NAME_PATTERN), ONE_LINE
]
Color = Annotated[str, StringConstraints(pattern=COLOR_PATTERN), ONE_LINE]
# A label named in the path is only looked up, never stored: a name the pattern refuses is
# simply not found (404).
LabelNamePath = Annotated[
    SingleLine, Path(min_length=1, max_length=50, description="Label name.", examples=["bug"])
]


class LabelBase(SQLModel):
    # No slashes or outer spaces: names appear in URLs (``/labels/{name}``).
    name: LabelName = Field(max_length=50)
    color: Color = Field(max_length=7, schema_extra={"examples": ["#d73a4a"]})
    description: MultiLine = Field(default="", max_length=500)


class Label(LabelBase, table=True):
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def label_id(label: Label) -> int:
    assert label.id is not None, "a stored label has an id"
    return label.id


class LabelCreate(LabelBase):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "bug", "color": "#d73a4a", "description": "Something broke"}]
        },
    )


class LabelUpdate(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"color": "#b60205"}]}
    )

    name: LabelName = unless_sent()
    color: Color = unless_sent()
    description: MultiLine = unless_sent(max_length=500)


class LabelPublic(LabelBase):
    """A label as clients see it: its shared fields, nothing of its storage."""


class IssueLabel(SQLModel, table=True):
    __tablename__ = "issue_label"
    __table_args__ = (
        # "Issues with this label": the label filter starts from the label.
        Index("ix_issue_label_label_id_issue_id", "label_id", "issue_id"),
    )

    issue_id: int = Field(foreign_key="issue.id", primary_key=True, ondelete="CASCADE")
    label_id: int = Field(foreign_key="label.id", primary_key=True, ondelete="CASCADE")
