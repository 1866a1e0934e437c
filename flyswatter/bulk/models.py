"""Bulk changes: one change to many issues of a project, and what became of each."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import ConfigDict, StringConstraints, model_validator
from sqlmodel import Field, SQLModel

from flyswatter.errors import ProblemDetails
from flyswatter.issues.dependencies import ISSUE_KEY_PATTERN
from flyswatter.issues.models import MAX_LABELS, IssuePublic, IssueStatus, Priority
from flyswatter.labels.models import LabelName
from flyswatter.patch import unless_sent
from flyswatter.text import ONE_LINE, SingleLine

MAX_BULK_ISSUES = 100

IssueKey = Annotated[
    str, StringConstraints(min_length=4, max_length=21, pattern=ISSUE_KEY_PATTERN), ONE_LINE
]


class BulkChange(SQLModel):
    """What to change on every issue; absent fields stay. ``assignee_id: null`` unassigns,
    ``milestone: null`` detaches."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    status: IssueStatus = unless_sent(
        description="Moved there through the workflow's transitions; an issue already there "
        "is `unchanged`."
    )
    assignee_id: SingleLine | None = Field(default=None, max_length=255)
    add_labels: list[LabelName] = Field(default_factory=list, max_length=MAX_LABELS)
    remove_labels: list[LabelName] = Field(default_factory=list, max_length=MAX_LABELS)
    milestone: SingleLine | None = Field(
        default=None, max_length=200, description="A milestone of the project, by title."
    )
    priority: Priority = unless_sent()

    @model_validator(mode="after")
    def _one_change_at_least(self) -> Self:
        if not self.model_fields_set - {"add_labels", "remove_labels"} and not (
            self.add_labels or self.remove_labels
        ):
            raise ValueError("name at least one thing to change")
        if both := set(self.add_labels) & set(self.remove_labels):
            raise ValueError(f"labels both added and removed: {', '.join(sorted(both))}")
        return self


class BulkUpdate(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "issues": ["DEMO-1", "DEMO-2"],
                    "change": {"status": "in_progress", "add_labels": ["bug"]},
                }
            ]
        },
    )

    issues: list[IssueKey] = Field(
        min_length=1, max_length=MAX_BULK_ISSUES, description="Keys of the project's issues."
    )
    change: BulkChange

    @model_validator(mode="after")
    def _each_issue_once(self) -> Self:
        if len({key.upper() for key in self.issues}) != len(self.issues):
            raise ValueError("each issue may be named once")
        return self


class BulkOutcome(StrEnum):
    applied = "applied"
    unchanged = "unchanged"
    failed = "failed"


class BulkItem(SQLModel):
    """What became of one issue: changed (its new version), already so, or refused, why."""

    key: str
    outcome: BulkOutcome
    issue: IssuePublic | None = Field(default=None, description="Unless it failed.")
    problem: ProblemDetails | None = Field(
        default=None, description="Why it failed, as the single change would have answered."
    )


class BulkResult(SQLModel):
    items: list[BulkItem] = Field(description="One per issue named, in the request's order.")
