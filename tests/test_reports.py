"""The report PDF: its figures agree with the database, any script renders, page 1 draws."""

from __future__ import annotations

import io
import random
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio.to_thread
import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from flyswatter.config import Settings
from flyswatter.issues.models import Priority
from flyswatter.reports.fonts import report_fonts
from tests.support.api import Api, Team, make_team
from tests.support.jobs import in_process_worker, wait_for_job
from tests.support.servers import system_program

PERIOD_START = datetime(2026, 9, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 10, 27, tzinfo=UTC)  # eight weeks


@pytest.fixture
def settings(base_settings: Settings, clean_database: str, tmp_path: Path) -> Settings:
    return base_settings.model_copy(
        update={"storage_dir": str(tmp_path / "artifacts"), "report_table_limit": 25}
    )


@pytest.fixture
def worker(settings: Settings) -> Iterator[None]:
    with in_process_worker(settings):
        yield


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


def seed_issues(
    settings: Settings, team: Team, count: int, titles: list[str] | None = None
) -> None:
    """Issues spread over the period and a little before it, written straight to the tables."""
    engine = sa.create_engine(settings.sync_database_url)
    generator = random.Random(16)  # noqa: S311 - test data, seeded to be repeatable
    people = [team.ids["developer"], team.ids["maintainer"], None]
    with engine.begin() as connection:
        project_id = connection.execute(
            sa.text("SELECT id FROM project WHERE key = 'FLY'")
        ).scalar()
        rows = []
        for number in range(1, count + 1):
            created = PERIOD_START + timedelta(
                seconds=generator.randrange(
                    -7 * 86_400, int((PERIOD_END - PERIOD_START).total_seconds())
                )
            )
            status = generator.choice(["open", "in_progress", "resolved", "closed"])
            priority = generator.choice(list(Priority))
            closed = (
                created + timedelta(days=generator.randrange(0, 20)) if status == "closed" else None
            )
            rows.append(
                {
                    "project_id": project_id,
                    "number": number,
                    "title": titles[number % len(titles)] if titles else f"Issue {number}",
                    "description": "",
                    "type": generator.choice(["bug", "feature", "task"]),
                    "priority": priority.value,
                    "priority_rank": priority.rank,
                    "status": status,
                    "reporter_id": team.ids["reporter"],
                    "assignee_id": generator.choice(people),
                    "created_at": created
                    if engine.dialect.name != "sqlite"
                    else created.replace(tzinfo=None),
                    "updated_at": created
                    if engine.dialect.name != "sqlite"
                    else created.replace(tzinfo=None),
                    "closed_at": closed
                    if closed is None or engine.dialect.name != "sqlite"
                    else closed.replace(tzinfo=None),
                    "version": 1,
                }
            )
        connection.execute(
            sa.text(
                "INSERT INTO issue (project_id, number, title, description, type, priority, "
                "priority_rank, status, reporter_id, assignee_id, created_at, updated_at, "
                "closed_at, version) VALUES (:project_id, :number, :title, :description, :type, "
                ":priority, :priority_rank, :status, :reporter_id, :assignee_id, :created_at, "
                ":updated_at, :closed_at, :version)"
            ),
            rows,
        )
        connection.execute(
            sa.text("UPDATE project SET last_issue_number = :n WHERE id = :id"),
            {"n": count, "id": project_id},
        )
    engine.dispose()


def expected_counts(settings: Settings, column: str, extra: str = "") -> dict[str, int]:
    """The same figures, asked of the database in plain SQL."""
    engine = sa.create_engine(settings.sync_database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                f"SELECT {column}, count(*) FROM issue WHERE created_at >= :start "
                f"AND created_at < :end {extra} GROUP BY {column}"
            ),
            {
                "start": PERIOD_START if engine.dialect.name != "sqlite" else "2026-09-01 00:00:00",
                "end": PERIOD_END if engine.dialect.name != "sqlite" else "2026-10-27 00:00:00",
            },
        ).all()
    engine.dispose()
    return {str(value): int(count) for value, count in rows}


