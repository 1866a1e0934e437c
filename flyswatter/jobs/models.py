"""Jobs: work done by Celery workers outside the request, and what a report job is asked for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import ConfigDict, field_validator, model_validator
from sqlalchemy import CheckConstraint, Index, String, Text
from sqlmodel import Field, SQLModel

from flyswatter.config import REPORT_MAX_DAYS
from flyswatter.db import UTCDateTime, utcnow
from flyswatter.issues.models import IssueStatus, IssueType, Priority
from flyswatter.labels.models import LabelName
from flyswatter.storage.models import ArtifactPublic
from flyswatter.text import SingleLine


class JobKind(StrEnum):
    report = "report"


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


def _in(column: str, enum: type[StrEnum]) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=f"{column}_known")


class JobBase(SQLModel):
    kind: JobKind = Field(sa_type=String(20))
    state: JobState = Field(default=JobState.queued, sa_type=String(12))
    attempts: int = Field(default=0, description="Times a worker started this job.")
    error: str | None = Field(
        default=None, max_length=1000, description="Why the job failed, for people."
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Job(JobBase, table=True):
    __table_args__ = (
        _in("kind", JobKind),
        _in("state", JobState),
        # The list's order (newest first) per project and overall, with its filters.
        Index("ix_job_project_created", "project_id", "created_at", "id"),
        Index("ix_job_state_created", "state", "created_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # What clients see and put in URLs: random, so job ids cannot be enumerated.
    public_id: str = Field(max_length=32, unique=True)
    project_id: int = Field(foreign_key="project.id", ondelete="CASCADE")
    requested_by: str = Field(foreign_key="user.id", max_length=255)
    # The request's parameters as JSON (ReportParameters for reports).
    parameters: str = Field(sa_type=Text)
    artifact_id: int | None = Field(default=None, foreign_key="artifact.id", ondelete="SET NULL")
    request_id: str | None = Field(default=None, max_length=128)
    # The worker's hold on a running job: the Celery task id that claimed it and until when.
    # Its run renews the lease while it works; every other run (a redelivery of the same
    # task included) waits for it to lapse. ``attempts`` tells the claims apart (fencing).
    task_id: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # When its message was last handed to the broker; None when that never worked.
    enqueued_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# Where a requested period's bounds may lie: nothing older was tracked here, and a default
# taken from them (``to`` minus the default days) stays far inside what a datetime holds.
PERIOD_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
PERIOD_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class ReportParameters(SQLModel):
    """A report's period and the issue filters the issue list accepts."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)  # type: ignore[assignment]

    from_: datetime | None = Field(
        default=None,
        alias="from",
        description=(
            "Start of the period (inclusive); default: `to` minus 30 days. Between 1970 and"
            f" 2200, before `to`; a period covers at most {REPORT_MAX_DAYS} days."
        ),
    )
    to: datetime | None = Field(
        default=None, description="End of the period, between 1970 and 2200; default: now."
    )
    status: list[IssueStatus] = Field(default_factory=list, max_length=4)
    # The issue list's own filter types: the worker runs these in a query, where PostgreSQL
    # refuses a NUL that a plain str would let through the 202.
    assignee: SingleLine | None = Field(
        default=None, max_length=255, description="A user id, `me`, or `none`."
    )
    reporter: SingleLine | None = Field(
        default=None, max_length=255, description="A user id, or `me`."
    )
    label: list[LabelName] = Field(default_factory=list, max_length=10)
    priority: list[Priority] = Field(default_factory=list, max_length=4)
    type: list[IssueType] = Field(default_factory=list, max_length=3)
    q: SingleLine | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _aware_and_ordered(self) -> ReportParameters:
        for value in (self.from_, self.to):
            if value is not None and value.tzinfo is None:
                raise ValueError("from and to need a UTC offset (e.g. 2026-11-01T00:00:00Z)")
        if self.from_ is not None and self.to is not None and self.from_ >= self.to:
            raise ValueError("from must be before to")
        return self

    def period(self, now: datetime, default_days: int) -> tuple[datetime, datetime]:
        """The period's start and end once the defaults are applied (the one place they are:
        the request is checked, and the report built, with these)."""
        end = self.to or now
        return self.from_ or end - timedelta(days=default_days), end

    def period_problem(self, now: datetime, default_days: int) -> str | None:
        """Why the period, once its defaults are applied, cannot be reported on: it runs
        backwards or is longer than a report covers. None when it can."""
        start, end = self.period(now, default_days)
        if start >= end:
            return "from must be before to (default: now)"
        if end - start > timedelta(days=REPORT_MAX_DAYS):
            return f"a report covers at most {REPORT_MAX_DAYS} days"
        return None


class ReportRequest(ReportParameters):
    """``POST /projects/{key}/reports``: everything is optional. Only a request is held to
    the period's window (stored jobs keep whatever they were asked with)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [{"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}]
        },
    )

    @field_validator("from_", "to")
    @classmethod
    def _in_window(cls, value: datetime | None) -> datetime | None:
        if value is None or value.tzinfo is None:
            # Without an offset, it is refused by the model's check, which says so.
            return value
        if not PERIOD_EARLIEST <= value <= PERIOD_LATEST:
            raise ValueError("must be between 1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z")
        return value


class JobPublic(JobBase):
    id: str = Field(description="The job's public id.")
    project_key: str
    requested_by: str
    parameters: ReportParameters
    artifact: ArtifactPublic | None = None
    links: dict[str, str] = Field(description="`self`, and `artifact` once it exists.")
