"""Issue search: a stored tsvector column and a GIN index on (project_id, document).

The document was computed by every row the search looked at (to_tsvector costs ~16 us per
issue), so a search that walked the project in page order read 200,000 documents. Stored, a
match is a cheap comparison; the GIN index on (project_id, document) (btree_gin gives the
integer its GIN operator class) finds a term's matches within one project without reading
the term's matches in every other project. It replaces ix_issue_search, which served the
same searches less well and would only cost writes.

PostgreSQL only: SQLite searches with LIKE and has neither the column nor the index. The
column is not on the model, so that ``select(Issue)`` never ships documents to the service;
alembic/env.py keeps both out of autogenerate's comparison.

Revision ID: 9b2e4c7d1f30
Revises: 7fc1cb8e2a1d
Create Date: 2026-11-23 17:30:00.000000

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "9b2e4c7d1f30"
down_revision: str | Sequence[str] | None = "7fc1cb8e2a1d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelt as the expression of the index it replaces, so both give the same matches.
DOCUMENT = "to_tsvector('english'::regconfig, (title::text || ' ') || description)"


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute(
        f"ALTER TABLE issue ADD COLUMN search_document tsvector "
        f"GENERATED ALWAYS AS ({DOCUMENT}) STORED"
    )
    op.execute(
        "CREATE INDEX ix_issue_search_document ON issue USING gin (project_id, search_document)"
    )
    op.drop_index("ix_issue_search", table_name="issue", postgresql_using="gin")
    # Statistics for the new column now (a sample: seconds even at millions of issues), so
    # that the first searches after the upgrade are planned with term frequencies.
    op.execute("ANALYZE issue")


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE INDEX ix_issue_search ON issue USING gin ({DOCUMENT})")
    op.drop_index("ix_issue_search_document", table_name="issue")
    op.drop_column("issue", "search_document")
    # Gone with the index that needed it, unless other objects have come to use it since.
    op.execute(
        "DO $$ BEGIN DROP EXTENSION IF EXISTS btree_gin; "
        "EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END $$"
    )
