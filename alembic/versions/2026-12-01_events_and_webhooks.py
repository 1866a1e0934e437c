"""Events and webhooks: the outbox, each project's event numbering, subscriptions, deliveries.

``event`` is the transactional outbox (one row per committed change, numbered per project by
``event_sequence``); ``webhook`` holds a project's subscriptions and their signing secrets (encrypted);
``webhook_delivery`` is one event for one webhook, retried until it settles, and
``webhook_delivery_attempt`` the log of every attempt. Deleting an event (pruning) deletes
its deliveries and their attempts.

Revision ID: 061d766b1c2f
Revises: 5d7f2a9c4e18
Create Date: 2026-12-01 09:40:51.057631

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "061d766b1c2f"
down_revision: str | Sequence[str] | None = "5d7f2a9c4e18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=True),
        sa.Column("actor_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("occurred_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "type IN ('issue.created', 'issue.updated', 'issue.transitioned', 'issue.assigned', 'issue.labelled', 'comment.created', 'comment.updated', 'comment.deleted', 'issue.deleted')",
            name=op.f("ck_event_type_known"),
        ),
        sa.ForeignKeyConstraint(["actor_id"], ["user.id"], name=op.f("fk_event_actor_id_user")),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_event_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event")),
        sa.UniqueConstraint("project_id", "sequence", name=op.f("uq_event_project_id_sequence")),
        sa.UniqueConstraint("uid", name=op.f("uq_event_uid")),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_occurred_at", ["occurred_at"], unique=False)

    op.create_table(
        "event_sequence",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_event_sequence_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_event_sequence")),
    )
    op.create_table(
        "webhook",
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("secret_sealed", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column(
            "previous_secret_sealed", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True
        ),
        sa.Column(
            "previous_secret_expires_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("disabled_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("disabled_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["user.id"], name=op.f("fk_webhook_created_by_user")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_webhook_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook")),
    )
    with op.batch_alter_table("webhook", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_project_id_id", ["project_id", "id"], unique=False)

    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'succeeded', 'failed')",
            name=op.f("ck_webhook_delivery_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["event.id"],
            name=op.f("fk_webhook_delivery_event_id_event"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhook.id"],
            name=op.f("fk_webhook_delivery_webhook_id_webhook"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint(
            "webhook_id", "event_id", name=op.f("uq_webhook_delivery_webhook_id_event_id")
        ),
    )
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_delivery_event_id", ["event_id"], unique=False)
        batch_op.create_index(
            "ix_webhook_delivery_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_delivery_webhook_id_id", ["webhook_id", "id"], unique=False
        )

    op.create_table(
        "webhook_delivery_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("started_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('succeeded', 'http_error', 'timeout', 'connection_error', 'refused_target')",
            name=op.f("ck_webhook_delivery_attempt_outcome_known"),
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_delivery.id"],
            name=op.f("fk_webhook_delivery_attempt_delivery_id_webhook_delivery"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery_attempt")),
    )
    with op.batch_alter_table("webhook_delivery_attempt", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_delivery_attempt_delivery_id_id", ["delivery_id", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery_attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_delivery_attempt_delivery_id_id")

    op.drop_table("webhook_delivery_attempt")
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_delivery_webhook_id_id")
        batch_op.drop_index("ix_webhook_delivery_state_next_attempt_at")
        batch_op.drop_index("ix_webhook_delivery_event_id")

    op.drop_table("webhook_delivery")
    with op.batch_alter_table("webhook", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_project_id_id")

    op.drop_table("webhook")
    op.drop_table("event_sequence")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_occurred_at")

    op.drop_table("event")
