"""Files kept in object storage: what the database knows of each (the bytes are elsewhere)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from flyswatter.db import UTCDateTime, utcnow


class StoredFileBase(SQLModel):
    """What every file in storage is described by: report artifacts and issue attachments."""

    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=100)
    size: int
    # SHA-256 of the bytes, hex: a client can verify a download, and a rebuilt file is told apart.
    checksum: str = Field(max_length=64)


class ArtifactBase(StoredFileBase):
    """A file a job made."""


class Artifact(ArtifactBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # Where the bytes are in the storage backend (a relative path, or an S3 object key).
    key: str = Field(max_length=500, unique=True)
    created_by: str = Field(foreign_key="user.id", max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # The periodic sweep deletes the file and this row once past it.
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


class ArtifactPublic(ArtifactBase):
    created_at: datetime
    expires_at: datetime


class StorageRemoval(SQLModel, table=True):
    """An object whose file row is deleted, staged in the deleting transaction: the request
    removes the object once that commits, and the periodic sweep removes whatever a storage
    outage or a crash in between left behind (then this row)."""

    __tablename__ = "storage_removal"

    key: str = Field(primary_key=True, max_length=500)
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=True
    )


class StorageWrite(SQLModel, table=True):
    """An object the service is about to write, committed in a short transaction of its own
    before the first byte goes out; the transaction that inserts the file's row deletes it
    (see ``flyswatter.storage.intents``). One left past its grace names an object whose row
    never came (the write failed, its process died, its commit failed): the orphan sweep
    claims it, removes the object, then the intent. Nothing else is ever removed for want
    of a row: a database that is not the bucket's (another one, or one restored from before
    the objects were written) names nothing, so nothing is removed."""

    __tablename__ = "storage_write"

    key: str = Field(primary_key=True, max_length=500)
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=True
    )
    # Set, committed, by the sweep before it removes the object: from then on the writer may
    # not settle the intent (its row would name an object being removed). Until the removal
    # is done and the intent deleted, the next sweep takes it up again.
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
