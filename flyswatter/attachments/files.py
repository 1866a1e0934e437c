"""An upload's file: its name made safe, its type sniffed from its first bytes, its bytes
streamed into storage counted against the cap, and taken back when its row never comes."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from typing import BinaryIO

import anyio
import anyio.to_thread
import puremagic
from sqlmodel.ext.asyncio.session import AsyncSession

from flyswatter.errors import PayloadTooLarge, ServiceUnavailable, UnprocessableEntity
from flyswatter.http.headers import retry_after
from flyswatter.storage.intents import drop_intent_async
from flyswatter.storage.service import CHUNK_SIZE, Storage, StorageUnavailable, StoredObject
from flyswatter.text import first_unsafe_character

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


def unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the file storage is unavailable; retry later", headers={"Retry-After": retry_after(5)}
    )


def claimed() -> ServiceUnavailable:
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


async def abandon_upload(session: AsyncSession, storage: Storage, key: str) -> None:
    """Roll back, remove a failed upload's object, then (only then) its intent."""
    try:
        # Its locks (on SQLite, the write lock) are not held while storage is called.
        await session.rollback()
    except Exception as exc:
        # The connection is lost, say: the object goes all the same (nothing committed).
        logger.warning("failed upload not rolled back before its removal: %s", type(exc).__name__)
    if await anyio.to_thread.run_sync(_forget_object, storage, key):
        await drop_intent_async(session, key)
