"""Jobs (work done by Celery workers) and artifacts (files in object storage).

A job's state lives here, not in the broker: the API answers from this table, and workers
claim a job with a conditional UPDATE (``task_id`` and ``lease_expires_at``), so a message
delivered twice finishes the job once. An artifact row describes one stored file; the
periodic sweep deletes the file and the row once ``expires_at`` has passed.

Revision ID: e9c9c03b0c20
Revises: 3c8a5e1f7b42
Create Date: 2026-12-01 09:39:23.058092

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "e9c9c03b0c20"
down_revision: str | Sequence[str] | None = "3c8a5e1f7b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifact",
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["user.id"], name=op.f("fk_artifact_created_by_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact")),
        sa.UniqueConstraint("key", name=op.f("uq_artifact_key")),
    )
    op.create_index(op.f("ix_artifact_expires_at"), "artifact", ["expires_at"], unique=False)
    op.create_table(
        "job",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("artifact_id", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("enqueued_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('report')", name=op.f("ck_job_kind_known")),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_job_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifact.id"],
            name=op.f("fk_job_artifact_id_artifact"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_job_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"], ["user.id"], name=op.f("fk_job_requested_by_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
        sa.UniqueConstraint("public_id", name=op.f("uq_job_public_id")),
    )
    op.create_index(
        "ix_job_project_created", "job", ["project_id", "created_at", "id"], unique=False
    )
    op.create_index("ix_job_state_created", "job", ["state", "created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_state_created", table_name="job")
    op.drop_index("ix_job_project_created", table_name="job")
    op.drop_table("job")
    op.drop_index(op.f("ix_artifact_expires_at"), table_name="artifact")
    op.drop_table("artifact")
