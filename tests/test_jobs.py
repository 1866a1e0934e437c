"""Jobs as a resource: requesting a report, following it, downloading, listing, cancelling."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio.to_thread
import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from flyswatter.config import Settings
from flyswatter.db import utcnow
from flyswatter.jobs import report_files, tasks
from flyswatter.jobs.models import Job, JobState, ReportParameters
from flyswatter.jobs.report_files import PROJECT_DELETED
from flyswatter.jobs.sweeps import expire_artifacts
from flyswatter.jobs.tasks import ClaimedRunFault, JobRuntime, claim_job, run_report_job
from flyswatter.storage.models import Artifact
from flyswatter.storage.service import LocalStorage, StorageUnavailable
from tests.support.api import Api, Team, make_team, walk_pages
from tests.support.jobs import in_process_worker, wait_for_job


@pytest.fixture
def settings(base_settings: Settings, clean_database: str, tmp_path: Path) -> Settings:
    return base_settings.model_copy(update={"storage_dir": str(tmp_path / "artifacts")})


@pytest.fixture
def worker(settings: Settings) -> Iterator[None]:
    with in_process_worker(settings):
        yield


@pytest.fixture
async def team(api: Api) -> Team:
    return await make_team(api)


async def requested_report(team: Team) -> tuple[str, str]:
    """A report the reporter asked for: its job's location and id."""
    response = await team["reporter"].post("/api/v1/projects/FLY/reports")
    assert response.status_code == 202, response.text
    return response.headers["Location"], response.json()["id"]


async def test_report_request_is_accepted_and_the_worker_builds_the_pdf(
    team: Team, worker: None
) -> None:
    await team.issue(title="Crash on save")
    response = await team["reporter"].post("/api/v1/projects/FLY/reports", json={})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] == "queued"
    assert job["kind"] == "report"
    assert job["project_key"] == "FLY"
    assert job["requested_by"] == team.ids["reporter"]
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert response.headers["Retry-After"].isdigit()

    finished = await wait_for_job(team["viewer"], response.headers["Location"])
    assert finished["state"] == "succeeded", finished
    assert finished["attempts"] == 1
    assert finished["error"] is None
    assert finished["started_at"] is not None
    assert finished["finished_at"] is not None
    artifact = finished["artifact"]
    assert artifact["content_type"] == "application/pdf"
    assert artifact["filename"].startswith("FLY-report-")

    download = await team["viewer"].get(finished["links"]["artifact"])
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/pdf"
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment; filename=")
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == artifact["filename"]
    assert int(download.headers["Content-Length"]) == artifact["size"] == len(download.content)
    text = pdf_text(download.content)
    assert "Total issues: 1" in text
    assert "Crash on save" in text


@pytest.mark.parametrize("filename", ["отчёт 🐞 缺陷 באג.pdf"])
async def test_a_file_name_in_any_script_round_trips_through_content_disposition(
    team: Team, worker: None, settings: Settings, filename: str
) -> None:
    requested = await team["reporter"].post("/api/v1/projects/FLY/reports", json={})
    finished = await wait_for_job(team["viewer"], requested.headers["Location"])
    # The service names its files by project key; a stored name in other scripts must
    # still make a header that encodes, with the exact name in filename* (RFC 8187).
    engine = sa.create_engine(settings.sync_database_url)
    with engine.begin() as connection:
        connection.execute(sa.update(Artifact).values(filename=filename))
    engine.dispose()
    download = await team["viewer"].get(finished["links"]["artifact"])
    assert download.status_code == 200, download.text
    disposition = download.headers["Content-Disposition"]
    assert disposition.isascii()
    assert unquote(disposition.split("filename*=UTF-8''")[1], errors="strict") == filename


async def run_once(settings: Settings, public_id: str, task_id: str) -> JobState | None:
    """One attempt at the job, as a worker's task makes it (on a thread, its own engine)."""

    def attempt() -> JobState | None:
        runtime = JobRuntime(settings)
        try:
            return run_report_job(runtime, public_id, task_id)
        finally:
            runtime.engine.dispose()

    return await anyio.to_thread.run_sync(attempt)


def stored_files(settings: Settings) -> list[Path]:
    return [path for path in Path(settings.storage_dir).rglob("*") if path.is_file()]


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


