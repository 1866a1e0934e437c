"""Every activity entry names the field its values belong to, and the values keep its type.

``created`` names ``key``; ``commented``, ``comment_edited`` and ``comment_deleted`` name
``comment_id`` (an edit keeps the comment's id as its new value only: the text is the
comment's); ``labeled`` and ``unlabeled`` name ``label``, the one label each entry is about.

Revision ID: 5d7f2a9c4e18
Revises: e9c9c03b0c20
Create Date: 2026-12-01 13:40:00.000000

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5d7f2a9c4e18"
down_revision: str | Sequence[str] | None = "e9c9c03b0c20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute("UPDATE activity SET field = 'key' WHERE action = 'created'")
    op.execute("UPDATE activity SET old_value = NULL WHERE action = 'comment_edited'")
    op.execute(
        "UPDATE activity SET field = 'comment_id' "
        "WHERE action IN ('commented', 'comment_edited', 'comment_deleted')"
    )
    op.execute("UPDATE activity SET field = 'label' WHERE action IN ('labeled', 'unlabeled')")


def downgrade() -> None:
    """Downgrade schema."""
    op.execute("UPDATE activity SET field = 'labels' WHERE action IN ('labeled', 'unlabeled')")
    op.execute("UPDATE activity SET old_value = new_value WHERE action = 'comment_edited'")
    op.execute("UPDATE activity SET field = 'body' WHERE action = 'comment_edited'")
    op.execute(
        "UPDATE activity SET field = NULL WHERE action IN ('created', 'commented', "
        "'comment_deleted')"
    )
