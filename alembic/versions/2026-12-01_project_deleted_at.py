"""Deleted projects: a deletion time, so that DELETE hides a project and all beneath it.

The rows stay until an admin restores the project (or they are purged by hand): everything
that reads a project filters on ``deleted_at IS NULL``.

Revision ID: 3c8a5e1f7b42
Revises: 9b2e4c7d1f30
Create Date: 2026-12-01 09:45:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "3c8a5e1f7b42"
down_revision: str | Sequence[str] | None = "9b2e4c7d1f30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        "project",
        sa.Column("deleted_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    """Downgrade schema."""
    # In place on both backends (SQLite 3.35+): a batch rebuild of ``project`` would drop the
    # table under its children, and SQLite cascades that drop into their rows.
    op.execute("ALTER TABLE project DROP COLUMN deleted_at")
