"""A realistic PostgreSQL data set for the benchmark, made server-side in a few statements.

Issues are spread over projects with members, labels and comments; titles and descriptions
are drawn from a fixed vocabulary so full-text search has common and rare terms. A data set
is reused when the database already holds exactly the requested size.
"""

from __future__ import annotations

import time

import psycopg
import sqlalchemy as sa
from sqlmodel import SQLModel

import flyswatter.tables  # noqa: F401 - every table on the metadata
from flyswatter import migrations
from flyswatter.config import Settings
from flyswatter.issues.models import Issue

PROJECTS = 100
USERS = 1_000
BENCH_USER = "bench-user-1"  # member (maintainer) of every project; the load's caller
COMMON_TERM = "crash"  # in one title in three, in every project
RARE_TERM = "zeppelin"  # in 40 issues of the whole data set, 20 of them in P001
# Stored with a data set; a data set of another version is seeded again, not reused.
SEED_VERSION = 2

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "xe",
    "zu",
    "pre",
    "dor",
    "fin",
    "gal",
]
VOCABULARY = [a + b + c for a in _SYLLABLES for b in _SYLLABLES[:6] for c in ("n", "s", "t")][:400]


def admin_url(url: str, database: str) -> str:
    return sa.make_url(url).set(database=database).render_as_string(hide_password=False)


def ensure_database(server_url: str, name: str) -> str:
    url = sa.make_url(server_url)
    with psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname="postgres",
        autocommit=True,
    ) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')
    return admin_url(server_url, name)


