"""Attachment routes: upload a file to an issue, list, download and delete its files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, Response, UploadFile, status

from flyswatter.attachments import service
from flyswatter.attachments.files import shown_inline
from flyswatter.attachments.models import AttachmentPublic
from flyswatter.auth.dependencies import IssuesWrite
from flyswatter.db import MAX_ROW_ID, SessionDep
from flyswatter.errors import problem_responses
from flyswatter.http.conditional import IfMatch, IfNoneMatch, check_if_match, not_modified
from flyswatter.http.created import creates
from flyswatter.http.pagination import Page, lists
from flyswatter.issues.dependencies import (
    IssueAccess,
    IssueForReading,
    IssueForWriting,
    IssueKeyPath,
    IssueKeysetDep,
    load_issue_access,
)
from flyswatter.moves.redirects import successor_headers
from flyswatter.projects.service import PROJECT_ERRORS
from flyswatter.services import ServicesDep
from flyswatter.storage.downloads import stored_file_response

router = APIRouter(tags=["attachments"])

AttachmentIdPath = Annotated[
    int, Path(ge=1, le=MAX_ROW_ID, description="Attachment id.", examples=[1])
]
STORAGE_ERRORS = problem_responses(503)
ATTACHMENT = "/issues/{issue_key}/attachments/{attachment_id}"


async def issue_for_upload(
    issue_key: IssueKeyPath, session: SessionDep, principal: IssuesWrite, response: Response
) -> IssueAccess:
    """The issue, in a project that is not archived. Unlike other writers' it is not locked:
    the upload is copied to storage outside any transaction. As for the other writers, an
    old key of a moved issue is followed, and the answer says where the issue is now."""
    access = await load_issue_access(session, principal, issue_key, follow_moves=True)
    if access.moved is not None:
        response.headers.update(successor_headers(access.moved))
    access.project_access.require_active()
    return access


IssueForUpload = Annotated[IssueAccess, Depends(issue_for_upload)]


@router.post(
    "/issues/{issue_key}/attachments",
    **creates(AttachmentPublic, problem_responses(413) | STORAGE_ERRORS | PROJECT_ERRORS),
)
async def upload_attachment(
    file: Annotated[UploadFile, File(description="The file (multipart/form-data).")],
    response: Response,
    session: SessionDep,
    access: IssueForUpload,
    services: ServicesDep,
) -> AttachmentPublic:
    """Attach a file (reporters and up), up to `FLYSWATTER_ATTACHMENT_MAX_BYTES`. Its type is
    sniffed from its bytes; the answer carries its SHA-256 `checksum`."""
    created = await service.create_attachment(
        session, access, file, services.storage, services.settings.attachment_max_bytes
    )
    response.headers["Location"] = created.location
    response.headers["ETag"] = created.etag
    return created.body


@router.get("/issues/{issue_key}/attachments", **lists(AttachmentPublic, PROJECT_ERRORS))
async def list_attachments(
    session: SessionDep, access: IssueForReading, keyset: IssueKeysetDep
) -> Page[AttachmentPublic]:
    """The issue's files, oldest first."""
    return await service.attachment_page(session, access, keyset)


@router.get(
    ATTACHMENT,
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file"},
        304: {"description": "Not modified (the `If-None-Match` tag is the file's)"},
        307: {"description": "Redirect to a short-lived download URL (S3 storage)"},
        **problem_responses(412),
        **STORAGE_ERRORS,
        **PROJECT_ERRORS,
    },
)
async def download_attachment(
    attachment_id: AttachmentIdPath,
    session: SessionDep,
    access: IssueForReading,
    services: ServicesDep,
    if_none_match: IfNoneMatch = None,
    if_match: IfMatch = None,
) -> Response:
    """The file, with its sniffed type: images (not SVG) and plain text shown inline,
    anything else as a download (RFC 8187 `Content-Disposition`). On S3 with presigned
    downloads on, a redirect to a short-lived URL."""
    attachment = await service.load_attachment(session, access, attachment_id)
    etag = service.attachment_etag(attachment)
    check_if_match(if_match, etag)
    if (unchanged := not_modified(if_none_match, etag)) is not None:
        return unchanged
    return await stored_file_response(
        services,
        session,
        attachment,
        attachment.key,
        gone=f"the file of attachment {attachment_id} is gone",
        inline=shown_inline(attachment.content_type),
    )


@router.delete(ATTACHMENT, status_code=status.HTTP_204_NO_CONTENT, responses=PROJECT_ERRORS)
async def delete_attachment(
    attachment_id: AttachmentIdPath,
    session: SessionDep,
    access: IssueForWriting,
    services: ServicesDep,
) -> None:
    """Delete a file (its uploader, or a maintainer). Its bytes are removed from the storage
    after the deletion is committed; storage that fails then does not fail the request."""
    await service.delete_attachment(session, access, attachment_id, services.storage)
