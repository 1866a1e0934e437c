"""Answering with a stored file: streamed from storage, or redirected to a presigned URL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import status
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.responses import Response

from flyswatter.errors import NotFound, ServiceUnavailable
from flyswatter.http.headers import content_disposition, entity_tag, retry_after
from flyswatter.storage.models import StoredFileBase
from flyswatter.storage.service import ObjectMissing, StorageUnavailable

if TYPE_CHECKING:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from flyswatter.services import Services

# A file shown in the browser still runs nothing and loads nothing (an HTML or SVG file sent
# as text/plain by mistake included), and never in a frame of another site.
_INLINE_POLICY = "default-src 'none'; sandbox"


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking chunk iterator read on worker threads, one chunk at a time."""
    while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
        yield chunk


async def stored_file_response(
    services: Services,
    session: AsyncSession,
    file: StoredFileBase,
    key: str,
    *,
    gone: str,
    inline: bool = False,
) -> Response:
    """The file under ``key``: a redirect to a presigned URL when the storage is S3 and
    ``FLYSWATTER_S3_PRESIGNED_DOWNLOADS`` is on, else streamed; ``gone`` is the 404's detail
    when the object is missing.

    The request's session, which found the file, is closed first: nothing needs the database
    while the bytes go out, and a slow reader must not hold a pooled connection meanwhile
    (a few of them would leave every other request waiting for one)."""
    await session.close()
    storage, settings = services.storage, services.settings
    try:
        if settings.storage_backend == "s3" and settings.s3_presigned_downloads:
            url = await anyio.to_thread.run_sync(
                lambda: storage.presigned_url(
                    key,
                    filename=file.filename,
                    content_type=file.content_type,
                    expires_in=settings.s3_presign_seconds,
                    inline=inline,
                )
            )
            if url is not None:
                return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
        chunks = await anyio.to_thread.run_sync(storage.open, key)
    except ObjectMissing:
        raise NotFound(gone) from None
    except StorageUnavailable:
        raise ServiceUnavailable(
            "the file storage is unavailable; retry later", headers={"Retry-After": retry_after(5)}
        ) from None
    headers = {
        "Content-Disposition": content_disposition(file.filename, inline=inline),
        "Content-Length": str(file.size),
        "ETag": entity_tag(file.checksum),
        "X-Content-Type-Options": "nosniff",
    }
    if inline:
        headers["Content-Security-Policy"] = _INLINE_POLICY
    return StreamingResponse(_in_thread(chunks), media_type=file.content_type, headers=headers)
