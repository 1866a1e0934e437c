"""Files on issues: streamed to storage with a checksum and a sniffed type, listed, served
inline or as downloads, deleted by their uploader or a maintainer; a failed upload leaves
neither a row nor a stored object (nor its intent, unless the object could not be removed),
an upload whose object the orphan sweep claimed meanwhile is refused, and a commit that fails
leaves the object to the database to decide."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.app import create_app
from flyswatter.attachments.models import Attachment
from flyswatter.config import Settings
from flyswatter.events.models import Event
from flyswatter.jobs.sweeps import remove_deleted_objects, remove_orphaned_objects
from flyswatter.jobs.tasks import JobRuntime
from flyswatter.services import Flyswatter
from flyswatter.storage.service import LocalStorage, StorageUnavailable, StoredObject
from tests.support.api import Api, AuthedClient, Team, make_team, walk_pages
from tests.support.jobs import SweptAfterEachWrite

MAX_BYTES = 100_000
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
PDF = b"%PDF-1.4\n" + bytes(200)
ATTACHMENTS = "/api/v1/issues/FLY-1/attachments"


@pytest.fixture(scope="module")
def module_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    storage = tmp_path_factory.mktemp("attachments") / "files"
    return base_settings.model_copy(
        update={"storage_dir": str(storage), "attachment_max_bytes": MAX_BYTES}
    )


@pytest.fixture(scope="module")
def shared_app(module_settings: Settings) -> FastAPI:
    """One app for the module's settings (building one per test costs seconds here)."""
    return create_app(module_settings)


@pytest.fixture
def settings(module_settings: Settings, clean_database: str) -> Settings:
    root = Path(module_settings.storage_dir)
    if root.is_dir():
        shutil.rmtree(root)
    elif root.exists():
        root.unlink()
    return module_settings


@pytest.fixture
async def team(api: Api) -> Team:
    team = await make_team(api)
    await team.issue()
    return team


def stored_files(settings: Settings) -> list[Path]:
    root = Path(settings.storage_dir)
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def attachment_rows(settings: Settings) -> int:
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT count(*) FROM attachment").scalar_one())
    finally:
        engine.dispose()


def intent_keys(settings: Settings) -> list[str]:
    """The keys of the writes recorded and not settled (``storage_write``)."""
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT key FROM storage_write ORDER BY key")
            return [str(key) for key in rows.scalars()]
    finally:
        engine.dispose()


async def upload(
    client: AuthedClient, name: str, data: bytes, declared: str = "text/html"
) -> httpx.Response:
    return await client.post(ATTACHMENTS, files={"file": (name, data, declared)})


async def test_upload_is_stored_with_its_checksum_and_the_type_its_bytes_show(
    team: Team, settings: Settings
) -> None:
    response = await upload(team["reporter"], "screenshot.png", PNG, declared="text/html")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["content_type"] == "image/png"  # sniffed, not the declared text/html
    assert body["checksum"] == hashlib.sha256(PNG).hexdigest()
    assert body["size"] == len(PNG)
    assert body["filename"] == "screenshot.png"
    assert body["uploader"]["id"] == team.ids["reporter"]
    assert body["inline"] is True
    assert response.headers["Location"] == f"{ATTACHMENTS}/{body['id']}"
    assert body["download_url"] == response.headers["Location"]
    assert response.headers["ETag"] == f'"{body["checksum"]}"'
    (stored,) = stored_files(settings)
    assert stored.read_bytes() == PNG

    listed = await walk_pages(team["viewer"], ATTACHMENTS)
    assert listed == [body]
    history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
    assert history[-1]["action"] == "attached"
    assert history[-1]["new_value"] == body["id"]


async def test_an_upload_writes_an_issue_event_naming_the_attachment(
    team: Team, settings: Settings
) -> None:
    response = await upload(team["reporter"], "log.txt", b"line one\nline two\n")
    engine = sa.create_engine(settings.sync_database_url)
    try:
        with engine.connect() as connection:
            payload = connection.execute(
                sa.select(Event.payload).order_by(sa.desc(Event.id)).limit(1)  # type: ignore[arg-type]
            ).scalar_one()
    finally:
        engine.dispose()
    event = json.loads(payload)
    assert event["type"] == "issue.updated"
    assert event["data"]["changes"] == [
        {"action": "attached", "field": "attachment_id", "old": None, "new": response.json()["id"]}
    ]


