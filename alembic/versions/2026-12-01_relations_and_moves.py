"""Relations between issues and the old keys of moved issues.

``issue_relation`` stores each relation once, with a direction (``source kind target``: blocks,
duplicates, relates_to, parent); its unique key (source, kind, target) serves an issue's own
relations and the list filters ``has_children`` and ``parent``, the index (target, kind,
source) the other side's and the filter ``blocked``, and a partial unique index gives an issue
at most one parent. ``issue_key_redirect`` keeps every key a moved issue had, each pointing at
the issue itself, so an old key resolves in one lookup however often the issue moved.

Revision ID: 8e4b1d2c6a57
Revises: 6a1f3c9d2b57
Create Date: 2026-12-01 16:45:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "8e4b1d2c6a57"
down_revision: str | Sequence[str] | None = "6a1f3c9d2b57"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "issue_relation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('blocks', 'duplicates', 'relates_to', 'parent')",
            name=op.f("ck_issue_relation_kind_known"),
        ),
        sa.CheckConstraint("source_id <> target_id", name=op.f("ck_issue_relation_not_self")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["user.id"], name=op.f("fk_issue_relation_created_by_user")
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["issue.id"],
            name=op.f("fk_issue_relation_source_id_issue"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["issue.id"],
            name=op.f("fk_issue_relation_target_id_issue"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issue_relation")),
        sa.UniqueConstraint(
            "source_id",
            "kind",
            "target_id",
            name=op.f("uq_issue_relation_source_id_kind_target_id"),
        ),
    )
    op.create_index(
        "ix_issue_relation_target_id_kind_source_id",
        "issue_relation",
        ["target_id", "kind", "source_id"],
        unique=False,
    )
    op.create_index(
        "uq_issue_relation_one_parent",
        "issue_relation",
        ["target_id"],
        unique=True,
        sqlite_where=sa.text("kind = 'parent'"),
        postgresql_where=sa.text("kind = 'parent'"),
    )
    op.create_table(
        "issue_key_redirect",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("moved_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issue.id"],
            name=op.f("fk_issue_key_redirect_issue_id_issue"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_issue_key_redirect_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "number", name=op.f("pk_issue_key_redirect")),
    )
    op.create_index(
        op.f("ix_issue_key_redirect_issue_id"), "issue_key_redirect", ["issue_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_issue_key_redirect_issue_id"), table_name="issue_key_redirect")
    op.drop_table("issue_key_redirect")
    op.drop_index("uq_issue_relation_one_parent", table_name="issue_relation")
    op.drop_index("ix_issue_relation_target_id_kind_source_id", table_name="issue_relation")
    op.drop_table("issue_relation")
