"""Attachment logic: streaming an upload into storage, listing, finding and deleting files.

An upload is copied from the request's spooled file to storage in chunks, counted against
the cap and hashed on the way, its type sniffed from its first bytes. Its intent to write is
committed first (``flyswatter.storage.intents``); the row and its history are written only
once the object is stored, in the transaction that settles the intent. A failure before the
commit deletes the object again, then the intent; a commit that fails leaves both, as it may
have landed: the intent, there or not, tells the orphan sweep. No row without an object, and
no object without a row or an intent. Deleting goes the other way: the rows first, the
objects once that is committed.
"""

from __future__ import annotations

import itertools
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
import puremagic
from fastapi import UploadFile
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from flyswatter.attachments.models import Attachment, AttachmentPublic
from flyswatter.errors import (
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnprocessableEntity,
)
from flyswatter.http.created import Created
from flyswatter.http.headers import api_path, entity_tag, retry_after
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues.activity import record_activity
from flyswatter.issues.dependencies import IssueAccess, load_issue_access
from flyswatter.issues.models import ActivityAction
from flyswatter.projects.models import Role
from flyswatter.storage.intents import (
    WriteClaimed,
    drop_intent_async,
    intend_write_async,
    settle_write_async,
)
from flyswatter.storage.models import StorageRemoval
from flyswatter.storage.service import CHUNK_SIZE, Storage, StorageUnavailable, StoredObject
from flyswatter.text import first_unsafe_character
from flyswatter.users.service import user_summaries

logger = logging.getLogger("flyswatter.attachments")

MAX_FILENAME = 255
FALLBACK_FILENAME = "attachment"
OCTET_STREAM = "application/octet-stream"
PLAIN_TEXT = "text/plain; charset=utf-8"
# Active content: an SVG image runs scripts when opened on its own.
_NEVER_INLINE = frozenset({"image/svg+xml"})
_FILE_LOC = ("body", "file")
# The bidirectional embeddings, overrides and isolates: in a file name they reorder what is
# shown, so that ``invoice\u202egnp.exe`` reads as ``invoiceexe.png``. Right-to-left letters
# need none of them to show right.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def clean_filename(raw: str | None) -> str:
    """The name a file is kept under: its last path segment (browsers and tools may send a
    whole path), trimmed; a name with a control character, or a bidirectional control that
    could disguise its extension, is refused (422)."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if (bidi := _BIDI_CONTROLS.search(name)) is not None:
        raise UnprocessableEntity(
            f"a file name may not contain U+{ord(bidi.group()):04X}, a bidirectional control"
            " that changes the order its characters are shown in",
            loc=(*_FILE_LOC, "filename"),
        )
    if (bad := first_unsafe_character(name)) is not None:
        raise UnprocessableEntity(
            f"a file name may not contain U+{ord(bad):04X}", loc=(*_FILE_LOC, "filename")
        )
    if name in ("", ".", ".."):
        return FALLBACK_FILENAME
    if len(name) > MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            return stem[: MAX_FILENAME - len(extension) - 1] + "." + extension
        return name[:MAX_FILENAME]
    return name


def sniff_content_type(head: bytes) -> str:
    """The type the first bytes show (magic numbers); UTF-8 text without control characters
    other than tab and newlines is plain text; anything else is opaque bytes."""
    if not head:
        return OCTET_STREAM
    try:
        found = puremagic.from_string(head, mime=True)
    except puremagic.PureError:
        found = ""
    if found and len(found) <= 100:
        return str(found)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sniffed chunk is still text.
        if exc.start < len(head) - 3:
            return OCTET_STREAM
        text = head[: exc.start].decode("utf-8")
    return PLAIN_TEXT if first_unsafe_character(text, multiline=True) is None else OCTET_STREAM


def shown_inline(content_type: str) -> bool:
    """Images (but SVG) and plain text are shown; everything else is a download."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in _NEVER_INLINE:
        return False
    return kind.startswith("image/") or kind == "text/plain"


def _capped_chunks(file: BinaryIO, first: bytes, max_bytes: int) -> Iterator[bytes]:
    """The file's chunks, ``first`` already read; 413 as soon as they pass ``max_bytes``."""
    size = 0
    for chunk in itertools.chain((first,), iter(lambda: file.read(CHUNK_SIZE), b"")):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"attachments are limited to {max_bytes} bytes")
        yield chunk


def store_upload(
    storage: Storage, key: str, file: BinaryIO, max_bytes: int
) -> tuple[StoredObject, str]:
    """Stream the file into storage under ``key`` (blocking: run it in a thread); the
    stored object and the content type its first bytes show."""
    file.seek(0)
    first = file.read(CHUNK_SIZE)
    content_type = sniff_content_type(first)
    stored = storage.put_stream(key, _capped_chunks(file, first, max_bytes), content_type)
    return stored, content_type


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the file storage is unavailable; retry later", headers={"Retry-After": retry_after(5)}
    )