@pytest.mark.parametrize(
    ("name", "data", "content_type", "disposition"),
    [
        ("shot.png", PNG, "image/png", "inline"),
        ("notes.txt", "naïve text\n".encode(), "text/plain; charset=utf-8", "inline"),
        ("drawing.svg", SVG, "image/svg+xml", "attachment"),
        ("Bericht ü.pdf", PDF, "application/pdf", "attachment"),
        ("blob.bin", bytes(range(256)), "application/octet-stream", "attachment"),
    ],
    ids=["png", "text", "svg", "pdf", "binary"],
)
async def test_download_shows_images_and_text_inline_and_everything_else_as_a_download(
    team: Team, name: str, data: bytes, content_type: str, disposition: str
) -> None:
    created = await upload(team["reporter"], name, data, declared="image/png")
    assert created.status_code == 201, created.text
    download = await team["viewer"].get(created.headers["Location"])
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["Content-Type"] == content_type
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["ETag"] == created.headers["ETag"]
    kind, *parameters = download.headers["Content-Disposition"].split("; ")
    assert kind == disposition
    encoded = httpx.URL("/" + name).raw_path.decode()[1:]  # RFC 3986 percent-encoding
    assert f"filename*=UTF-8''{encoded}" in parameters
    if disposition == "inline":
        assert "sandbox" in download.headers["Content-Security-Policy"]


async def test_a_current_etag_answers_304(team: Team) -> None:
    created = await upload(team["reporter"], "shot.png", PNG)
    again = await team["viewer"].get(
        created.headers["Location"], headers={"If-None-Match": created.headers["ETag"]}
    )
    assert again.status_code == 304


async def test_a_download_whose_if_match_names_another_version_is_a_412(team: Team) -> None:
    created = await upload(team["reporter"], "shot.png", PNG)
    url, etag = created.headers["Location"], created.headers["ETag"]
    assert (await team["viewer"].get(url, headers={"If-Match": etag})).status_code == 200
    stale = await team["viewer"].get(url, headers={"If-Match": '"attachment-0-v0"'})
    assert stale.status_code == 412
    assert stale.headers["ETag"] == etag


async def test_a_download_holds_no_database_connection_while_its_bytes_go_out(
    team: Team, app: FastAPI
) -> None:
    """A slow reader must not pin a pooled connection: a few would starve every request."""
    data = bytes(range(256)) * 350  # two chunks of storage, under the cap
    created = await upload(team["reporter"], "big.bin", data)
    assert created.status_code == 201, created.text
    url = httpx.URL(created.headers["Location"])
    pool = app.services.engine.pool
    in_use_while_sending: list[int] = []
    received = bytearray()

    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await anyio.sleep_forever()  # the client stays until the response ends
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            in_use_while_sending.append(pool.checkedout())
            received.extend(message.get("body", b""))

    # The ASGI app called as a server would, so that the test sees each chunk as it is sent.
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": url.path,
        "raw_path": url.raw_path,
        "query_string": b"",
        "root_path": "",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {team['viewer'].token}".encode()),
        ],
        "state": {},
    }
    await app(scope, receive, send)
    assert bytes(received) == data
    assert len(in_use_while_sending) > 2
    assert set(in_use_while_sending) == {0}


async def test_file_names_lose_their_path_and_control_characters_are_refused(team: Team) -> None:
    cut = await upload(team["reporter"], "C:\\Users\\me\\../secret.txt", b"text")
    assert cut.json()["filename"] == "secret.txt"
    unnamed = await upload(team["reporter"], "../..", b"text")
    assert unnamed.json()["filename"] == "attachment"
    refused = await upload(team["reporter"], "evil\x1b[2J.txt", b"text")
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "file", "filename"]


@pytest.mark.parametrize("control", ["\u202e", "\u202d", "\u202b", "\u2067", "\u2068"])
async def test_a_file_name_with_a_bidirectional_control_is_refused(
    team: Team, control: str
) -> None:
    # Shown as "invoiceexe.png" while it is an .exe.
    refused = await upload(team["reporter"], f"invoice{control}gnp.exe", b"MZ")
    assert refused.status_code == 422
    problem = refused.json()
    assert problem["errors"][0]["loc"] == ["body", "file", "filename"]
    assert f"U+{ord(control):04X}" in problem["errors"][0]["msg"]
    assert (await team["viewer"].get(ATTACHMENTS)).json()["items"] == []


