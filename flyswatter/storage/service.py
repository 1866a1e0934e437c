"""One storage interface for files, with a local-directory and an S3-compatible backend.

Both are synchronous (the worker's tasks are; the API calls them through a thread), write
objects under a key (whole, or streamed from chunks that are counted and hashed on the way,
never held in memory at once), read them back in chunks, and raise ``StorageUnavailable`` for a
fault worth retrying, so that callers never see a backend's own exception types.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from flyswatter.config import Settings
from flyswatter.http.headers import content_disposition

CHUNK_SIZE = 64 * 1024
# Parts of a streamed S3 upload: S3's smallest part size, so at most this much is buffered.
S3_PART_SIZE = 8 * 1024 * 1024


class StorageUnavailable(Exception):
    """The backend could not be reached or answered with a server error; retry later."""


class ObjectMissing(Exception):
    """No object under that key (expired, or removed by hand)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    checksum: str


class _Measured:
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


class _ChunkReader(io.RawIOBase):
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


def _checked_key(key: str) -> PurePosixPath:
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


class LocalStorage:
    """Files under one directory; writes go to a temporary file renamed into place."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_checked_key(key).parts)

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        return self.put_stream(key, (data,), content_type)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        path = self._path(key)
        measured = _Measured(chunks)
        temporary = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
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


class S3Storage:
    """An S3 bucket (AWS, MinIO, any S3-compatible server) through boto3."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=Config(
                # Retries belong to the job (with backoff between attempts), not to each call.
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                # Path-style addressing works with MinIO and any endpoint without bucket DNS.
                s3={"addressing_style": "path"},
                signature_version="s3v4",
            ),
        )

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(kwargs.get("Key", "")) from None
            if status >= 500 or code in ("SlowDown", "RequestTimeout"):
                raise StorageUnavailable(f"object storage answered {code or status}") from exc
            raise
        except BotoCoreError as exc:
            raise StorageUnavailable(f"object storage unreachable ({type(exc).__name__})") from exc

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        _checked_key(key)
        self._call("put_object", Key=key, Body=data, ContentType=content_type)
        return StoredObject(key=key, size=len(data), checksum=hashlib.sha256(data).hexdigest())

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        _checked_key(key)
        measured = _Measured(chunks)
        # In this thread (no transfer threads): an exception raised while reading the chunks
        # reaches the caller as it is, after the managed upload has aborted its parts.
        config = TransferConfig(
            multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE, use_threads=False
        )
        try:
            self.client.upload_fileobj(
                io.BufferedReader(_ChunkReader(measured), buffer_size=CHUNK_SIZE),
                self.bucket,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=config,
            )
        except (S3UploadFailedError, ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(
                f"object storage: upload failed ({type(exc).__name__})"
            ) from exc
        return measured.stored(key)

    def open(self, key: str) -> Iterator[bytes]:
        body = self._call("get_object", Key=key)["Body"]

        def chunks() -> Iterator[bytes]:
            with body:
                yield from body.iter_chunks(CHUNK_SIZE)

        return chunks()

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=key)

    def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, inline: bool = False
    ) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": content_disposition(filename, inline=inline),
            },
            ExpiresIn=expires_in,
        )
        return url

    def check(self) -> None:
        self._call("head_bucket")

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (development stacks, tests)."""
        from botocore.exceptions import ClientError

        try:
            self._call("head_bucket")
        except (ObjectMissing, ClientError):
            self._call("create_bucket")


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage(settings)
    return LocalStorage(Path(settings.storage_dir))