def _claimed() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the upload took too long to be recorded and was discarded; retry it",
        headers={"Retry-After": retry_after(5)},
    )


def _forget_object(storage: Storage, key: str) -> bool:
    """Whether the object of a failed upload is removed."""
    try:
        storage.delete(key)
    except Exception as exc:
        # Not fatal to the answer (the upload failed anyway); the object has no row, and its
        # intent stays for the orphan sweep. Only the type of a fault that is not ours.
        why = str(exc) if isinstance(exc, StorageUnavailable) else type(exc).__name__
        logger.warning(
            "attachment object %s left for the sweep after a failed upload: %s", key, why
        )
        return False
    return True


async def _abandon_upload(session: AsyncSession, storage: Storage, key: str) -> None:
    """Roll back, remove a failed upload's object, then (only then) its intent."""
    try:
        # Its locks (on SQLite, the write lock) are not held while storage is called.
        await session.rollback()
    except Exception as exc:
        # The connection is lost, say: the object goes all the same (nothing committed).
        logger.warning("failed upload not rolled back before its removal: %s", type(exc).__name__)
    if await anyio.to_thread.run_sync(_forget_object, storage, key):
        await drop_intent_async(session, key)


async def build_public_attachments(
    session: AsyncSession, issue_key: str, rows: Sequence[Attachment]
) -> list[AttachmentPublic]:
    uploaders = await user_summaries(session, [row.uploaded_by for row in rows])
    return [
        AttachmentPublic.model_validate(
            row,
            update={
                "issue_key": issue_key,
                "uploader": uploaders[row.uploaded_by],
                "inline": shown_inline(row.content_type),
                "download_url": attachment_path(issue_key, row.id or 0),
            },
        )
        for row in rows
    ]


def attachment_path(issue_key: str, attachment_id: int) -> str:
    return api_path("issues", issue_key, "attachments", attachment_id)


def attachment_etag(attachment: Attachment) -> str:
    """The file's bytes never change: their checksum is their entity tag (as downloads send)."""
    return entity_tag(attachment.checksum)


# Each entry of the issue's history about a file names it by its id.
_FIELD = "attachment_id"


async def create_attachment(
    session: AsyncSession,
    access: IssueAccess,
    upload: UploadFile,
    storage: Storage,
    max_bytes: int,
) -> Created[AttachmentPublic]:
    """Store the file and its row, history and event; committed here, so that a failure
    before the commit can still take the stored object back."""
    access.project_access.require(Role.reporter, "attaching files")
    filename = clean_filename(upload.filename)
    issue_id, issue_key, principal = access.issue_id, access.key, access.principal
    # Copying to storage can take a while: no transaction (on SQLite, the write lock) is held
    # meanwhile. What was loaded stays readable, detached from the session.
    session.expunge_all()
    await session.rollback()
    key = f"attachments/{issue_id}/{uuid.uuid4().hex}"
    # Committed before the first byte is stored: an object is only ever left behind with
    # its intent, which is what lets the orphan sweep remove it.
    await intend_write_async(session, key)
    committing = False
    try:
        try:
            stored, content_type = await anyio.to_thread.run_sync(
                store_upload, storage, key, upload.file, max_bytes
            )
        except StorageUnavailable:
            raise _unavailable() from None
        # The copy took a while, outside any transaction: the caller may have lost the
        # project, or the issue been archived, moved or deleted meanwhile. Asked again with
        # the writers' locks, the row lands only if the upload would still be allowed now.
        access = await load_issue_access(session, principal, issue_key, for_update=True)
        if access.issue_id != issue_id:
            raise NotFound(f"issue {issue_key} not found")
        access.project_access.require(Role.reporter, "attaching files")
        access.project_access.require_active()
        issue_key = access.key
        attachment = Attachment(
            issue_id=issue_id,
            filename=filename,
            content_type=content_type,
            size=stored.size,
            checksum=stored.checksum,
            key=key,
            uploaded_by=principal.subject,
        )
        session.add(attachment)
        await session.flush()
        assert attachment.id is not None
        record_activity(
            session, principal, issue_id, ActivityAction.attached, field=_FIELD, new=attachment.id
        )
        (public,) = await build_public_attachments(session, issue_key, [attachment])
        created = Created(
            public, attachment_path(issue_key, attachment.id), attachment_etag(attachment)
        )
        # Last, so that the intent's row is locked for as short a time as can be (the sweep
        # skips it meanwhile).
        try:
            await settle_write_async(session, key)
        except WriteClaimed:
            # The sweep took the object (the upload outlasted its grace): no row may name it.
            raise _claimed() from None
        committing = True
        await session.commit()
    except BaseException:
        # Shielded: a client that hangs up now must not leave the object without an intent.
        with anyio.CancelScope(shield=True):
            if not committing:
                # Never committed: the object goes now, then its intent.
                await _abandon_upload(session, storage, key)
            else:
                # The commit's outcome is unknown: it may have landed, with the row naming
                # the object. The database decides: the intent, unless the commit took it
                # away, leads the orphan sweep to the object once its grace is over.
                logger.warning("attachment object %s left to the sweep: its commit failed", key)
        raise
    return created