async def test_a_file_name_in_a_right_to_left_script_is_kept_as_sent(team: Team) -> None:
    name = "\u05d3\u05d5\u05d7 \u05e9\u05e0\u05ea\u05d9.pdf"
    stored = await upload(team["reporter"], name, b"%PDF-1.4")
    assert stored.status_code == 201, stored.text
    assert stored.json()["filename"] == name


async def test_an_upload_over_the_cap_is_413_and_leaves_no_row_or_object(
    team: Team, settings: Settings
) -> None:
    response = await upload(team["reporter"], "big.bin", bytes(MAX_BYTES + 1))
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("payload-too-large")
    assert stored_files(settings) == []
    assert attachment_rows(settings) == 0
    assert intent_keys(settings) == []
    exactly = await upload(team["reporter"], "fits.bin", bytes(MAX_BYTES))
    assert exactly.status_code == 201
    assert intent_keys(settings) == []


@pytest.mark.parametrize(
    ("files", "data", "raw", "expected"),
    [
        ({"file": ("", b"abc", "text/plain")}, None, None, 422),  # no file name: not a file
        (None, {"file": "just a string"}, None, 422),
        ({"other": ("x.txt", b"abc", "text/plain")}, None, None, 422),
        (None, None, b"not multipart at all", 400),
    ],
    ids=["no-name", "string-field", "wrong-field", "not-multipart"],
)
async def test_a_malformed_upload_is_a_client_error_and_stores_nothing(
    team: Team,
    settings: Settings,
    files: dict[str, Any] | None,
    data: dict[str, str] | None,
    raw: bytes | None,
    expected: int,
) -> None:
    client = team["reporter"]
    if raw is not None:
        boundary = {"Content-Type": "multipart/form-data; boundary=x"}
        response = await client.post(ATTACHMENTS, content=raw, headers=boundary)
    else:
        response = await client.post(ATTACHMENTS, files=files, data=data)
    assert response.status_code == expected, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert stored_files(settings) == []
    assert attachment_rows(settings) == 0


@pytest.mark.parametrize("name", ["a" * 300 + ".png", "é" * 300])
async def test_an_empty_file_or_a_long_name_is_stored(team: Team, name: str) -> None:
    empty = await upload(team["reporter"], "empty.txt", b"")
    assert empty.status_code == 201, empty.text
    assert empty.json()["size"] == 0
    long = await upload(team["reporter"], name, PNG)
    assert long.status_code == 201, long.text
    kept = long.json()["filename"]
    assert len(kept) == 255
    assert kept.endswith(".png") == name.endswith(".png")


