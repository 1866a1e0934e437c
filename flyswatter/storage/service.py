"""One storage interface for files, with a local-directory and an S3-compatible backend.

Both are synchronous (the worker's tasks are; the API calls them through a thread), write
whole objects under a key, read them back in chunks, and raise ``StorageUnavailable`` for a
fault worth retrying, so that callers never see a backend's own exception types.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from flyswatter.config import Settings
from flyswatter.http.headers import content_disposition

CHUNK_SIZE = 64 * 1024


class StorageUnavailable(Exception):
    """The backend could not be reached or answered with a server error; retry later."""


class ObjectMissing(Exception):
    """No object under that key (expired, or removed by hand)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    checksum: str


def _checked_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"not a relative storage key: {key!r}")
    return path


class Storage(Protocol):
    name: str

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def open(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
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
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except OSError as exc:
            raise StorageUnavailable(f"local storage: cannot write ({exc.strerror})") from exc
        return StoredObject(key=key, size=len(data), checksum=hashlib.sha256(data).hexdigest())

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
        self, key: str, *, filename: str, content_type: str, expires_in: int
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

    def open(self, key: str) -> Iterator[bytes]:
        body = self._call("get_object", Key=key)["Body"]

        def chunks() -> Iterator[bytes]:
            with body:
                yield from body.iter_chunks(CHUNK_SIZE)

        return chunks()

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=key)

    def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int
    ) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": content_disposition(filename),
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