def attachments_statement(
    issue_id: int, after: list[Any] | None, rows: int
) -> SelectOfScalar[Attachment]:
    statement = select(Attachment).where(Attachment.issue_id == issue_id)
    if after is not None:
        statement = statement.where(col(Attachment.id) > after[0])
    return statement.order_by(col(Attachment.id)).limit(rows)


async def attachment_page(
    session: AsyncSession, access: IssueAccess, keyset: Keyset
) -> Page[AttachmentPublic]:
    """The issue's files, oldest first."""
    after = keyset.after("id", (int,))
    rows = (await session.exec(attachments_statement(access.issue_id, after, keyset.fetch))).all()
    return await keyset.page(
        rows,
        sort="id",
        key=lambda row: [row.id],
        build=lambda page: build_public_attachments(session, access.key, page),
    )


async def load_attachment(
    session: AsyncSession, access: IssueAccess, attachment_id: int
) -> Attachment:
    """The issue's attachment with this id; 404 when the issue has none such."""
    attachment = (
        await session.exec(
            select(Attachment).where(
                Attachment.id == attachment_id, Attachment.issue_id == access.issue_id
            )
        )
    ).first()
    if attachment is None:
        raise NotFound(f"issue {access.key} has no attachment {attachment_id}")
    return attachment


async def delete_attachment(
    session: AsyncSession, access: IssueAccess, attachment_id: int, storage: Storage
) -> None:
    """Delete a file (its uploader, or a maintainer): the row, in the transaction that records
    it, then, once that is committed, the object (see ``remove_objects``)."""
    attachment = await load_attachment(session, access, attachment_id)
    project = access.project_access
    if attachment.uploaded_by != access.principal.subject:
        if not project.role.includes(Role.maintainer):
            raise Forbidden("deleting someone else's attachment needs the maintainer role")
    else:
        # Having uploaded grants nothing beyond one's role, as for comments.
        project.require(Role.reporter, "deleting attachments")
    record_activity(
        session,
        access.principal,
        access.issue_id,
        ActivityAction.detached,
        field=_FIELD,
        old=attachment_id,
    )
    key = attachment.key
    stage_removals(session, [key])
    await session.delete(attachment)
    await session.commit()
    await remove_objects(storage, [key])


def stage_removals(session: AsyncSession, keys: Sequence[str]) -> None:
    """Name the objects of file rows being deleted, in the deleting transaction, so that the
    sweep finds any the removal after the commit does not reach."""
    session.add_all(StorageRemoval(key=key) for key in keys)


async def stage_issue_file_removals(session: AsyncSession, issue_id: int) -> list[str]:
    """The storage keys of an issue's files, staged for removal: what to remove once its
    deletion is committed (the rows go with the issue, by cascade)."""
    keys = list(
        (await session.exec(select(Attachment.key).where(Attachment.issue_id == issue_id))).all()
    )
    stage_removals(session, keys)
    return keys


def _remove_objects(storage: Storage, keys: Sequence[str]) -> None:
    for key in keys:
        try:
            storage.delete(key)
        except Exception as exc:
            # Whatever it is: the rows are gone, and nothing may fail the request now.
            # Our own message for a transient fault; only the type for anything else, whose
            # text is the backend's.
            why = str(exc) if isinstance(exc, StorageUnavailable) else type(exc).__name__
            # Still named in storage_removal: the periodic sweep removes it.
            logger.warning(
                "attachment object %s left in storage, its row deleted: %s; the sweep retries",
                key,
                why,
            )


async def remove_objects(storage: Storage, keys: Sequence[str]) -> None:
    """Remove the objects of attachment rows whose deletion is committed. Only after the
    commit: an object left without its row is harmless, a row without its object is not.
    A failure is logged and does not fail the request, which has done what it was asked;
    the object stays named in ``storage_removal`` for the sweep (which also clears the
    names of the objects removed here)."""
    if keys:
        # Shielded: a client that hangs up now must not leave objects behind.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove_objects, storage, keys)