def multipart(data: bytes, boundary: str = "flyswatterboundary") -> tuple[str, Iterator[bytes]]:
    """A multipart body sent in pieces, without a Content-Length."""

    def pieces() -> Iterator[bytes]:
        yield (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="streamed.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for start in range(0, len(data), 16_384):
            yield data[start : start + 16_384]
        yield f"\r\n--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", pieces()


async def as_async(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize("size", [MAX_BYTES + 1, 4 * MAX_BYTES])
async def test_the_cap_holds_for_a_body_without_content_length(
    team: Team, settings: Settings, size: int
) -> None:
    # Just over the cap: the copy to storage stops there. Far over it: the body limit stops
    # reading the request before the route ever sees it.
    content_type, pieces = multipart(bytes(size))
    response = await team["reporter"].post(
        ATTACHMENTS, content=as_async(pieces), headers={"Content-Type": content_type}
    )
    assert response.status_code == 413, response.text
    assert response.json()["type"].endswith("payload-too-large")
    assert stored_files(settings) == []
    assert attachment_rows(settings) == 0


@pytest.fixture
def unwritable_storage(settings: Settings) -> None:
    """The storage folder cannot be made: a file is in its place."""
    Path(settings.storage_dir).parent.mkdir(parents=True, exist_ok=True)
    Path(settings.storage_dir).write_bytes(b"")


async def test_storage_that_fails_is_503_and_leaves_no_row(
    team: Team, settings: Settings, unwritable_storage: None
) -> None:
    response = await upload(team["reporter"], "shot.png", PNG)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert attachment_rows(settings) == 0
    # Nor could the object be removed: its intent stays, for the sweep to remove it once
    # the storage is back.
    (key,) = intent_keys(settings)
    assert key.startswith("attachments/")


class ChangedMidUpload(LocalStorage):
    """Storage during whose write another connection runs ``statements`` in a transaction
    (a real race); each is given the key being written as ``:key`` and ``parameters``."""

    def __init__(
        self, root: Path, database_url: str, statements: str | list[str], **parameters: str
    ) -> None:
        super().__init__(root)
        self.database_url = database_url
        listed = [statements] if isinstance(statements, str) else statements
        self.statements = [sa.text(statement) for statement in listed]
        self.parameters = parameters

    def put_stream(self, key: str, chunks: Any, content_type: str) -> StoredObject:
        stored = super().put_stream(key, chunks, content_type)
        engine = sa.create_engine(self.database_url)
        try:
            with engine.begin() as connection:
                for statement in self.statements:
                    connection.execute(statement, {"key": key, **self.parameters})
        finally:
            engine.dispose()
        return stored


async def test_a_database_failure_after_storing_takes_the_object_back(
    team: Team, settings: Settings, app: Flyswatter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await upload(team["reporter"], "first.png", PNG)).status_code == 201
    kept = stored_files(settings)
    # The first row takes the key the second upload is stored under: its insert fails.
    statement = "UPDATE attachment SET key = :key"
    storage = ChangedMidUpload(Path(settings.storage_dir), settings.sync_database_url, statement)
    monkeypatch.setattr(app, "running", replace(app.services, storage=storage))
    response = await upload(team["reporter"], "shot.png", PNG)
    assert response.status_code == 409, response.text
    assert stored_files(settings) == kept
    assert attachment_rows(settings) == 1
    assert intent_keys(settings) == []


@pytest.mark.parametrize(
    ("change", "status"),
    [
        pytest.param("DELETE FROM issue", 404, id="issue-deleted"),
        pytest.param(
            "DELETE FROM project_member WHERE user_id = :reporter", 404, id="uploader-removed"
        ),
        pytest.param(
            "UPDATE project_member SET role = 'viewer' WHERE user_id = :reporter",
            403,
            id="uploader-demoted",
        ),
        pytest.param("UPDATE project SET archived = true", 409, id="project-archived"),
    ],
)
async def test_an_upload_lands_only_if_still_allowed_once_stored(
    team: Team,
    settings: Settings,
    app: Flyswatter,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
    status: int,
) -> None:
    root, url = Path(settings.storage_dir), settings.sync_database_url
    storage = ChangedMidUpload(root, url, change, reporter=team.ids["reporter"])
    monkeypatch.setattr(app, "running", replace(app.services, storage=storage))
    response = await upload(team["reporter"], "shot.png", PNG)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert stored_files(settings) == []
    assert attachment_rows(settings) == 0
    assert intent_keys(settings) == []


async def test_an_upload_whose_object_the_sweep_claimed_meanwhile_is_a_503_and_leaves_nothing(
    team: Team, settings: Settings, app: Flyswatter, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = SweptAfterEachWrite(Path(settings.storage_dir), JobRuntime(settings))
    monkeypatch.setattr(app, "running", replace(app.services, storage=storage))
    response = await upload(team["reporter"], "slow.png", PNG)
    assert storage.swept == 1
    # The row would name an object that is gone: refused, and worth retrying.
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Retry-After"].isdigit()
    assert "retry" in response.json()["detail"]
    assert attachment_rows(settings) == 0
    assert stored_files(settings) == []
    assert intent_keys(settings) == []
    assert (await team["viewer"].get(ATTACHMENTS)).json()["items"] == []
    history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
    assert "attached" not in [entry["action"] for entry in history]
    storage.sweeper.engine.dispose()
    monkeypatch.undo()
    retried = await upload(team["reporter"], "slow.png", PNG)
    assert retried.status_code == 201, retried.text


@pytest.mark.parametrize("landed", [False, True], ids=["not-landed", "landed"])
async def test_a_commit_that_fails_leaves_the_object_for_the_database_to_decide(
    team: Team, settings: Settings, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    real_commit = AsyncSession.commit

    async def commit(self: AsyncSession) -> None:
        # The upload's row transaction (it holds the row): its COMMIT is sent, and the
        # connection is lost before the answer, the row committed or not.
        if not any(isinstance(row, Attachment) for row in self.identity_map.values()):
            return await real_commit(self)
        if landed:
            await real_commit(self)
        else:
            await self.rollback()
        raise sa.exc.OperationalError("COMMIT", {}, Exception("connection lost"))

    monkeypatch.setattr(AsyncSession, "commit", commit)
    response = await upload(team["reporter"], "shot.png", PNG)
    monkeypatch.undo()
    assert response.status_code == 503, response.text
    (stored,) = stored_files(settings)
    runtime = JobRuntime(settings)
    if landed:
        # The row names the object; its intent went with the commit.
        assert attachment_rows(settings) == 1
        assert intent_keys(settings) == []
    else:
        assert attachment_rows(settings) == 0
        assert intent_keys(settings) == [stored.relative_to(settings.storage_dir).as_posix()]
        # Young: it might be a write still on its way.
        assert remove_orphaned_objects(runtime) == 0
        assert stored_files(settings) == [stored]
    assert remove_orphaned_objects(runtime, grace=timedelta(0)) == (0 if landed else 1)
    assert intent_keys(settings) == []
    runtime.engine.dispose()
    listed = (await team["viewer"].get(ATTACHMENTS)).json()["items"]
    if landed:
        assert stored_files(settings) == [stored]
        download = await team["viewer"].get(listed[0]["download_url"])
        assert download.status_code == 200
        assert download.content == PNG
    else:
        assert stored_files(settings) == []
        assert listed == []


async def test_an_upload_to_an_issue_moved_meanwhile_lands_on_it_under_its_new_key(
    team: Team, settings: Settings, app: Flyswatter, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = team["maintainer"]
    assert (await owner.post("/api/v1/projects", json={"key": "OPS", "name": "Ops"})).is_success
    added = await owner.put(
        f"/api/v1/projects/OPS/members/{team.ids['reporter']}", json={"role": "reporter"}
    )
    assert added.is_success, added.text
    # POST /issues/FLY-1/move {"project": "OPS"}, as it leaves the rows: FLY-1 is OPS-1.
    move = [
        "INSERT INTO issue_key_redirect (project_id, number, issue_id, moved_at)"
        " SELECT project_id, number, id, created_at FROM issue",
        "UPDATE project SET last_issue_number = 1 WHERE key = 'OPS'",
        "UPDATE issue SET number = 1, project_id = (SELECT id FROM project WHERE key = 'OPS')",
    ]
    storage = ChangedMidUpload(Path(settings.storage_dir), settings.sync_database_url, move)
    monkeypatch.setattr(app, "running", replace(app.services, storage=storage))
    response = await upload(team["reporter"], "shot.png", PNG)
    assert response.status_code == 201, response.text
    assert response.json()["issue_key"] == "OPS-1"
    assert response.headers["Location"].startswith("/api/v1/issues/OPS-1/attachments/")
    listed = (await team["reporter"].get("/api/v1/issues/OPS-1/attachments")).json()["items"]
    assert [item["id"] for item in listed] == [response.json()["id"]]
    assert len(stored_files(settings)) == 1


async def test_the_uploader_and_maintainers_delete_and_the_object_goes_too(
    team: Team, settings: Settings
) -> None:
    first = (await upload(team["reporter"], "a.png", PNG)).headers["Location"]
    second = (await upload(team["reporter"], "b.png", PNG)).headers["Location"]
    assert (await team["developer"].delete(first)).status_code == 403
    assert (await team["reporter"].delete(first)).status_code == 204
    assert (await team["maintainer"].delete(second)).status_code == 204
    assert stored_files(settings) == []
    assert (await team["viewer"].get(first)).status_code == 404
    history = (await team["viewer"].get("/api/v1/issues/FLY-1/activity")).json()["items"]
    assert [entry["action"] for entry in history[-2:]] == ["detached", "detached"]


async def test_an_attachment_is_found_only_under_its_own_issue(team: Team) -> None:
    await team.issue(title="Another")
    location = (await upload(team["reporter"], "a.png", PNG)).headers["Location"]
    elsewhere = location.replace("FLY-1", "FLY-2")
    assert (await team["viewer"].get(elsewhere)).status_code == 404
    assert (await team["maintainer"].delete(elsewhere)).status_code == 404


async def test_deleting_the_issue_removes_its_files_from_storage(
    team: Team, settings: Settings
) -> None:
    await upload(team["reporter"], "a.png", PNG)
    await upload(team["reporter"], "b.txt", b"text")
    assert len(stored_files(settings)) == 2
    assert (await team["maintainer"].delete("/api/v1/issues/FLY-1")).status_code == 204
    assert stored_files(settings) == []
    assert attachment_rows(settings) == 0


class DeletesAfterTheCommit(LocalStorage):
    """Storage that notes, for every delete, whether the key's row is still in the database
    as another connection sees it (committed), and that may fail to delete."""

    def __init__(self, root: Path, database_url: str, *, fails: bool = False) -> None:
        super().__init__(root)
        self.database_url = database_url
        self.fails = fails
        self.rows_at_delete: list[int] = []

    def delete(self, key: str) -> None:
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    sa.text("SELECT count(*) FROM attachment WHERE key = :key"), {"key": key}
                )
                self.rows_at_delete.append(int(rows.scalar_one()))
        finally:
            engine.dispose()
        if self.fails:
            raise StorageUnavailable("local storage: cannot delete (Permission denied)")
        super().delete(key)


@pytest.fixture
def watched_storage(
    settings: Settings, app: Flyswatter, monkeypatch: pytest.MonkeyPatch
) -> DeletesAfterTheCommit:
    storage = DeletesAfterTheCommit(Path(settings.storage_dir), settings.sync_database_url)
    monkeypatch.setattr(app, "running", replace(app.services, storage=storage))
    return storage


@pytest.mark.parametrize("what", ["attachment", "issue"])
async def test_a_files_object_is_deleted_only_once_its_rows_deletion_is_committed(
    team: Team, settings: Settings, watched_storage: DeletesAfterTheCommit, what: str
) -> None:
    location = (await upload(team["reporter"], "a.png", PNG)).headers["Location"]
    path = location if what == "attachment" else "/api/v1/issues/FLY-1"
    assert (await team["maintainer"].delete(path)).status_code == 204
    assert watched_storage.rows_at_delete == [0]
    assert stored_files(settings) == []


@pytest.mark.parametrize("what", ["attachment", "issue"])
async def test_storage_that_fails_after_the_commit_is_logged_and_the_sweep_removes_it(
    team: Team,
    settings: Settings,
    watched_storage: DeletesAfterTheCommit,
    caplog: pytest.LogCaptureFixture,
    what: str,
) -> None:
    location = (await upload(team["reporter"], "a.png", PNG)).headers["Location"]
    (stored,) = stored_files(settings)
    watched_storage.fails = True
    path = location if what == "attachment" else "/api/v1/issues/FLY-1"
    with caplog.at_level(logging.WARNING, logger="flyswatter.attachments"):
        assert (await team["maintainer"].delete(path)).status_code == 204
    assert attachment_rows(settings) == 0
    assert (await team["viewer"].get(location)).status_code == 404
    # The orphan is left (harmless) and named in the log, with the storage's reason.
    assert stored_files(settings) == [stored]
    (record,) = [r for r in caplog.records if r.name == "flyswatter.attachments"]
    message = record.getMessage()
    assert "left in storage" in message
    assert "Permission denied" in message
    assert stored.relative_to(settings.storage_dir).as_posix() in message
    # The deletion named the object for the sweep. Within the grace period the request may
    # still be removing it; while storage is down the name stays for the next sweep.
    runtime = JobRuntime(settings)
    assert remove_deleted_objects(runtime) == 0
    healthy = runtime.storage
    runtime.storage = watched_storage
    assert remove_deleted_objects(runtime, grace=timedelta(0)) == 0
    assert stored_files(settings) == [stored]
    runtime.storage = healthy
    assert remove_deleted_objects(runtime, grace=timedelta(0)) == 1
    assert stored_files(settings) == []
    assert remove_deleted_objects(runtime, grace=timedelta(0)) == 0
    runtime.engine.dispose()


class RefusesOneKey(LocalStorage):
    """Storage that refuses to delete one object, for a reason of the backend's own."""

    def __init__(self, root: Path, refused: str) -> None:
        super().__init__(root)
        self.refused = refused

    def delete(self, key: str) -> None:
        if key == self.refused:
            raise PermissionError("the backend's own words")
        super().delete(key)


async def test_an_object_the_sweep_cannot_remove_holds_up_no_other(
    team: Team, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("a.png", "b.png"):
        location = (await upload(team["reporter"], name, PNG)).headers["Location"]
        assert (await team["reporter"].delete(location)).status_code == 204
    runtime = JobRuntime(settings)
    with runtime.engine.connect() as connection:
        statement = sa.text("SELECT key FROM storage_removal ORDER BY created_at")
        first, _ = connection.execute(statement).scalars()
    runtime.storage = RefusesOneKey(Path(settings.storage_dir), refused=first)
    with caplog.at_level(logging.WARNING, logger="flyswatter.jobs"):
        assert remove_deleted_objects(runtime, grace=timedelta(0)) == 1
    (record,) = [r for r in caplog.records if r.name == "flyswatter.jobs"]
    assert first in record.getMessage()
    assert "own words" not in record.getMessage()
    runtime.storage = LocalStorage(Path(settings.storage_dir))
    assert remove_deleted_objects(runtime, grace=timedelta(0)) == 1
    with runtime.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM storage_removal")).scalar() == 0
    runtime.engine.dispose()


async def test_an_issue_delete_that_fails_before_its_commit_keeps_every_file(
    team: Team, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = (await upload(team["reporter"], "a.png", PNG)).headers["Location"]
    import flyswatter.issues.service as issue_service

    async def database_fails(*args: object, **kwargs: object) -> None:
        # Any database failure between reading the files' keys and the commit.
        raise sa.exc.OperationalError("INSERT INTO event", {}, Exception("connection lost"))

    monkeypatch.setattr(issue_service, "record_deletion", database_fails)
    assert (await team["maintainer"].delete("/api/v1/issues/FLY-1")).status_code == 503
    assert (await team["viewer"].get("/api/v1/issues/FLY-1")).status_code == 200
    download = await team["viewer"].get(location)
    assert download.status_code == 200
    assert download.content == PNG


async def test_an_issues_files_are_listed_oldest_first_page_by_page(team: Team) -> None:
    made = [(await upload(team["reporter"], f"{n}.txt", b"text")).json() for n in range(3)]
    assert await walk_pages(team["viewer"], f"{ATTACHMENTS}?limit=1") == made


async def test_an_upload_to_a_moved_issues_old_key_is_attached_where_the_issue_is_now(
    team: Team,
) -> None:
    owner = team["maintainer"]
    assert (await owner.post("/api/v1/projects", json={"key": "OPS", "name": "Ops"})).is_success
    member = f"/api/v1/projects/OPS/members/{team.ids['reporter']}"
    assert (await owner.put(member, json={"role": "reporter"})).status_code == 201
    moved = await owner.post("/api/v1/issues/FLY-1/move", json={"project": "OPS"})
    assert moved.status_code == 200, moved.text
    comment = await team["reporter"].post("/api/v1/issues/FLY-1/comments", json={"body": "hi"})
    response = await upload(team["reporter"], "a.png", PNG)
    assert response.status_code == 201, response.text
    # Answered as the other writers of an old key are.
    for header in ("Deprecation", "Link"):
        assert response.headers[header] == comment.headers[header]
    assert response.headers["Link"] == '</api/v1/issues/OPS-1>; rel="successor-version"'
    location = response.headers["Location"]
    assert location.startswith("/api/v1/issues/OPS-1/attachments/")
    assert response.json()["issue_key"] == "OPS-1"
    listed = (await team["reporter"].get("/api/v1/issues/OPS-1/attachments")).json()["items"]
    assert [item["download_url"] for item in listed] == [location]
    # Readers of the old key are still sent on.
    assert (await team["reporter"].get(ATTACHMENTS)).status_code == 301
