"""Artifacts and attachments in storage: the local directory and a real S3-compatible server
(moto's), streamed writes that break off leaving nothing, the download routes on both
(streamed or redirected to a presigned URL), a store that refuses the service (a missing
bucket, credentials it does not accept), expiry, and the sweep of orphaned objects, which
removes only what the intent log recorded and no row came for."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import boto3
import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from flyswatter.config import Settings
from flyswatter.db import utcnow
from flyswatter.jobs.models import JobState
from flyswatter.jobs.sweeps import (
    expire_artifacts,
    remove_deleted_objects,
    remove_orphaned_objects,
)
from flyswatter.jobs.tasks import JobRuntime, run_report_job
from flyswatter.services import Flyswatter
from flyswatter.storage.intents import intend_write
from flyswatter.storage.models import StorageWrite
from flyswatter.storage.s3 import S3Storage
from flyswatter.storage.service import (
    LocalStorage,
    ObjectMissing,
    Storage,
    StorageUnavailable,
)
from tests.support.api import Api, Team, make_team
from tests.support.jobs import MotoServer, in_process_worker, wait_for_job
from tests.support.servers import free_port


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_settings(base_settings: Settings, moto_server: MotoServer) -> Settings:
    settings = moto_server.settings(base_settings, f"artifacts-{uuid.uuid4().hex[:8]}")
    S3Storage(settings).ensure_bucket()
    return settings


def round_trip(storage: Storage) -> None:
    data = b"%PDF-1.7 " + bytes(range(256)) * 1000
    stored = storage.put("reports/a.pdf", data, "application/pdf")
    assert stored.size == len(data)
    assert b"".join(storage.open("reports/a.pdf")) == data
    storage.delete("reports/a.pdf")
    with pytest.raises(ObjectMissing):
        b"".join(storage.open("reports/a.pdf"))
    storage.delete("reports/a.pdf")  # deleting twice is fine


def test_local_storage_round_trip(tmp_path: Path) -> None:
    round_trip(LocalStorage(tmp_path))


@pytest.mark.parametrize("key", ["../escape.pdf", "/etc/passwd", ""])
def test_local_storage_refuses_keys_outside_its_directory(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="relative storage key"):
        LocalStorage(tmp_path / "root").put(key, b"x", "text/plain")


def test_s3_storage_round_trip(s3_settings: Settings) -> None:
    round_trip(S3Storage(s3_settings))


def test_s3_presigned_url_downloads_with_name_and_type(s3_settings: Settings) -> None:
    storage = S3Storage(s3_settings)
    storage.put("reports/b.pdf", b"%PDF-1.7 hello", "application/pdf")
    url = storage.presigned_url(
        "reports/b.pdf", filename="Отчёт FLY.pdf", content_type="application/pdf", expires_in=60
    )
    assert url is not None
    assert "X-Amz-Expires=60" in url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"%PDF-1.7 hello"
    assert response.headers["Content-Type"] == "application/pdf"
    assert "filename*=UTF-8''" in response.headers["Content-Disposition"]


def failing_after(chunks: int) -> Iterator[bytes]:
    """Chunks of a stream that breaks off (a cap crossed, a client gone) after ``chunks``."""
    for _ in range(chunks):
        yield bytes(64 * 1024)
    raise OverflowError("the stream broke off")


@pytest.mark.parametrize("chunks", [3, 200], ids=["one part", "multipart"])
def test_a_stream_that_breaks_off_leaves_no_s3_object(s3_settings: Settings, chunks: int) -> None:
    storage = S3Storage(s3_settings)
    with pytest.raises(OverflowError):
        storage.put_stream("attachments/1/broken", failing_after(chunks), "image/png")
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix="attachments/")
    assert listed.get("KeyCount", 0) == 0
    uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket)
    assert uploads.get("Uploads", []) == []


def test_a_stream_that_breaks_off_leaves_no_local_file(tmp_path: Path) -> None:
    with pytest.raises(OverflowError):
        LocalStorage(tmp_path).put_stream("attachments/1/broken", failing_after(3), "image/png")
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def test_a_streamed_s3_object_is_counted_and_hashed(s3_settings: Settings) -> None:
    storage = S3Storage(s3_settings)
    pieces = [bytes([n]) * 100_000 for n in range(120)]  # 12 MB: a multipart upload
    stored = storage.put_stream("attachments/1/whole", iter(pieces), "application/octet-stream")
    data = b"".join(pieces)
    assert stored.size == len(data)
    assert stored.checksum == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(b"".join(storage.open("attachments/1/whole"))).hexdigest() == (
        stored.checksum
    )


def test_s3_storage_down_is_storage_unavailable(base_settings: Settings) -> None:
    settings = base_settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
        }
    )
    with pytest.raises(StorageUnavailable, match="unreachable"):
        S3Storage(settings).put("reports/c.pdf", b"x", "application/pdf")


@pytest.fixture
def settings(s3_settings: Settings, clean_database: str) -> Settings:
    return s3_settings.model_copy(update={"s3_presigned_downloads": True})


async def test_report_on_s3_downloads_through_a_presigned_redirect(
    api: Api, settings: Settings
) -> None:
    team = await make_team(api)
    await team.issue(title="Stored in S3")
    with in_process_worker(settings):
        response = await team["reporter"].post("/api/v1/projects/FLY/reports")
        job = await wait_for_job(team["viewer"], response.headers["Location"])
    assert job["state"] == "succeeded", job
    redirect = await team["viewer"].get(job["links"]["artifact"])
    assert redirect.status_code == 307
    url = redirect.headers["Location"]
    assert url.startswith(settings.s3_endpoint_url or "")
    assert f"X-Amz-Expires={settings.s3_presign_seconds}" in url
    async with httpx.AsyncClient() as s3_client:
        download = await s3_client.get(url)
    assert download.status_code == 200
    assert download.content.startswith(b"%PDF")
    assert download.headers["Content-Type"] == "application/pdf"
    assert len(download.content) == job["artifact"]["size"]


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


async def attached_png(api: Api, declared: str = "image/png") -> tuple[Team, httpx.Response]:
    """The team, and the answer to its reporter attaching a PNG (sent as ``declared``) to
    FLY-1."""
    team = await make_team(api)
    await team.issue()
    created = await team["reporter"].post(
        "/api/v1/issues/FLY-1/attachments", files={"file": ("shot.png", PNG, declared)}
    )
    assert created.status_code == 201, created.text
    return team, created


async def test_attachment_on_s3_is_shown_inline_through_a_presigned_redirect(
    api: Api, settings: Settings
) -> None:
    team, created = await attached_png(api, declared="text/plain")
    redirect = await team["viewer"].get(created.headers["Location"])
    assert redirect.status_code == 307
    async with httpx.AsyncClient() as s3_client:
        download = await s3_client.get(redirect.headers["Location"])
    assert download.content == PNG
    assert download.headers["Content-Type"] == "image/png"
    assert download.headers["Content-Disposition"].startswith("inline; ")
    deleted = await team["reporter"].delete(created.headers["Location"])
    assert deleted.status_code == 204
    storage = S3Storage(settings)
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix="attachments/")
    assert listed.get("KeyCount", 0) == 0


async def test_expired_artifacts_are_removed_with_their_files(api: Api, settings: Settings) -> None:
    team = await make_team(api)
    with in_process_worker(settings):
        response = await team["reporter"].post("/api/v1/projects/FLY/reports")
        job = await wait_for_job(team["viewer"], response.headers["Location"])
    runtime = JobRuntime(settings)
    engine = sa.create_engine(settings.sync_database_url)
    with engine.connect() as connection:
        key = connection.execute(sa.text("SELECT key FROM artifact")).scalar_one()
    assert key.startswith(f"reports/{job['id']}/")
    assert b"".join(runtime.storage.open(key)).startswith(b"%PDF")
    assert expire_artifacts(runtime) == 0
    with engine.begin() as connection:
        past = utcnow() - timedelta(seconds=1)
        connection.execute(
            sa.text("UPDATE artifact SET expires_at = :past"),
            {"past": past.replace(tzinfo=None) if engine.dialect.name == "sqlite" else past},
        )
    engine.dispose()
    assert expire_artifacts(runtime) == 1
    with pytest.raises(ObjectMissing):
        b"".join(runtime.storage.open(key))
    after = (await team["viewer"].get(response.headers["Location"])).json()
    assert after["state"] == "succeeded"
    assert after["artifact"] is None
    gone = await team["viewer"].get(f"{response.headers['Location']}/artifact")
    assert gone.status_code == 404
    assert "expired" in gone.json()["detail"]


def empty_and_remove_bucket(storage: S3Storage) -> None:
    listed = storage.client.list_objects_v2(Bucket=storage.bucket)
    for item in listed.get("Contents", []):
        storage.client.delete_object(Bucket=storage.bucket, Key=item["Key"])
    storage.client.delete_bucket(Bucket=storage.bucket)


# Every call the service makes to a store, as the callers make them.
OPERATIONS: dict[str, Callable[[Storage], Any]] = {
    "download": lambda storage: b"".join(storage.open("attachments/1/a")),
    "write": lambda storage: storage.put("reports/j/a.pdf", b"%PDF", "application/pdf"),
    "streamed write": lambda storage: storage.put_stream(
        "attachments/1/b", iter([b"x" * 1000]), "text/plain"
    ),
    "delete": lambda storage: storage.delete("attachments/1/a"),
    "check": lambda storage: storage.check(),
}


def storage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "flyswatter.storage" and record.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_missing_bucket_is_storage_unavailable_naming_the_code(
    base_settings: Settings,
    moto_server: MotoServer,
    caplog: pytest.LogCaptureFixture,
    operation: str,
) -> None:
    settings = moto_server.settings(base_settings, f"never-made-{uuid.uuid4().hex[:8]}")
    with (
        caplog.at_level(logging.WARNING, logger="flyswatter.storage"),
        pytest.raises(StorageUnavailable) as raised,
    ):
        OPERATIONS[operation](S3Storage(settings))
    assert "NoSuchBucket" in str(raised.value)
    # botocore's own words ("An error occurred (...) when calling ...") stay out of it.
    assert "when calling" not in str(raised.value)
    (warning,) = storage_warnings(caplog)
    assert "NoSuchBucket" in warning
    assert settings.s3_bucket in warning
    assert "when calling" not in warning


@pytest.fixture(scope="module")
def guarded_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, Any]]:
    """moto checking every request's credentials after its first three, which make a bucket,
    a user and the user's access key (the user has no permission at all)."""
    server = MotoServer(
        tmp_path_factory.mktemp("guarded-moto") / "moto.log",
        environment={"INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    )
    server.start()
    plain = {
        "endpoint_url": server.url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    boto3.client("s3", **plain).create_bucket(Bucket="guarded")
    iam = boto3.client("iam", **plain)
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    yield server, key
    server.stop()


REFUSED = {
    "unknown access key": ("InvalidAccessKeyId", lambda key: ("AKIAUNKNOWN0000", "s3cr3t-unknown")),
    "wrong secret": ("SignatureDoesNotMatch", lambda key: (key["AccessKeyId"], "s3cr3t-wrong")),
    "no permission": ("AccessDenied", lambda key: (key["AccessKeyId"], key["SecretAccessKey"])),
}


@pytest.mark.parametrize("refusal", REFUSED)
def test_credentials_the_store_refuses_are_storage_unavailable_and_never_logged(
    base_settings: Settings,
    guarded_moto: tuple[MotoServer, Any],
    caplog: pytest.LogCaptureFixture,
    refusal: str,
) -> None:
    server, key = guarded_moto
    code, credentials = REFUSED[refusal]
    access_key, secret = credentials(key)
    settings = server.settings(base_settings, "guarded").model_copy(
        update={"s3_access_key_id": access_key, "s3_secret_access_key": secret}
    )
    storage = S3Storage(settings)
    with caplog.at_level(logging.WARNING, logger="flyswatter.storage"):
        for operation, call in OPERATIONS.items():
            with pytest.raises(StorageUnavailable) as raised:
                call(storage)
            # A bucket check is a HEAD: its answer has no body, only the status.
            assert (code if operation != "check" else "403") in str(raised.value), operation
            assert secret not in str(raised.value)
            assert "when calling" not in str(raised.value)
    warnings = storage_warnings(caplog)
    assert len(warnings) == len(OPERATIONS)
    assert all(secret not in warning and "when calling" not in warning for warning in warnings)
    assert all(access_key not in record.getMessage() for record in caplog.records)


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """boto3 finds no credentials anywhere: none configured, none in the environment, no
    files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_presigning_without_credentials_is_storage_unavailable(
    s3_settings: Settings, no_ambient_credentials: None
) -> None:
    settings = s3_settings.model_copy(
        update={"s3_access_key_id": None, "s3_secret_access_key": None}
    )
    with pytest.raises(StorageUnavailable, match="NoCredentialsError"):
        S3Storage(settings).presigned_url(
            "reports/a.pdf", filename="a.pdf", content_type="application/pdf", expires_in=60
        )


def assert_storage_problem(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["detail"] == "the file storage is unavailable; retry later"


async def test_a_bucket_gone_answers_503_to_downloads_and_uploads_and_the_sweep_waits(
    api: Api, settings: Settings, app: Flyswatter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streamed downloads: the API reads the object itself.
    streamed = settings.model_copy(update={"s3_presigned_downloads": False})
    monkeypatch.setattr(app, "running", replace(app.services, settings=streamed))
    team, created = await attached_png(api)
    storage = S3Storage(settings)
    empty_and_remove_bucket(storage)
    assert_storage_problem(await team["viewer"].get(created.headers["Location"]))
    again = await team["reporter"].post(
        "/api/v1/issues/FLY-1/attachments", files={"file": ("again.png", PNG, "image/png")}
    )
    assert_storage_problem(again)
    listed = await team["viewer"].get("/api/v1/issues/FLY-1/attachments")
    assert [item["filename"] for item in listed.json()["items"]] == ["shot.png"]
    # The deletion is committed; its object waits, named, for a sweep the bucket is back for.
    assert (await team["reporter"].delete(created.headers["Location"])).status_code == 204
    runtime = JobRuntime(settings)
    assert remove_deleted_objects(runtime, grace=timedelta(0)) == 0
    # The failed upload's intent (its object could not be removed either) waits too.
    assert len(intent_keys(runtime)) == 1
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == 0
    assert len(intent_keys(runtime)) == 1
    storage.ensure_bucket()
    assert remove_deleted_objects(runtime, grace=timedelta(0)) == 1
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == 1
    assert intent_keys(runtime) == []
    runtime.engine.dispose()


async def test_a_report_on_a_missing_bucket_fails_with_the_stores_code(
    api: Api, settings: Settings
) -> None:
    missing = settings.model_copy(
        update={"s3_bucket": f"never-made-{uuid.uuid4().hex[:8]}", "job_max_retries": 0}
    )
    team = await make_team(api)
    with in_process_worker(missing):
        response = await team["reporter"].post("/api/v1/projects/FLY/reports")
        job = await wait_for_job(team["viewer"], response.headers["Location"])
    assert job["state"] == "failed", job
    assert "NoSuchBucket" in job["error"]
    assert "when calling" not in job["error"]
    assert job["error"].endswith("gave up after 1 attempt(s)")


async def test_a_presigned_download_without_credentials_is_a_503(
    api: Api,
    settings: Settings,
    app: Flyswatter,
    monkeypatch: pytest.MonkeyPatch,
    no_ambient_credentials: None,
) -> None:
    team = await make_team(api)
    with in_process_worker(settings):
        response = await team["reporter"].post("/api/v1/projects/FLY/reports")
        job = await wait_for_job(team["viewer"], response.headers["Location"])
    assert job["state"] == "succeeded", job
    keyless = settings.model_copy(update={"s3_access_key_id": None, "s3_secret_access_key": None})
    monkeypatch.setattr(app, "running", replace(app.services, storage=S3Storage(keyless)))
    assert_storage_problem(await team["viewer"].get(job["links"]["artifact"]))


def s3_keys(storage: S3Storage) -> list[str]:
    listed = storage.client.list_objects_v2(Bucket=storage.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def intent_keys(runtime: JobRuntime) -> list[str]:
    with runtime.engine.connect() as connection:
        return sorted(connection.execute(sa.select(col(StorageWrite.key))).scalars())


async def test_the_orphan_sweep_on_s3_removes_recorded_dead_writes_and_abandoned_uploads_only(
    api: Api, settings: Settings
) -> None:
    team, created = await attached_png(api)
    runtime = JobRuntime(settings)
    job_id = (await team["reporter"].post("/api/v1/projects/FLY/reports")).json()["id"]
    state = await anyio.to_thread.run_sync(run_report_job, runtime, job_id, "task-1")
    assert state == JobState.succeeded
    storage = runtime.storage
    assert isinstance(storage, S3Storage)
    committed = s3_keys(storage)
    assert len(committed) == 2
    assert intent_keys(runtime) == []
    # Writes whose row never came: recorded, stored, and then nothing.
    dead = ["attachments/1/dead", "reports/gone/dead.pdf"]
    for key in dead:
        intend_write(runtime.engine, key)
        storage.put(key, b"bytes", "text/plain")
    # Objects this database never recorded (another database's, or written after the
    # backup it was restored from), and one outside the service's prefixes.
    unrecorded = ["attachments/1/unrecorded", "reports/other/unrecorded.pdf", "elsewhere/kept"]
    for key in unrecorded:
        storage.put(key, b"bytes", "text/plain")
    # What a process killed in the middle of a multipart upload leaves: parts, no object.
    begun = storage.client.create_multipart_upload(Bucket=storage.bucket, Key="attachments/1/cut")
    storage.client.upload_part(
        Bucket=storage.bucket,
        Key="attachments/1/cut",
        UploadId=begun["UploadId"],
        PartNumber=1,
        Body=bytes(1024),
    )
    # moto dates every multipart upload 2010-11-10 (moto/s3/responses.py): under the real
    # grace the upload is old, and the intents, just written, are young.
    assert remove_orphaned_objects(runtime) == 1
    assert storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []
    assert s3_keys(storage) == sorted([*committed, *dead, *unrecorded])
    # With no grace, the recorded dead writes go; neither what rows name nor what this
    # database never recorded does, however old.
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == 2
    assert s3_keys(storage) == sorted([*committed, *unrecorded])
    assert intent_keys(runtime) == []
    download = await team["viewer"].get(created.headers["Location"])
    assert download.status_code == 307
    runtime.engine.dispose()
