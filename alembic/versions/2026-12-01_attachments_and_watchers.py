"""Attachments (files on issues) and watchers (who follows an issue), with auto-follow preferences.

An attachment row describes one object in storage; it goes with its issue. A watcher row is a
person's standing on an issue: following, or having unfollowed it (kept, so that following
automatically does not add them again). ``user_preferences`` holds the switch for following
automatically.

Revision ID: 4b4c60836968
Revises: 8e4b1d2c6a57
Create Date: 2026-12-01 16:41:26.371694

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "4b4c60836968"
down_revision: str | Sequence[str] | None = "8e4b1d2c6a57"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_preferences",
        sa.Column("auto_follow", sa.Boolean(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("updated_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_user_preferences_user_id_user")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_preferences")),
    )
    op.create_table(
        "attachment",
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("uploaded_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issue.id"],
            name=op.f("fk_attachment_issue_id_issue"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by"], ["user.id"], name=op.f("fk_attachment_uploaded_by_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachment")),
        sa.UniqueConstraint("key", name=op.f("uq_attachment_key")),
    )
    op.create_index("ix_attachment_issue_id_id", "attachment", ["issue_id", "id"], unique=False)
    op.create_table(
        "watcher",
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("following", sa.Boolean(), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["issue.id"], name=op.f("fk_watcher_issue_id_issue"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_watcher_user_id_user")),
        sa.PrimaryKeyConstraint("issue_id", "user_id", name=op.f("pk_watcher")),
    )
    op.create_index("ix_watcher_user_id_issue_id", "watcher", ["user_id", "issue_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_watcher_user_id_issue_id", table_name="watcher")
    op.drop_table("watcher")
    op.drop_index("ix_attachment_issue_id_id", table_name="attachment")
    op.drop_table("attachment")
    op.drop_table("user_preferences")