def issue_count(url: str) -> int | None:
    """The size of the data set there, if it was made by this version of the seed."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            version = connection.execute(sa.text("SELECT version FROM bench_seed")).scalar()
            if version != SEED_VERSION:
                return None
            return int(connection.execute(sa.text("SELECT count(*) FROM issue")).scalar_one())
    except sa.exc.ProgrammingError:
        return None
    finally:
        engine.dispose()


def seed(url: str, issues: int, *, force: bool = False, log: bool = True) -> float:
    """Make ``issues`` issues (reusing an identical data set); returns seconds spent."""
    if not force and issue_count(url) == issues:
        # A data set seeded by an older revision gets the newer migrations (the search
        # column, for one) rather than being measured against a schema the code has left.
        migrations.upgrade(Settings(database_url=url))
        return 0.0
    started = time.perf_counter()
    settings = Settings(database_url=url)
    engine = sa.create_engine(settings.sync_database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    migrations.upgrade(settings)
    vocabulary = "ARRAY[" + ",".join(f"'{word}'" for word in VOCABULARY) + "]"
    words = len(VOCABULARY)
    issue_indexes = list(SQLModel.metadata.tables["issue"].indexes)
    with engine.begin() as connection:
        run = connection.exec_driver_sql
        run(
            """INSERT INTO "user" (id, username, email, name, is_service_account, client_id,
                                    created_at, updated_at)
               SELECT 'bench-user-' || g, 'user' || g, 'user' || g || '@example.org',
                      'User ' || g, false, NULL, now(), now()
               FROM generate_series(1, %(users)s) g""",
            {"users": USERS},
        )
        run(
            """INSERT INTO project (name, description, key, created_by, archived,
                                   last_issue_number, created_at, updated_at)
               SELECT 'Project ' || g, '', 'P' || lpad(g::text, 3, '0'), %(owner)s, false,
                      %(per_project)s, now(), now()
               FROM generate_series(1, %(projects)s) g""",
            {"owner": BENCH_USER, "per_project": 0, "projects": PROJECTS},
        )
        run(
            """INSERT INTO project_member (project_id, user_id, role, created_at)
               SELECT p.id, 'bench-user-' || u,
                      CASE WHEN u = 1 THEN 'maintainer'
                           ELSE (ARRAY['viewer','reporter','developer','maintainer'])[1 + u %% 4]
                      END, now()
               FROM project p CROSS JOIN generate_series(1, %(users)s) u
               WHERE u = 1 OR (u + p.id) %% 10 = 0""",
            {"users": USERS},
        )
        run(
            """INSERT INTO label (name, color, description, project_id, created_at)
               SELECT (ARRAY['bug','ui','backend','docs','perf','security','regression',
                             'good-first-issue','help-wanted','wontfix'])[l],
                      '#' || lpad(to_hex(l * 1234567 %% 16777216), 6, '0'), '', p.id, now()
               FROM project p CROSS JOIN generate_series(1, 10) l"""
        )
        # Indexes are built once after the bulk insert: much faster than row by row.
        for index in issue_indexes:
            run(f'DROP INDEX IF EXISTS "{index.name}"')
        # One project in five issues lands in P001, so one project is deep enough for
        # "a page 100,000 rows deep"; numbers are consecutive within each project.
        run(
            f"""INSERT INTO issue (title, description, type, priority, project_id, number, status,
                                   priority_rank, reporter_id, assignee_id, created_at,
                                   updated_at, closed_at, version)
               SELECT
                 CASE WHEN (g / 5) %% 3 = 0 THEN '{COMMON_TERM} ' ELSE '' END
                   || CASE WHEN g %% %(rare_every)s IN (5, 7) THEN '{RARE_TERM} ' ELSE '' END
                   || v[1 + (g * 7919) %% {words}] || ' ' || v[1 + (g * 104729) %% {words}]
                   || ' ' || v[1 + (g * 1299709) %% {words}],
                 v[1 + (g * 31) %% {words}] || ' ' || v[1 + (g * 37) %% {words}] || ' '
                   || v[1 + (g * 41) %% {words}] || ' ' || v[1 + (g * 43) %% {words}] || ' '
                   || v[1 + (g * 47) %% {words}] || ' ' || v[1 + (g * 53) %% {words}],
                 (ARRAY['bug','feature','task'])[1 + g %% 3],
                 (ARRAY['low','medium','high','critical'])[1 + (g / 7) %% 4],
                 pid,
                 row_number() OVER (PARTITION BY pid ORDER BY g),
                 (ARRAY['open','in_progress','resolved','closed'])[1 + (g / 3) %% 4],
                 (g / 7) %% 4,
                 'bench-user-' || (1 + g %% {USERS}),
                 CASE WHEN g %% 3 = 0 THEN NULL ELSE 'bench-user-' || (1 + (g * 13) %% {USERS}) END,
                 now() - (%(issues)s - g) * interval '20 seconds',
                 now() - (%(issues)s - g) * interval '20 seconds' + (g %% 997) * interval '1 minute',
                 NULL,
                 1
               FROM (SELECT g, CASE WHEN g %% 5 = 0 THEN 1 ELSE 2 + g %% {PROJECTS - 1} END AS pid
                     FROM generate_series(1::bigint, %(issues)s) g) numbered,
                    (SELECT {vocabulary} AS v) vocabulary""",
            {"issues": issues, "rare_every": max(1, issues // 20)},
        )
        run(
            """UPDATE project SET last_issue_number = counts.n
               FROM (SELECT project_id, max(number) AS n FROM issue GROUP BY project_id) counts
               WHERE counts.project_id = project.id"""
        )
        run(
            """INSERT INTO issue_label (issue_id, label_id)
               SELECT i.id, l.id FROM issue i JOIN label l ON l.project_id = i.project_id
               WHERE (i.id %% 10 < 6 AND l.name = (ARRAY['bug','ui','backend','docs','perf'])
                        [1 + i.id %% 5])
                  OR (i.id %% 10 >= 8 AND l.name = 'regression')"""
        )
        run(
            """INSERT INTO comment (body, issue_id, author_id, created_at, updated_at,
                                   edited_at, version)
               SELECT 'Seen this too on build ' || i.id, i.id,
                      'bench-user-' || (1 + i.id * 17 %% 1000), i.created_at, i.created_at,
                      NULL, 1
               FROM issue i WHERE i.id %% 2 = 0"""
        )
    for index in issue_indexes:
        index.create(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE bench_seed (version integer NOT NULL)")
        connection.exec_driver_sql(f"INSERT INTO bench_seed VALUES ({SEED_VERSION})")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    spent = time.perf_counter() - started
    if log:
        print(f"seeded {issues:,} issues in {spent:.0f} s", flush=True)
    return spent


__all__ = ["BENCH_USER", "COMMON_TERM", "RARE_TERM", "Issue", "ensure_database", "seed"]