async def report_pdf(team: Team, body: dict[str, object]) -> bytes:
    response = await team["reporter"].post("/api/v1/projects/FLY/reports", json=body)
    assert response.status_code == 202, response.text
    job = await wait_for_job(team["reporter"], response.headers["Location"])
    assert job["state"] == "succeeded", job
    download = await team["reporter"].get(job["links"]["artifact"])
    assert download.status_code == 200
    return download.content


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def figure_line(text: str, heading: str) -> dict[str, int]:
    """``name: N`` pairs on the line after a heading ("By status")."""
    lines = text.splitlines()
    after = lines[lines.index(heading) + 1]
    return {name: int(value) for name, value in re.findall(r"(\w+): (\d+)", after)}


PERIOD = {"from": PERIOD_START.isoformat(), "to": PERIOD_END.isoformat()}


async def test_report_figures_match_the_database(
    team: Team, settings: Settings, worker: None
) -> None:
    seed_issues(settings, team, 300)
    text = text_of(await report_pdf(team, PERIOD))
    by_status = expected_counts(settings, "status")
    total = sum(by_status.values())
    assert f"Total issues: {total}" in text
    assert {k: v for k, v in figure_line(text, "By status").items() if v} == by_status
    assert {k: v for k, v in figure_line(text, "By priority").items() if v} == expected_counts(
        settings, "priority"
    )
    assert {k: v for k, v in figure_line(text, "By type").items() if v} == expected_counts(
        settings, "type"
    )
    weekly = re.search(r"Week by week \(opened/closed\): (.*)", text)
    assert weekly is not None
    opened = [int(o) for o in re.findall(r"W\d+ (\d+)/\d+", weekly.group(1))]
    assert len(opened) == 8
    assert sum(opened) == total
    # The table is page-limited, and says how many it shows of how many.
    assert f"Issues: showing 25 of {total}" in text
    assert len(re.findall(r"^FLY-\d+ ", text, flags=re.MULTILINE)) >= 25


def seed_issue_at(settings: Settings, team: Team, number: int, created: datetime) -> None:
    """One open issue of FLY reported at exactly ``created``, stored as the service stores it
    (on SQLite, SQLAlchemy's text with all six digits of microseconds)."""
    engine = sa.create_engine(settings.sync_database_url)
    sqlite = engine.dialect.name == "sqlite"
    stamp = created.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else created
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO issue (project_id, number, title, description, type, priority, "
                "priority_rank, status, reporter_id, created_at, updated_at, version) "
                "SELECT id, :number, 'Edge', '', 'bug', 'low', :rank, 'open', :reporter, "
                ":created, :created, 1 FROM project WHERE key = 'FLY'"
            ),
            {
                "number": number,
                "rank": Priority.low.rank,
                "reporter": team.ids["reporter"],
                "created": stamp,
            },
        )
        connection.execute(
            sa.text("UPDATE project SET last_issue_number = :n WHERE key = 'FLY'"), {"n": number}
        )
    engine.dispose()


async def test_an_issue_reported_just_before_the_end_of_a_whole_week_period_is_in_the_chart(
    team: Team, settings: Settings, worker: None
) -> None:
    # SQLite's julianday() keeps milliseconds: 300 us before the end of an eight-week period
    # rounded to the end itself, week 9 of 8, and the issue was counted in the total but
    # dropped from the weekly chart.
    seed_issue_at(settings, team, 1, PERIOD_END - timedelta(microseconds=300))
    seed_issue_at(settings, team, 2, PERIOD_START)
    text = text_of(await report_pdf(team, PERIOD))
    assert "Total issues: 2" in text
    weekly = re.search(r"Week by week \(opened/closed\): (.*)", text)
    assert weekly is not None
    opened = [int(o) for o in re.findall(r"W\d+ (\d+)/\d+", weekly.group(1))]
    assert opened == [1, 0, 0, 0, 0, 0, 0, 1]


