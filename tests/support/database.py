"""The test database: every table emptied between tests."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import SQLModel

import flyswatter.tables  # noqa: F401 - every table on the metadata, for cleaning


def empty_all_tables(url: str) -> None:
    engine = sa.create_engine(url)
    tables = [table.name for table in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            quoted = ", ".join(f'"{name}"' for name in tables)
            connection.exec_driver_sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
        else:
            for name in tables:
                connection.exec_driver_sql(f'DELETE FROM "{name}"')
    engine.dispose()
