"""The test database: every table emptied between tests; many issues written at once; one row
read as the database holds it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

import flyswatter.tables  # noqa: F401 - every table on the metadata, for cleaning
from flyswatter.config import Settings

# Sequences back to where they start, as TRUNCATE ... RESTART IDENTITY would put them.
_RESTART_SEQUENCES = (
    "SELECT setval((quote_ident(schemaname) || '.' || quote_ident(sequencename))::regclass, "
    "start_value, false) FROM pg_sequences WHERE schemaname = current_schema()"
)


def stored_row(url: str, query: str, **parameters: Any) -> sa.Row[Any]:
    """The one row ``query`` reads, on a connection of its own to the database at ``url``
    (in any form the service takes): what is committed, not what an API answer says."""
    engine = sa.create_engine(Settings(database_url=url).sync_database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(query), parameters).one()
    finally:
        engine.dispose()


def empty_all_tables(url: str) -> None:
    """Every table empty and every id counting from its start again.

    DELETE, children first, not TRUNCATE: the tables hold a test's few rows, and PostgreSQL's
    TRUNCATE gives each table (and index) a new file to sync at commit, which cost 160 ms a
    test where DELETE costs 10 ms.
    """
    engine = sa.create_engine(url)
    tables = [table.name for table in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as connection:
        for name in tables:
            connection.exec_driver_sql(f'DELETE FROM "{name}"')
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(_RESTART_SEQUENCES)
    engine.dispose()


def seed_issues(url: str, count: int, project_key: str = "FLY") -> None:
    """``count`` open issues in one statement (PostgreSQL), reported by the project's creator."""
    engine = sa.create_engine(Settings(database_url=url).sync_database_url)
    with engine.begin() as connection:
        project_id, owner = connection.execute(
            sa.text("SELECT id, created_by FROM project WHERE key = :key"), {"key": project_key}
        ).one()
        first = connection.execute(
            sa.text("SELECT coalesce(max(number), 0) FROM issue WHERE project_id = :project"),
            {"project": project_id},
        ).scalar_one()
        connection.execute(
            sa.text(
                "INSERT INTO issue (project_id, number, title, description, type, priority, "
                "priority_rank, status, reporter_id, created_at, updated_at, version) "
                "SELECT :project, :first + n, 'Issue ' || n, '', 'bug', 'medium', 1, 'open', "
                ":owner, now() - n * interval '1 minute', now(), 1 "
                "FROM generate_series(1, :count) AS n"
            ),
            {"project": project_id, "owner": owner, "count": count, "first": first},
        )
        # The numbers handed out next follow the seeded ones, as after as many creations.
        connection.execute(
            sa.text("UPDATE project SET last_issue_number = :last WHERE id = :project"),
            {"last": first + count, "project": project_id},
        )
    engine.dispose()
