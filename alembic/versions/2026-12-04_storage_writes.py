"""Storage writes: the intent log of objects being written.

An upload or a report inserts its object's key here, in a transaction of its own, before it
writes the object; the transaction that inserts the file's row deletes it, unless the orphan
sweep claimed it first (``claimed_at``). The sweep removes the objects of intents older than
its grace, and nothing else. Objects orphaned before this revision are not known to it
(nothing named them).

Revision ID: 7a3e5c9d2b14
Revises: 2f6d8a4c1e95
Create Date: 2026-12-04 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flyswatter.db

# revision identifiers, used by Alembic.
revision: str = "7a3e5c9d2b14"
down_revision: str | Sequence[str] | None = "2f6d8a4c1e95"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storage_write",
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("created_at", flyswatter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", flyswatter.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_storage_write")),
    )
    op.create_index(
        op.f("ix_storage_write_created_at"), "storage_write", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_storage_write_created_at"), table_name="storage_write")
    op.drop_table("storage_write")
