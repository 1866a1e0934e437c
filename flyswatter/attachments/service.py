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

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread
from fastapi import UploadFile
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from flyswatter.attachments.files import (
    abandon_upload,
    claimed,
    clean_filename,
    shown_inline,
    store_upload,
    unavailable,
)
from flyswatter.attachments.models import Attachment, AttachmentPublic
from flyswatter.errors import (
    Forbidden,
    NotFound,
)
from flyswatter.http.created import Created
from flyswatter.http.headers import api_path, entity_tag
from flyswatter.http.pagination import Keyset, Page
from flyswatter.issues.activity import record_activity
from flyswatter.issues.dependencies import IssueAccess, load_issue_access
from flyswatter.issues.models import ActivityAction
from flyswatter.projects.models import Role
from flyswatter.storage.intents import (
    WriteClaimed,
    intend_write_async,
    settle_write_async,
)
from flyswatter.storage.models import StorageRemoval
from flyswatter.storage.service import Storage, StorageUnavailable
from flyswatter.users.service import user_summaries

logger = logging.getLogger("flyswatter.attachments")


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
            raise unavailable() from None
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
            raise claimed() from None
        committing = True
        await session.commit()
    except BaseException:
        # Shielded: a client that hangs up now must not leave the object without an intent.
        with anyio.CancelScope(shield=True):
            if not committing:
                # Never committed: the object goes now, then its intent.
                await abandon_upload(session, storage, key)
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
