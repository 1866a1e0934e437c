"""Files attached to issues: what the database knows of each (the bytes are in storage)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field

from flyswatter.db import UTCDateTime, utcnow
from flyswatter.storage.models import StoredFileBase
from flyswatter.users.models import UserSummary


class AttachmentBase(StoredFileBase):
    """A file on an issue: its name as uploaded (cleaned), the type sniffed from its bytes."""


class Attachment(AttachmentBase, table=True):
    __table_args__ = (Index("ix_attachment_issue_id_id", "issue_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", ondelete="CASCADE")
    # Where the bytes are in the storage backend; never derived from the file's name.
    key: str = Field(max_length=500, unique=True)
    uploaded_by: str = Field(foreign_key="user.id", max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class AttachmentPublic(AttachmentBase):
    id: int
    issue_key: str
    uploader: UserSummary
    # Whether a browser is shown the file (images but SVG, plain text) or offered a download.
    inline: bool
    download_url: str
    created_at: datetime