async def test_idempotency_key_replays_the_first_job_byte_for_byte(team: Team) -> None:
    reporter = team["reporter"]
    headers = {"Idempotency-Key": "report-once"}
    body = {"from": "2026-11-01T00:00:00Z"}
    first = await reporter.post("/api/v1/projects/FLY/reports", json=body, headers=headers)
    again = await reporter.post("/api/v1/projects/FLY/reports", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    # The replay speaks the schema's names (``from``, not the attribute ``from_``).
    assert again.json() == first.json()
    assert "from" in again.json()["parameters"]
    assert again.headers["Location"] == first.headers["Location"]
    listed = await reporter.get("/api/v1/jobs")
    assert [job["id"] for job in listed.json()["items"]] == [first.json()["id"]]
    other = await reporter.post(
        "/api/v1/projects/FLY/reports", json={"status": ["open"]}, headers=headers
    )
    assert other.status_code == 422


@pytest.mark.parametrize(
    ("role", "expected"),
    [("viewer", 403), ("reporter", 202), ("developer", 202), ("maintainer", 202)],
)
async def test_reporters_and_up_may_request_reports(team: Team, role: str, expected: int) -> None:
    response = await team[role].post("/api/v1/projects/FLY/reports")
    assert response.status_code == expected, response.text


async def test_a_read_only_token_may_request_and_cancel_its_report(team: Team, api: Api) -> None:
    read_only = api.as_user("reporter", scopes=["issues:read"])
    response = await read_only.post("/api/v1/projects/FLY/reports")
    assert response.status_code == 202, response.text
    cancelled = await read_only.post(f"{response.headers['Location']}/cancel")
    assert cancelled.status_code == 200, cancelled.text


async def test_an_archived_project_is_still_reported_on(team: Team) -> None:
    archived = await team["maintainer"].patch("/api/v1/projects/FLY", json={"archived": True})
    assert archived.status_code == 200, archived.text
    response = await team["reporter"].post("/api/v1/projects/FLY/reports")
    assert response.status_code == 202, response.text


async def test_jobs_are_visible_to_project_members_only(team: Team) -> None:
    created = await team["reporter"].post("/api/v1/projects/FLY/reports")
    location = created.headers["Location"]
    for role in ("viewer", "reporter", "developer", "maintainer"):
        assert (await team[role].get(location)).status_code == 200
    assert (await team.outsider.get(location)).status_code == 404
    assert (await team.outsider.get(f"{location}/artifact")).status_code == 404
    assert (await team.outsider.delete(location)).status_code == 404
    assert (await team.outsider.get("/api/v1/jobs")).json()["items"] == []
    admin = team.api.as_user("root", roles=["flyswatter-admin"])
    assert (await admin.get(location)).status_code == 200


async def test_job_list_filters_and_pages_newest_first(team: Team, api: Api) -> None:
    stranger = api.as_user("stranger")
    created = await stranger.post("/api/v1/projects", json={"key": "OTHER", "name": "Other"})
    assert created.status_code == 201
    ids = []
    for _ in range(5):
        response = await team["reporter"].post("/api/v1/projects/FLY/reports")
        ids.append(response.json()["id"])
    assert (await stranger.post("/api/v1/projects/OTHER/reports")).status_code == 202
    cancelled = ids[1]
    assert (await team["reporter"].post(f"/api/v1/jobs/{cancelled}/cancel")).status_code == 200

    everything = await walk_pages(team["viewer"], "/api/v1/jobs?limit=2")
    assert [job["id"] for job in everything] == list(reversed(ids))
    queued = await walk_pages(team["viewer"], "/api/v1/jobs?state=queued&limit=2&project=fly")
    assert [job["id"] for job in queued] == [i for i in reversed(ids) if i != cancelled]
    by_kind = await team["viewer"].get("/api/v1/jobs?kind=report&state=cancelled")
    assert [job["id"] for job in by_kind.json()["items"]] == [cancelled]
    assert (await team["viewer"].get("/api/v1/jobs?project=OTHER")).json()["items"] == []
    bad = await team["viewer"].get("/api/v1/jobs?cursor=not-a-cursor")
    assert bad.status_code == 400


async def test_a_queued_job_can_be_cancelled_once_by_its_requester_or_a_maintainer(
    team: Team,
) -> None:
    first = (await team["reporter"].post("/api/v1/projects/FLY/reports")).headers["Location"]
    second = (await team["reporter"].post("/api/v1/projects/FLY/reports")).headers["Location"]
    assert (await team["developer"].post(f"{first}/cancel")).status_code == 403
    cancelled = await team["reporter"].post(f"{first}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    job = (await team["viewer"].get(first)).json()
    assert job == cancelled.json()
    assert job["finished_at"] is not None
    again = await team["reporter"].post(f"{first}/cancel")
    assert again.status_code == 409
    assert again.headers["Content-Type"] == "application/problem+json"
    assert (await team["maintainer"].post(f"{second}/cancel")).status_code == 200


async def test_a_deleted_job_is_gone_from_every_route(team: Team) -> None:
    queued = (await team["reporter"].post("/api/v1/projects/FLY/reports")).headers["Location"]
    cancelled = (await team["reporter"].post("/api/v1/projects/FLY/reports")).headers["Location"]
    assert (await team["reporter"].post(f"{cancelled}/cancel")).status_code == 200
    assert (await team["developer"].delete(queued)).status_code == 403
    assert (await team["reporter"].delete(queued)).status_code == 204
    assert (await team["maintainer"].delete(cancelled)).status_code == 204
    for location in (queued, cancelled):
        for response in (
            await team["maintainer"].get(location),
            await team["maintainer"].get(f"{location}/artifact"),
            await team["maintainer"].post(f"{location}/cancel"),
            await team["maintainer"].delete(location),
        ):
            assert response.status_code == 404, response.text
    assert (await team["viewer"].get("/api/v1/jobs")).json()["items"] == []


async def test_a_job_without_a_file_answers_409_for_its_artifact(team: Team) -> None:
    location = (await team["reporter"].post("/api/v1/projects/FLY/reports")).headers["Location"]
    response = await team["viewer"].get(f"{location}/artifact")
    assert response.status_code == 409
    assert "queued" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"from": "2026-11-01T00:00:00Z", "to": "2026-10-01T00:00:00Z"},
        {"from": "2026-11-01T00:00:00"},
        {"status": ["sleeping"]},
        {"colour": "red"},
    ],
)
async def test_invalid_report_parameters_are_422(team: Team, body: dict[str, object]) -> None:
    response = await team["reporter"].post("/api/v1/projects/FLY/reports", json=body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("field", ["assignee", "reporter", "q"])
async def test_a_report_filter_holding_nul_is_a_422_naming_the_field(
    team: Team, field: str
) -> None:
    # As the issue list refuses it; PostgreSQL would otherwise fail the job in the worker.
    response = await team["reporter"].post("/api/v1/projects/FLY/reports", json={field: "a\x00b"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", field]
    listed = (await team["viewer"].get("/api/v1/jobs?project=FLY")).json()["items"]
    assert listed == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Outside the window the fields' bounds lie in.
        ({"to": "0001-01-05T00:00:00Z"}, "to"),
        ({"from": "1969-12-31T23:59:59Z", "to": "1970-01-02T00:00:00Z"}, "from"),
        ({"to": "2200-01-01T00:00:01Z"}, "to"),
        ({"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"}, "from,to"),
        # Longer than a report covers.
        ({"from": "2000-01-01T00:00:00Z", "to": "2010-01-09T00:00:00Z"}, "from"),
        ({"from": "2000-01-01T00:00:00Z"}, "from"),
        # Backwards once `to` takes its default, now.
        ({"from": "2199-12-01T00:00:00Z"}, "from"),
    ],
    ids=[
        "to-near-year-1",
        "from-before-1970",
        "to-after-2200",
        "unbounded",
        "too-long",
        "from-alone-too-long",
        "from-alone-in-the-future",
    ],
)
async def test_report_periods_out_of_range_are_422_naming_the_field(
    team: Team, body: dict[str, str], field: str
) -> None:
    response = await team["reporter"].post("/api/v1/projects/FLY/reports", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    named = [error["loc"] for error in response.json()["errors"]]
    assert named == [["body", name] for name in field.split(",")]
    assert (await team["reporter"].get("/api/v1/jobs")).json()["items"] == []


async def test_the_widest_periods_a_request_may_ask_for_are_built(
    team: Team, settings: Settings
) -> None:
    bodies = [
        # `from` defaults to `to` minus report_default_days, before 1970: that is fine.
        {"to": "1970-01-02T00:00:00Z"},
        {"from": "2000-01-01T00:00:00Z", "to": "2010-01-08T00:00:00Z"},  # 3660 days
    ]
    for body in bodies:
        response = await team["reporter"].post("/api/v1/projects/FLY/reports", json=body)
        assert response.status_code == 202, response.text
        assert await run_once(settings, response.json()["id"], "task-1") == JobState.succeeded


async def test_unknown_job_is_404(team: Team) -> None:
    response = await team["viewer"].get("/api/v1/jobs/" + "0" * 32)
    assert response.status_code == 404
    assert (await team["viewer"].get("/api/v1/jobs/nope")).status_code == 422


async def test_forged_job_cursors_are_400(team: Team) -> None:
    from flyswatter.http.pagination import encode_cursor

    for values in (["yesterday", 1], ["2026-11-01T00:00:00", 1], ["2026-11-01T00:00:00Z", -1]):
        # Signed with a key the service does not hold: a forgery, whatever it says.
        cursor = encode_cursor(b"not-the-service-key", "/api/v1/jobs", "-created_at", values)
        response = await team["viewer"].get(f"/api/v1/jobs?cursor={cursor}")
        assert response.status_code == 400, response.text


async def test_a_deleted_projects_jobs_and_files_answer_404_until_it_is_restored(
    team: Team, settings: Settings
) -> None:
    location, job_id = await requested_report(team)
    assert await run_once(settings, job_id, "task-1") == JobState.succeeded
    assert (await team["maintainer"].delete("/api/v1/projects/FLY")).status_code == 204
    admin = team.api.as_user("root", roles=["flyswatter-admin"])
    for who in (team["viewer"], team["maintainer"], admin):
        assert (await who.get(location)).status_code == 404
        assert (await who.get(f"{location}/artifact")).status_code == 404
        assert (await who.post(f"{location}/cancel")).status_code == 404
        assert (await who.delete(location)).status_code == 404
        assert (await who.get("/api/v1/jobs")).json()["items"] == []
    assert (await admin.post("/api/v1/projects/FLY/restore")).status_code == 200
    assert (await team["viewer"].get(f"{location}/artifact")).status_code == 200
    listed = (await team["viewer"].get("/api/v1/jobs")).json()["items"]
    assert [job["id"] for job in listed] == [job_id]


@pytest.mark.parametrize(
    ("stored", "error"),
    [
        (
            {"from": "0001-01-01T00:00:00Z", "to": "0001-01-10T00:00:00Z"},
            "its parameters are no longer accepted: from: Value error, must be between",
        ),
        # Its default start (30 days before) is no date at all.
        ({"to": "0001-01-10T00:00:00Z"}, "its parameters are no longer accepted: to: "),
        (
            {"from": "1970-01-01T00:00:00Z", "to": "2199-01-01T00:00:00Z"},
            "its parameters are no longer accepted: a report covers at most 3660 days",
        ),
    ],
)
async def test_a_job_stored_before_todays_period_rules_is_failed_with_the_rules_words(
    team: Team, settings: Settings, stored: dict[str, str], error: str
) -> None:
    location, job_id = await requested_report(team)
    store_parameters(settings, job_id, stored)
    # A refusal, not an error: the attempt ends failed instead of raising.
    assert await run_once(settings, job_id, "task-1") == JobState.failed
    job = (await team["reporter"].get(location)).json()
    assert job["state"] == "failed"
    assert job["error"].startswith(error)
    assert job["artifact"] is None
    assert stored_files(settings) == []


def store_parameters(settings: Settings, job_id: str, stored: dict[str, Any]) -> None:
    """The job's parameters as an older release could have stored them."""
    engine = sa.create_engine(settings.sync_database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE job SET parameters = :parameters WHERE public_id = :id"),
            {"parameters": json.dumps(stored), "id": job_id},
        )
    engine.dispose()


@pytest.mark.parametrize(
    "refused",
    [{"assignee": "a\u0000b"}, {"milestone": "v1"}, {"label": ["x" * 300]}],
    ids=["nul-byte", "unknown-field", "label-too-long"],
)
async def test_a_job_whose_stored_parameters_no_longer_validate_is_still_shown(
    team: Team, settings: Settings, refused: dict[str, object]
) -> None:
    location, job_id = await requested_report(team)
    stored = {"to": "2026-12-01T00:00:00Z", "status": ["open"], **refused}
    store_parameters(settings, job_id, stored)

    async def shown() -> dict[str, Any]:
        one = await team["viewer"].get(location)
        assert one.status_code == 200, one.text
        listed = await team["viewer"].get("/api/v1/jobs")
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == [one.json()]
        return dict(one.json())

    queued = await shown()
    assert queued["state"] == "queued"
    # What still validates is shown, within the schema; the refused value is not.
    assert queued["parameters"]["to"] == "2026-12-01T00:00:00Z"
    assert queued["parameters"]["status"] == ["open"]
    assert set(queued["parameters"]) <= set(ReportParameters.model_json_schema()["properties"])
    for key, value in refused.items():
        assert queued["parameters"].get(key) != value
    # The worker refuses it, with the rule's words on the job.
    assert await run_once(settings, job_id, "task-1") == JobState.failed
    failed = await shown()
    assert failed["state"] == "failed"
    assert failed["error"].startswith("its parameters are no longer accepted: ")
    assert failed["parameters"] == queued["parameters"]


async def test_a_queued_report_of_a_deleted_project_is_failed_not_built(
    team: Team, settings: Settings
) -> None:
    await team.issue(title="Secret roadmap item")
    location, job_id = await requested_report(team)
    assert (await team["maintainer"].delete("/api/v1/projects/FLY")).status_code == 204
    assert await run_once(settings, job_id, "task-1") == JobState.failed
    # A redelivery finds it finished.
    assert await run_once(settings, job_id, "task-2") is None
    engine = sa.create_engine(settings.sync_database_url)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(Artifact)).scalar() == 0
    engine.dispose()
    assert stored_files(settings) == []
    admin = team.api.as_user("root", roles=["flyswatter-admin"])
    assert (await admin.post("/api/v1/projects/FLY/restore")).status_code == 200
    job = (await team["viewer"].get(location)).json()
    assert job["state"] == "failed"
    assert job["error"] == PROJECT_DELETED
    assert job["artifact"] is None


async def test_a_run_that_lost_its_claim_leaves_the_winners_file_and_removes_its_own(
    team: Team, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, job_id = await requested_report(team)
    engine = sa.create_engine(settings.sync_database_url)
    # Run A claims the job, then outlives its lease (nothing renews it) ...
    claim_a = claim_job(engine, job_id, "task-a", 900, settings.job_max_retries + 1)
    assert claim_a is not None
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE job SET lease_expires_at = :t WHERE public_id = :id"),
            {"t": "2000-01-01 00:00:00", "id": job_id},
        )
    # ... so that the broker's redelivery, run B, takes the job over and finishes it.
    assert await run_once(settings, job_id, "task-b") == JobState.succeeded
    with engine.connect() as connection:
        winner = connection.execute(sa.select(Artifact.key)).scalar_one()
    engine.dispose()
    assert winner.startswith(f"reports/{job_id}/")
    finished = (await team["viewer"].get(location)).json()
    for n in range(5):
        await team.issue(title=f"Filed while run A was still rendering {n}")
    # A gets to the end of its stale attempt, with the claim it took long ago.
    real_claim = tasks.claim_job
    monkeypatch.setattr(
        tasks,
        "claim_job",
        lambda e, p, t, s, **limit: claim_a if t == "task-a" else real_claim(e, p, t, s, **limit),
    )
    assert await run_once(settings, job_id, "task-a") is None
    download = await team["viewer"].get(f"{location}/artifact")
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == finished["artifact"]["checksum"]
    assert len(download.content) == finished["artifact"]["size"]
    # A's own object went with its rolled-back transaction: only the winner's is stored.
    root = Path(settings.storage_dir)
    assert [path.relative_to(root).as_posix() for path in stored_files(settings)] == [winner]


async def test_a_report_running_past_its_lease_keeps_it_from_a_redelivery_and_a_twin(
    team: Team, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wait below outlasts both: the lease, and the visibility timeout, so that no lease
    # taken from that timeout could still be live after it.
    settings = settings.model_copy(
        update={"job_lease_seconds": 2, "job_visibility_timeout_seconds": 5}
    )
    real_build = tasks.build_report_file
    building, go_on = threading.Event(), threading.Event()

    def slow_first_build(runtime: JobRuntime, claim: tasks.Claim, now: Any) -> tuple[bytes, str]:
        if not building.is_set():
            building.set()
            assert go_on.wait(60)
        return real_build(runtime, claim, now)

    monkeypatch.setattr(tasks, "build_report_file", slow_first_build)
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with in_process_worker(settings):
            location, job_id = await requested_report(team)
            assert await anyio.to_thread.run_sync(building.wait, 30)
            await anyio.sleep(6)
            with engine.connect() as connection:
                task_id, lease_end = connection.execute(
                    sa.select(Job.task_id, Job.lease_expires_at).where(
                        sa.column("public_id") == job_id
                    )
                ).one()
            # Redis hands the unacknowledged message, task id and all, to another worker;
            # the requeue sweep publishes a twin under a new task id.
            assert await run_once(settings, job_id, task_id) is None
            assert await run_once(settings, job_id, "a-twin-from-the-sweep") is None
            assert lease_end > utcnow()
            go_on.set()
            job = await wait_for_job(team["viewer"], location)
    finally:
        go_on.set()
        engine.dispose()
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 1
    assert len(stored_files(settings)) == 1


async def test_a_stale_run_of_the_same_task_cannot_finish_a_job_a_newer_attempt_holds(
    team: Team, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, job_id = await requested_report(team)
    engine = sa.create_engine(settings.sync_database_url)
    max_attempts = settings.job_max_retries + 1
    claim_a = claim_job(engine, job_id, "task-1", 900, max_attempts=max_attempts)
    assert claim_a is not None
    # A's lease lapsed (its renewals could not reach the database), and the broker's
    # redelivery of the same message, B, took the job: one task id, two attempts.
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE job SET lease_expires_at = :t WHERE public_id = :id"),
            {"t": "2000-01-01 00:00:00", "id": job_id},
        )
    claim_b = claim_job(engine, job_id, "task-1", 900, max_attempts=max_attempts)
    engine.dispose()
    assert claim_b is not None
    assert claim_b.attempts == claim_a.attempts + 1
    claims = iter([claim_a, claim_b])
    monkeypatch.setattr(tasks, "claim_job", lambda *args, **kwargs: next(claims))
    # A gets to its end first: fenced out by the newer attempt, it records nothing.
    assert await run_once(settings, job_id, "task-1") is None
    assert (await team["viewer"].get(location)).json()["state"] == "running"
    assert stored_files(settings) == []
    assert await run_once(settings, job_id, "task-1") == JobState.succeeded
    job = (await team["viewer"].get(location)).json()
    assert job["state"] == "succeeded"
    assert job["attempts"] == 2
    assert len(stored_files(settings)) == 1


async def logged(caplog: pytest.LogCaptureFixture, text: str, seconds: float = 30) -> None:
    """Until a captured log line says ``text`` (the worker runs on a thread of its own)."""
    deadline = time.monotonic() + seconds
    while not any(text in line for line in log_lines(caplog.records)):
        assert time.monotonic() < deadline, log_lines(caplog.records)
        await anyio.sleep(0.05)


async def test_a_stale_run_that_meets_a_fault_leaves_the_job_to_the_attempt_holding_it(
    team: Team,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = sa.create_engine(settings.sync_database_url)
    max_attempts = settings.job_max_retries + 1
    claims: list[tasks.Claim] = []

    def overtaken_then_broken(
        runtime: JobRuntime, claim: tasks.Claim, now: Any
    ) -> tuple[bytes, str]:
        # Run A's lease lapsed mid-build, and a redelivery, B, took the job; then A meets
        # an internal error, which its task gives up on at once.
        with engine.begin() as connection:
            public_id = connection.execute(
                sa.text("UPDATE job SET lease_expires_at = :t WHERE id = :id RETURNING public_id"),
                {"t": "2000-01-01 00:00:00", "id": claim.job_id},
            ).scalar_one()
        claim_b = claim_job(engine, public_id, "a-redelivery", 900, max_attempts=max_attempts)
        assert claim_b is not None
        claims.append(claim_b)
        raise RuntimeError("a bug in the report")

    monkeypatch.setattr(tasks, "build_report_file", overtaken_then_broken)
    try:
        with caplog.at_level(logging.INFO, logger="flyswatter.jobs"), in_process_worker(settings):
            location, job_id = await requested_report(team)
            await logged(caplog, f"job {job_id} not marked failed")
    finally:
        engine.dispose()
    # A recorded nothing: B still holds the job, which no failure of A's has touched.
    job = (await team["viewer"].get(location)).json()
    assert (job["state"], job["attempts"], job["error"]) == ("running", 2, None)
    monkeypatch.undo()
    (claim_b,) = claims
    monkeypatch.setattr(tasks, "claim_job", lambda *args, **kwargs: claim_b)
    assert await run_once(settings, job_id, "a-redelivery") == JobState.succeeded
    job = (await team["viewer"].get(location)).json()
    assert (job["state"], job["attempts"], job["error"]) == ("succeeded", 2, None)


@pytest.mark.parametrize(
    ("lease", "outcome", "state"),
    [("live", "not marked failed", "running"), ("released", "failed:", "failed")],
)
async def test_a_run_that_gives_up_before_its_claim_fails_the_job_only_if_no_run_holds_it(
    team: Team,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    lease: str,
    outcome: str,
    state: str,
) -> None:
    settings = settings.model_copy(update={"job_max_retries": 0})
    engine = sa.create_engine(settings.sync_database_url)
    location, job_id = await requested_report(team)
    # A run claimed the job: it still holds it (a live lease), or it ended and released it
    # (an earlier attempt of this task, which met a fault). This delivery's claim meets a
    # database fault, with no retry left: having claimed nothing, it fails the job only
    # where no run will.
    held = claim_job(engine, job_id, "an-earlier-run", 900, max_attempts=1)
    assert held is not None
    if lease == "released":
        with engine.begin() as connection:
            connection.execute(
                sa.update(Job)
                .where(sa.column("public_id") == job_id)
                .values(lease_expires_at=utcnow())
            )
    engine.dispose()

    def database_down(*args: object, **kwargs: object) -> tasks.Claim | None:
        raise database_fault()

    monkeypatch.setattr(tasks, "claim_job", database_down)
    try:
        with caplog.at_level(logging.INFO, logger="flyswatter.jobs"), in_process_worker(settings):
            await logged(caplog, f"job {job_id} {outcome}")
    finally:
        monkeypatch.undo()
    job = (await team["viewer"].get(location)).json()
    assert (job["state"], job["attempts"]) == (state, 1)
    if state == "failed":
        assert job["error"].startswith("database unavailable")
        assert job["error"].endswith("gave up after 1 attempt(s)")
    else:
        assert job["error"] is None


class WorkerKilled(Exception):
    """The run's process dying mid-report (out of memory, a segfault): the run ends there,
    with no retry and no failure recorded (run_report_job leaves those to its task)."""


async def test_a_job_that_keeps_killing_its_worker_is_failed_once_out_of_attempts(
    team: Team, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"job_max_retries": 2})
    location, job_id = await requested_report(team)

    def killed(*args: object) -> tuple[bytes, str]:
        raise WorkerKilled

    monkeypatch.setattr(tasks, "build_report_file", killed)
    # With acks_late and reject_on_worker_lost the broker redelivers the same message, task id
    # and all, after each kill: the first attempt and its two retries.
    for attempt in (1, 2, 3):
        with pytest.raises(ClaimedRunFault) as raised:
            await run_once(settings, job_id, "task-1")
        # The fault comes with the attempt that met it, which fences what its task records.
        assert raised.value.attempt == attempt
        assert isinstance(raised.value.fault, WorkerKilled)
        assert raised.value.__cause__ is raised.value.fault
    # The next delivery is not built (nor kills another worker): the job fails, and the
    # message is acknowledged.
    assert await run_once(settings, job_id, "task-1") == JobState.failed
    job = (await team["viewer"].get(location)).json()
    assert job["state"] == "failed"
    assert job["attempts"] == 3
    assert job["error"].endswith("gave up after 3 attempt(s)")
    assert "worker stopped" in job["error"]
    assert job["finished_at"] is not None
    assert job["artifact"] is None
    # Any later redelivery finds it finished.
    assert await run_once(settings, job_id, "task-1") is None
    assert (await team["viewer"].get(location)).json() == job


async def test_an_attempt_whose_recording_fails_before_the_commit_removes_its_file(
    team: Team, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = (await team["reporter"].post("/api/v1/projects/FLY/reports")).json()["id"]

    def database_fails(*args: object, **kwargs: object) -> bool:
        raise sa.exc.OperationalError("UPDATE job", {}, Exception("connection lost"))

    monkeypatch.setattr(report_files, "_finish", database_fails)
    with pytest.raises(ClaimedRunFault) as raised:
        await run_once(settings, job_id, "task-1")
    assert isinstance(raised.value.fault, sa.exc.OperationalError)
    assert stored_files(settings) == []
    monkeypatch.undo()
    # The retry stores a file of its own and records it.
    assert await run_once(settings, job_id, "task-1") == JobState.succeeded
    assert len(stored_files(settings)) == 1


class RefusesOneKey(LocalStorage):
    """Storage that refuses to delete one object: for a reason of the backend's own, or (when
    ``down``) as storage that has just become unreachable."""

    def __init__(self, root: Path, refused: str, *, down: bool = False) -> None:
        super().__init__(root)
        self.refused = refused
        self.down = down

    def delete(self, key: str) -> None:
        if key == self.refused:
            if self.down:
                raise StorageUnavailable("object storage unreachable")
            raise PermissionError("the backend's own words")
        super().delete(key)


async def expired_reports(team: Team, settings: Settings, runtime: JobRuntime) -> list[str]:
    """Two built reports, both past their expiry: the keys of their files, oldest expiry first."""
    for _ in range(2):
        job_id = (await team["reporter"].post("/api/v1/projects/FLY/reports")).json()["id"]
        assert await run_once(settings, job_id, "task-1") == JobState.succeeded
    with runtime.engine.begin() as connection:
        keys = list(connection.execute(sa.select(Artifact.key).order_by(sa.column("id"))).scalars())
        for days, key in enumerate(keys):
            connection.execute(
                sa.update(Artifact)
                .where(sa.column("key") == key)
                .values(expires_at=utcnow() - timedelta(days=len(keys) - days))
            )
    return keys


def artifact_keys(runtime: JobRuntime) -> list[str]:
    with runtime.engine.connect() as connection:
        return list(connection.execute(sa.select(Artifact.key)).scalars())


async def test_an_artifact_the_expiry_sweep_cannot_remove_holds_up_no_other(
    team: Team, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = JobRuntime(settings)
    first, _ = await expired_reports(team, settings, runtime)
    root = Path(settings.storage_dir)
    # The sweep takes the oldest expiry first: the refused file comes first, every sweep.
    runtime.storage = RefusesOneKey(root, refused=first)
    with caplog.at_level(logging.WARNING, logger="flyswatter.jobs"):
        assert expire_artifacts(runtime) == 1
    (record,) = [
        r for r in caplog.records if r.name == "flyswatter.jobs" and r.levelno >= logging.WARNING
    ]
    assert first in record.getMessage()
    assert "own words" not in record.getMessage()
    # The refused file keeps its row, to be tried again; the other went with its row.
    assert artifact_keys(runtime) == [first]
    assert [path.relative_to(root).as_posix() for path in stored_files(settings)] == [first]
    runtime.storage = LocalStorage(root)
    assert expire_artifacts(runtime) == 1
    assert artifact_keys(runtime) == []
    assert stored_files(settings) == []
    runtime.engine.dispose()


async def test_storage_down_mid_sweep_keeps_the_expiry_of_the_files_already_removed(
    team: Team, settings: Settings
) -> None:
    runtime = JobRuntime(settings)
    _, second = await expired_reports(team, settings, runtime)
    root = Path(settings.storage_dir)
    runtime.storage = RefusesOneKey(root, refused=second, down=True)
    assert expire_artifacts(runtime) == 1
    # The first file is gone and so is its row (none names a missing file); the other waits.
    assert artifact_keys(runtime) == [second]
    assert [path.relative_to(root).as_posix() for path in stored_files(settings)] == [second]
    runtime.engine.dispose()


def database_fault() -> sa.exc.OperationalError:
    """A driver error as SQLAlchemy raises it: its text carries the statement, its values, and
    the driver's own words (which may quote values too)."""
    return sa.exc.OperationalError(
        "UPDATE job SET error=? WHERE public_id=?",
        ("the-bound-value", "x"),
        Exception('the driver\'s own words, quoting "the-quoted-value"'),
    )


def log_lines(records: list[logging.LogRecord]) -> list[str]:
    """Every record as a handler would write it, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(message)s")
    return [formatter.format(record) for record in records]


async def test_a_database_fault_reaches_no_log_line_with_its_sql_through_retries_and_giving_up(
    team: Team,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings.model_copy(
        update={
            "job_max_retries": 1,
            "job_retry_backoff_seconds": 0.1,
            "job_retry_backoff_max_seconds": 0.2,
        }
    )
    job_id = (await team["reporter"].post("/api/v1/projects/FLY/reports")).json()["id"]
    real_run = tasks.run_report_job

    def database_down(runtime: JobRuntime, public_id: str, task_id: str) -> JobState | None:
        if public_id != job_id:
            return real_run(runtime, public_id, task_id)
        raise database_fault()

    def cannot_fail(*args: object) -> bool:
        raise database_fault()

    monkeypatch.setattr(tasks, "run_report_job", database_down)
    # Giving up finds the database down too: the job cannot even be marked failed.
    monkeypatch.setattr(tasks, "fail_job", cannot_fail)
    celery = "celery.app.trace"
    with caplog.at_level(logging.INFO), in_process_worker(settings):
        # The attempt is retried once, then the retry gives up: the task ends either way.
        deadline = time.monotonic() + 30
        while not any(
            r.name == celery and "retry:" not in r.getMessage() and job_task(caplog, r)
            for r in caplog.records
        ):
            assert time.monotonic() < deadline, log_lines(caplog.records)
            await anyio.sleep(0.05)
    lines = log_lines(caplog.records)
    assert [line for line in lines if "retry: Retry in" in line], lines
    for line in lines:
        assert "[SQL:" not in line
        assert "the-bound-value" not in line
        assert "the-quoted-value" not in line
    assert [line for line in lines if f"job {job_id}" in line and "gave up" in line], lines
    # The task ended as a run does (its outcome is the job's), not with the driver's error.
    assert not [line for line in lines if "raised unexpected" in line], lines


def job_task(caplog: pytest.LogCaptureFixture, record: logging.LogRecord) -> bool:
    """Whether a Celery record is of the task that was retried (its id in brackets)."""
    retried = {
        match.group(1)
        for r in caplog.records
        if (match := re.search(r"\[([0-9a-f-]{36})\] retry:", r.getMessage()))
    }
    return any(f"[{task_id}]" in record.getMessage() for task_id in retried)
