"""One storage interface for files, with a local-directory and an S3-compatible backend.

Both are synchronous (the worker's tasks are; the API calls them through a thread), write
objects under a key (whole, or streamed from chunks that are counted and hashed on the way,
never held in memory at once), read them back in chunks, and raise ``StorageUnavailable`` for a
fault worth retrying, so that callers never see a backend's own exception types: a store down,
and a store that refuses the service (a missing bucket, credentials it does not accept), which
only its operator can mend. Every key and argument is the service's own, never a client's: no
answer of the store but a missing object is the fault of the request that led to the call.

For the sweep of orphaned objects, both also remove the writes under a prefix begun before a
time that never finished (temporary files, multipart uploads): no key names those. Whole
objects are never listed to find what to remove: the sweep goes by the writes the database
recorded (``flyswatter.storage.intents``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from flyswatter.config import Settings

logger = logging.getLogger("flyswatter.storage")

CHUNK_SIZE = 64 * 1024
# The local backend's files being written, renamed into place once whole.
TEMPORARY_PREFIX = ".incoming-"


class StorageUnavailable(Exception):
    """The backend could not be reached, answered with a server error, or refused the
    service (a missing bucket, credentials it does not accept); retry later. The message is
    ours, with the store's error code at most: never its own text."""


class BucketMissing(StorageUnavailable):
    """The bucket itself does not exist (``ensure_bucket`` makes it)."""


class ObjectMissing(Exception):
    """No object under that key (expired, or removed by hand)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    checksum: str


class Measured:
    """Chunks passed through as they are read, counted and hashed on the way."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._hash = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            self._hash.update(chunk)
            yield chunk

    def stored(self, key: str) -> StoredObject:
        return StoredObject(key=key, size=self.size, checksum=self._hash.hexdigest())


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of chunks (what boto3's managed upload reads from)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def checked_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"not a relative storage key: {key!r}")
    return path


class Storage(Protocol):
    name: str

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        """Write the chunks as one object; an exception raised by ``chunks`` (or the backend)
        leaves no object under ``key`` and propagates as it is."""
        ...

    def open(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, inline: bool = False
    ) -> str | None:
        """A short-lived URL a client may download from directly; None when not offered."""
        ...

    def check(self) -> None:
        """Raise ``StorageUnavailable`` when the backend cannot be used now."""
        ...

    def remove_unfinished_writes(self, prefix: str, before: datetime) -> int:
        """Remove the writes under ``prefix`` begun before ``before`` and never finished (a
        process killed mid-write leaves them); how many. No key names them."""
        ...


def _local_time(path: Path) -> datetime | None:
    """When the file was last written; None when it is gone meanwhile."""
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageUnavailable(f"local storage: cannot list ({exc.strerror})") from exc


class LocalStorage:
    """Files under one directory; writes go to a temporary file renamed into place."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*checked_key(key).parts)

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        return self.put_stream(key, (data,), content_type)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        path = self._path(key)
        measured = Measured(chunks)
        temporary = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX)
            with os.fdopen(handle, "wb") as file:
                for chunk in measured:
                    file.write(chunk)
            os.replace(temporary, path)
        except BaseException as exc:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageUnavailable(f"local storage: cannot write ({exc.strerror})") from exc
            raise
        return measured.stored(key)

    def open(self, key: str) -> Iterator[bytes]:
        try:
            file = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise StorageUnavailable(f"local storage: cannot read ({exc.strerror})") from exc

        def chunks() -> Iterator[bytes]:
            with file:
                while chunk := file.read(CHUNK_SIZE):
                    yield chunk

        return chunks()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"local storage: cannot delete ({exc.strerror})") from exc

    def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, inline: bool = False
    ) -> str | None:
        return None

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"local storage: {exc.strerror}") from exc

    def _files(self, prefix: str) -> Iterator[Path]:
        """The files under ``prefix``; none when it was never written to."""

        def failed(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):
                raise StorageUnavailable(f"local storage: cannot list ({exc.strerror})") from exc

        for folder, _, names in os.walk(self._path(prefix), onerror=failed):
            for name in names:
                yield Path(folder, name)

    def remove_unfinished_writes(self, prefix: str, before: datetime) -> int:
        removed = 0
        for path in self._files(prefix):
            written = _local_time(path)
            if path.name.startswith(TEMPORARY_PREFIX) and written and written < before:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise StorageUnavailable(
                        f"local storage: cannot delete ({exc.strerror})"
                    ) from exc
                removed += 1
        return removed


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        # Imported here: boto3 is loaded only by a service that stores in S3.
        from flyswatter.storage.s3 import S3Storage

        return S3Storage(settings)
    return LocalStorage(Path(settings.storage_dir))
