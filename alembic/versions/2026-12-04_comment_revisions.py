"""Comment revisions: the texts a comment's edits replaced, who wrote each and who replaced it.

Comments edited before this revision have no history: their earlier texts were not kept.
Idempotency records are found by the location of what they created, to restate their answer
once its text is gone.

Revision ID: d7b4e19cf651
Revises: 7a3e5c9d2b14
Create Date: 2026-12-04 20:35:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "d7b4e19cf651"
down_revision: str | Sequence[str] | None = "7a3e5c9d2b14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "comment_revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("comment_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("written_by_id", sa.String(length=255), nullable=False),
        sa.Column("written_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("replaced_by_id", sa.String(length=255), nullable=False),
        sa.Column("replaced_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("removed_by_id", sa.String(length=255), nullable=True),
        sa.Column("removed_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["comment_id"],
            ["comment.id"],
            name=op.f("fk_comment_revision_comment_id_comment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["removed_by_id"], ["user.id"], name=op.f("fk_comment_revision_removed_by_id_user")
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by_id"], ["user.id"], name=op.f("fk_comment_revision_replaced_by_id_user")
        ),
        sa.ForeignKeyConstraint(
            ["written_by_id"], ["user.id"], name=op.f("fk_comment_revision_written_by_id_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comment_revision")),
        sa.UniqueConstraint(
            "comment_id", "version", name=op.f("uq_comment_revision_comment_id_version")
        ),
    )

    op.create_index(
        op.f("ix_idempotency_record_location"), "idempotency_record", ["location"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_record_location"), table_name="idempotency_record")
    op.drop_table("comment_revision")