async def test_report_applies_the_issue_list_filters(
    team: Team, settings: Settings, worker: None
) -> None:
    seed_issues(settings, team, 120)
    text = text_of(await report_pdf(team, {**PERIOD, "status": ["open"], "priority": ["high"]}))
    expected = expected_counts(settings, "status", "AND status = 'open' AND priority = 'high'")
    assert f"Total issues: {expected.get('open', 0)}" in text
    assert "Filters: status=['open'], priority=['high']" in text


async def test_report_without_issues_says_so(team: Team, worker: None) -> None:
    text = text_of(await report_pdf(team, {}))
    assert "Total issues: 0" in text
    assert "No open issues." in text


async def test_a_period_given_with_another_offset_is_printed_and_named_in_utc(
    team: Team, worker: None
) -> None:
    # Midnight in Tokyo is 15:00 UTC the day before: the report says UTC, so it shows that.
    body = {"from": "2026-11-01T00:00:00+09:00", "to": "2026-11-20T00:00:00+09:00"}
    response = await team["reporter"].post("/api/v1/projects/FLY/reports", json=body)
    assert response.status_code == 202, response.text
    job = await wait_for_job(team["reporter"], response.headers["Location"])
    assert job["state"] == "succeeded", job
    assert job["artifact"]["filename"] == "FLY-report-20261031-20261119.pdf"
    download = await team["reporter"].get(job["links"]["artifact"])
    assert "Period: 2026-10-31 15:00 UTC to 2026-11-19 15:00 UTC" in text_of(download.content)


UNICODE_TITLES = [
    "Ошибка при сохранении",
    "Σφάλμα κατά την αποθήκευση",
    "保存時にクラッシュする",
    "Ünïcödé façade naïve",
    "خطأ عند الحفظ",
    "קריסה בשמירה",
]


async def test_report_renders_any_script(team: Team, settings: Settings, worker: None) -> None:
    if not report_fonts().fallbacks:
        pytest.skip("needs a CJK font (Debian package fonts-droid-fallback)")
    seed_issues(settings, team, 10, titles=UNICODE_TITLES)
    text = text_of(await report_pdf(team, {"from": "2026-01-01T00:00:00Z", "to": PERIOD["to"]}))
    for title in UNICODE_TITLES:
        assert title in text


async def test_report_first_page_renders_to_png(
    team: Team, settings: Settings, worker: None, tmp_path: Path
) -> None:
    pdftoppm = system_program("pdftoppm", "poppler-utils")
    seed_issues(settings, team, 60)
    (tmp_path / "report.pdf").write_bytes(await report_pdf(team, PERIOD))
    await anyio.to_thread.run_sync(render_first_page, pdftoppm, tmp_path)
    png = (tmp_path / "page.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 5_000


def render_first_page(pdftoppm: str, tmp_path: Path) -> None:
    subprocess.run(
        [
            pdftoppm,
            "-png",
            "-r",
            "50",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(tmp_path / "report.pdf"),
            str(tmp_path / "page"),
        ],
        check=True,
        timeout=60,
    )


async def test_the_longest_period_accepted_is_built_however_late_a_worker_gets_to_it(
    team: Team, settings: Settings
) -> None:
    """The period's defaults end when the report was asked for: a request at the longest
    period that was accepted is built as accepted, not refused by a worker that comes later,
    when "until now" would have grown past the rule."""
    asked = datetime.now(UTC)
    start = asked - timedelta(days=3660) + timedelta(seconds=2)
    response = await team["reporter"].post(
        "/api/v1/projects/FLY/reports", json={"from": start.isoformat()}
    )
    assert response.status_code == 202, response.text
    created = datetime.fromisoformat(response.json()["created_at"])
    await anyio.sleep(2.5)
    with in_process_worker(settings):
        job = await wait_for_job(team["reporter"], response.headers["Location"])
    assert job["state"] == "succeeded", job
    assert job["artifact"]["filename"].endswith(f"-{created:%Y%m%d}.pdf")
