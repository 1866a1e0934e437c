"""Storage removals: the objects of deleted files, named in the deleting transaction.

The request removes each object once its deletion commits; the periodic sweep removes the
ones a storage outage or a crash left behind, then their names. Objects orphaned before this
revision are not known to it (nothing named them).

Revision ID: 2f6d8a4c1e95
Revises: 4b4c60836968
Create Date: 2026-12-02 12:50:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "2f6d8a4c1e95"
down_revision: str | Sequence[str] | None = "4b4c60836968"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storage_removal",
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_storage_removal")),
    )
    op.create_index(
        op.f("ix_storage_removal_created_at"), "storage_removal", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_storage_removal_created_at"), table_name="storage_removal")
    op.drop_table("storage_removal")
