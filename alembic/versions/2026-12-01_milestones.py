"""Milestones: a project's due-dated groups of issues; an issue is in at most one.

``issue.milestone_id`` is set to NULL when its milestone is deleted (the service detaches the
issues first, with their history). ``issue.milestone_due_rank`` is the milestone's due date
as a number, so that "sort by the milestone's due date" is an index order; issues in no
milestone, or in one without a due date, rank after every date.

The issue columns are added in place on both backends: a batch rebuild of ``issue`` on
SQLite would drop the table under its children, and SQLite cascades that drop into their rows.

Revision ID: 6a1f3c9d2b57
Revises: 061d766b1c2f
Create Date: 2026-12-01 16:43:00.891913

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "6a1f3c9d2b57"
down_revision: str | Sequence[str] | None = "061d766b1c2f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# date.max.toordinal() + 1: after every due date (milestones.models.UNDATED_RANK).
UNDATED_RANK = "3652060"
FOREIGN_KEY = "fk_issue_milestone_id_milestone"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "milestone",
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("state IN ('open', 'closed')", name=op.f("ck_milestone_state_known")),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_milestone_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_milestone")),
        sa.UniqueConstraint("project_id", "title", name=op.f("uq_milestone_project_id_title")),
    )
    op.create_index(
        "ix_milestone_project_due_title", "milestone", ["project_id", "due_on", "title"]
    )
    if op.get_context().dialect.name == "sqlite":
        # SQLite adds a column with its foreign key in one statement, or not at all.
        op.execute(
            "ALTER TABLE issue ADD COLUMN milestone_id INTEGER "
            f"CONSTRAINT {FOREIGN_KEY} REFERENCES milestone (id) ON DELETE SET NULL"
        )
    else:
        op.add_column("issue", sa.Column("milestone_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            FOREIGN_KEY, "issue", "milestone", ["milestone_id"], ["id"], ondelete="SET NULL"
        )
    op.add_column(
        "issue",
        sa.Column("milestone_due_rank", sa.Integer(), server_default=UNDATED_RANK, nullable=False),
    )
    op.create_index(
        "ix_issue_project_milestone_due", "issue", ["project_id", "milestone_due_rank", "id"]
    )
    op.create_index(
        "ix_issue_project_milestone_updated",
        "issue",
        ["project_id", "milestone_id", "updated_at", "id"],
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_issue_project_milestone_updated", table_name="issue")
    op.drop_index("ix_issue_project_milestone_due", table_name="issue")
    if op.get_context().dialect.name != "sqlite":
        op.drop_constraint(FOREIGN_KEY, "issue", type_="foreignkey")
    # In place on both backends, as in upgrade.
    op.execute("ALTER TABLE issue DROP COLUMN milestone_due_rank")
    op.execute("ALTER TABLE issue DROP COLUMN milestone_id")
    op.drop_index("ix_milestone_project_due_title", table_name="milestone")
    op.drop_table("milestone")
