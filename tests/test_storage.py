"""Artifacts and attachments in storage: the local directory and a real S3-compatible server
(moto's), streamed writes that break off leaving nothing, the download routes on both
(streamed or redirected to a presigned URL), and expiry."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from flyswatter.config import Settings
from flyswatter.db import utcnow
from flyswatter.jobs.sweeps import expire_artifacts
from flyswatter.jobs.tasks import JobRuntime
from flyswatter.storage.service import (
    LocalStorage,
    ObjectMissing,
    S3Storage,
    Storage,
    StorageUnavailable,
)
from tests.support.api import Api, make_team
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


async def test_attachment_on_s3_is_shown_inline_through_a_presigned_redirect(
    api: Api, settings: Settings
) -> None:
    team = await make_team(api)
    await team.issue()
    created = await team["reporter"].post(
        "/api/v1/issues/FLY-1/attachments", files={"file": ("shot.png", PNG, "text/plain")}
    )
    assert created.status_code == 201, created.text
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
