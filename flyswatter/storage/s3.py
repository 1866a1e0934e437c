"""The S3 backend (AWS, MinIO, any S3-compatible server) through boto3: what the store answers
is turned into the service's own faults (``ObjectMissing``, ``StorageUnavailable``), never
passed on as botocore's exceptions, and never with the store's own text."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from flyswatter.config import Settings
from flyswatter.http.headers import content_disposition
from flyswatter.storage.service import (
    CHUNK_SIZE,
    BucketMissing,
    ChunkReader,
    Measured,
    ObjectMissing,
    StorageUnavailable,
    StoredObject,
    checked_key,
)

logger = logging.getLogger("flyswatter.storage")

# Parts of a streamed S3 upload: S3's smallest part size, so at most this much is buffered.
S3_PART_SIZE = 8 * 1024 * 1024

# S3 answers (error codes, or the bare status of a HEAD) that say no object is there.
_MISSING = frozenset({"NoSuchKey", "NoSuchUpload", "404", "NotFound"})
# The calls whose "missing" is about their key (or upload); a write's is a fault of the store.
_KEYED = frozenset({"get_object", "delete_object", "abort_multipart_upload"})
# Answers of a store that is up but busy or failing: they pass by themselves.
_TRANSIENT = frozenset({"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError"})
# Answers that say the store is set up wrong for the service: the bucket, the credentials,
# the region or the clock. Only the operator mends them.
_MISCONFIGURED = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "InvalidBucketName",
        "301",
        "400",
        "403",
    }
)


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

    def _call(self, operation: str, *, creating: bool = False, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            refusal = self._refusal(operation, exc, key=kwargs.get("Key", ""), creating=creating)
            raise refusal from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"object storage unreachable ({type(exc).__name__})") from exc

    def _refusal(
        self, operation: str, exc: Any, *, key: str = "", creating: bool = False
    ) -> Exception:
        """What the store's error answer to ``operation`` is to callers. Only its code goes
        on, never its message (which may quote the request: a key id, what was signed).
        ``creating``: a missing bucket is expected (it is made next), nothing to warn of."""
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        code = str(error.get("Code") or status)
        if code in _MISSING and operation in _KEYED:
            return ObjectMissing(key)
        if code in _MISSING and operation == "head_bucket":
            code = "NoSuchBucket"  # What a HEAD, which has no body, cannot say.
        if status >= 500 or code in _TRANSIENT:
            return StorageUnavailable(f"object storage answered {code}")
        if creating and code == "NoSuchBucket":
            return BucketMissing(f"object storage answered {code}")
        if code in _MISCONFIGURED:
            logger.warning(
                "object storage refused %s on bucket %s: %s; check the bucket, the credentials"
                " and the region",
                operation,
                self.bucket,
                code,
            )
        else:
            # Neither the client's fault (keys and arguments are ours) nor one that passes.
            logger.error(
                "object storage refused %s on bucket %s: %s (HTTP %d)",
                operation,
                self.bucket,
                code,
                status,
            )
        unavailable = BucketMissing if code == "NoSuchBucket" else StorageUnavailable
        return unavailable(f"object storage refused the service ({code})")

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        checked_key(key)
        self._call("put_object", Key=key, Body=data, ContentType=content_type)
        return StoredObject(key=key, size=len(data), checksum=hashlib.sha256(data).hexdigest())

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        checked_key(key)
        measured = Measured(chunks)
        # In this thread (no transfer threads): an exception raised while reading the chunks
        # reaches the caller as it is, after the managed upload has aborted its parts.
        config = TransferConfig(
            multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE, use_threads=False
        )
        try:
            self.client.upload_fileobj(
                io.BufferedReader(ChunkReader(measured), buffer_size=CHUNK_SIZE),
                self.bucket,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=config,
            )
        except ClientError as exc:
            raise self._refusal("upload", exc) from None
        except S3UploadFailedError as exc:
            # boto3's wrapper of the store's answer, which it raised while handling that.
            if isinstance(answer := exc.__context__, ClientError):
                raise self._refusal("upload", answer) from None
            raise StorageUnavailable("object storage: upload failed") from None
        except BotoCoreError as exc:
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
        # S3 answers 204 for a missing key; some compatible stores a 404.
        with contextlib.suppress(ObjectMissing):
            self._call("delete_object", Key=key)

    def presigned_url(
        self, key: str, *, filename: str, content_type: str, expires_in: int, inline: bool = False
    ) -> str | None:
        from botocore.exceptions import BotoCoreError

        try:
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
        except BotoCoreError as exc:
            # Signing is local: only the credentials (none found) can fail it.
            logger.warning("object storage: cannot sign a download URL (%s)", type(exc).__name__)
            raise StorageUnavailable(
                f"object storage: cannot sign ({type(exc).__name__})"
            ) from None
        return url

    def check(self) -> None:
        self._call("head_bucket")

    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The pages of a listing, its faults as ``_call``'s."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield from self.client.get_paginator(operation).paginate(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            raise self._refusal(operation, exc) from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"object storage unreachable ({type(exc).__name__})") from exc

    def remove_unfinished_writes(self, prefix: str, before: datetime) -> int:
        # A failed managed upload aborts its parts itself; a process killed mid-upload (or
        # a store down when the abort was sent) leaves them, invisible and billed.
        stale = [
            (str(upload["Key"]), str(upload["UploadId"]))
            for page in self._pages("list_multipart_uploads", Prefix=prefix)
            for upload in page.get("Uploads", [])
            if upload["Initiated"] < before
        ]
        for key, upload_id in stale:
            # NoSuchUpload: completed or aborted meanwhile.
            with contextlib.suppress(ObjectMissing):
                self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
        return len(stale)

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (development stacks, tests)."""
        try:
            self._call("head_bucket", creating=True)
        except BucketMissing:
            self._call("create_bucket")
