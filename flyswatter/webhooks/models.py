"""Webhooks: a project's subscriptions, their deliveries and every attempt at one."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, StrictBool
from sqlalchemy import JSON, CheckConstraint, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.patch import unless_sent
from flyswatter.text import MultiLine, SingleLine

MAX_URL = 2000
MAX_EXCERPT = 1000

# The event types a webhook can ask for; ``*`` is every type, today's and later ones.
SubscribedType = Annotated[
    Literal[
        "*",
        "issue.created",
        "issue.updated",
        "issue.transitioned",
        "issue.assigned",
        "issue.labelled",
        "comment.created",
        "comment.updated",
        "comment.deleted",
        "issue.deleted",
    ],
    Field(description="An event type, or `*` for all of them."),
]


def _in(column: str, enum: type[StrEnum]) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=f"{column}_known")


class WebhookBase(SQLModel):
    url: SingleLine = Field(
        max_length=MAX_URL,
        description="Where events are POSTed: https (plain http only where the service "
        "allows it); private and loopback addresses are refused.",
        schema_extra={"examples": ["https://hooks.example.org/flyswatter"]},
    )
    description: MultiLine = Field(default="", max_length=500)


class Webhook(WebhookBase, table=True):
    __table_args__ = (Index("ix_webhook_project_id_id", "project_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", ondelete="CASCADE")
    event_types: list[str] = Field(sa_type=JSON)
    active: bool = True
    # Standard Webhooks secrets (``whsec_`` + base64), encrypted (SecretBox; never stored
    # as they are). The previous one keeps signing, beside the new one, until
    # ``previous_secret_expires_at``, so receivers can roll over.
    secret_sealed: str = Field(max_length=255)
    previous_secret_sealed: str | None = Field(default=None, max_length=255)
    previous_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Failed attempts since the last success; past a threshold the webhook is disabled.
    consecutive_failures: int = 0
    disabled_reason: str | None = Field(default=None, max_length=500)
    disabled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str = Field(foreign_key="user.id", max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class WebhookCreate(WebhookBase):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.org/flyswatter",
                    "event_types": ["issue.created", "issue.transitioned"],
                    "description": "Tell the team chat about new and moved issues",
                }
            ]
        },
    )

    event_types: list[SubscribedType] = Field(default_factory=lambda: ["*"], min_length=1)
    active: StrictBool = True


class WebhookUpdate(SQLModel):
    """Fields to change; absent fields stay. ``active: true`` re-enables a disabled webhook."""

    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"event_types": ["*"]}]}
    )

    url: SingleLine = unless_sent(max_length=MAX_URL)
    event_types: list[SubscribedType] = unless_sent(min_length=1)
    active: StrictBool = unless_sent()
    description: MultiLine = unless_sent(max_length=500)


class SecretRotation(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", json_schema_extra={"examples": [{"overlap_seconds": 3600}]}
    )

    overlap_seconds: int | None = Field(
        default=None,
        ge=0,
        le=7 * 86_400,
        description="How long the old secret keeps signing beside the new one "
        "(default: the service's setting, a day).",
    )


class WebhookPublic(WebhookBase):
    id: int
    event_types: list[str]
    active: bool
    consecutive_failures: int
    disabled_reason: str | None = Field(
        description="Why the service disabled the webhook; PATCH `active: true` to re-enable."
    )
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="Until when deliveries are also signed with the previous secret."
    )
    created_by: str
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookPublic):
    """Answered once, on creation and on rotation: the only time the secret is shown."""

    secret: str = Field(description="The signing secret (Standard Webhooks, `whsec_...`).")


class DeliveryState(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class AttemptOutcome(StrEnum):
    succeeded = "succeeded"
    http_error = "http_error"
    timeout = "timeout"
    connection_error = "connection_error"
    refused_target = "refused_target"


class WebhookDelivery(SQLModel, table=True):
    """One event for one webhook, retried until it succeeds or runs out of attempts."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        _in("state", DeliveryState),
        # The deliverer's claim: pending rows by due time.
        Index("ix_webhook_delivery_state_next_attempt_at", "state", "next_attempt_at"),
        # A webhook's delivery log, newest first.
        Index("ix_webhook_delivery_webhook_id_id", "webhook_id", "id"),
        Index("ix_webhook_delivery_event_id", "event_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(foreign_key="webhook.id", ondelete="CASCADE")
    event_id: int = Field(foreign_key="event.id", ondelete="CASCADE")
    state: DeliveryState = Field(default=DeliveryState.pending, sa_type=String(12))
    attempts: int = 0
    # When the next attempt is due; a claimed delivery's lease, while a worker sends it.
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class WebhookDeliveryAttempt(SQLModel, table=True):
    __tablename__ = "webhook_delivery_attempt"
    __table_args__ = (
        _in("outcome", AttemptOutcome),
        Index("ix_webhook_delivery_attempt_delivery_id_id", "delivery_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="webhook_delivery.id", ondelete="CASCADE")
    number: int
    outcome: AttemptOutcome = Field(sa_type=String(20))
    status_code: int | None = None
    duration_ms: float
    response_excerpt: str | None = Field(default=None, sa_type=Text)
    error: str | None = Field(default=None, max_length=500)
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class AttemptPublic(SQLModel):
    number: int
    outcome: AttemptOutcome
    status_code: int | None
    duration_ms: float
    response_excerpt: str | None = Field(
        description=f"The first {MAX_EXCERPT} characters of the receiver's answer."
    )
    error: str | None
    started_at: datetime


class DeliveryPublic(SQLModel):
    id: int
    event_id: str = Field(description="The event's id, sent as `webhook-id`.")
    event_type: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attempt_log: list[AttemptPublic] = Field(description="Every attempt, oldest first.")
