"""``s3://bucket/prefix`` through boto3 (the optional extra ``kroniko-ops[s3]``).

Credentials, region and endpoint come from boto3's standard chain only (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``~/.aws/``): nothing
here reads, prints or stores them. botocore's own retries are off: :meth:`ObjectStore._retried`
retries every call with back-off for a bounded time, so a server that goes away for a minute is
ridden out and one that stays away gives a clear error.

Uploads carry ``ChecksumSHA256``: the service refuses bytes that do not match (a file that
changed while it was read is never stored under its name). Manifests are created with
``If-None-Match: *``, so two writers can never both create the same manifest.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable
from typing import Any

from . import CHUNK, Conflict, Fatal, Missing, ObjectStore, ObjectStoreError, Region, Retry, Source

SINGLE_PUT_MAX = 1 << 30  # above this an object goes up in parts (S3 caps one PUT at 5 GiB)
_FATAL = {"NoSuchBucket", "InvalidBucketName", "NoCredentialsError", "PermanentRedirect"}


class _Reader(io.RawIOBase):
    """A seekable file over a :class:`Region`, for boto3 to stream (and rewind)."""

    def __init__(self, region: Region) -> None:
        self.region = region
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.region.size}[whence]
        self.pos = max(0, min(self.region.size, base + offset))
        return self.pos

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.region.size - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.region.fd, n, self.region.offset + self.pos)
        if not data:
            raise OSError(f"unexpected end of file at byte {self.region.offset + self.pos}")
        buf[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


class S3Store(ObjectStore):
    """Objects under ``prefix/`` in ``bucket``."""

    def __init__(self, bucket: str, prefix: str, retry: Retry) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ObjectStoreError("boto3 is not installed: pip install 'kroniko-ops[s3]'") from None
        self.bucket, self.prefix, self.retry = bucket, prefix, retry
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        config = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60,
                        max_pool_connections=16)
        self.client = boto3.session.Session().client("s3", config=config)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fatal(self, exc: BaseException, key: str) -> None:
        """Turn errors no retry fixes into Fatal/Missing/Conflict."""
        code = _code(exc)
        if code in ("NoSuchKey", "NotFound") or (_status(exc) == 404 and code not in _FATAL):
            raise Missing(f"{key} is not in {self.url}") from None
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or _status(exc) == 412:
            raise Conflict(f"{key} exists already in {self.url}") from None
        if code in _FATAL:
            raise Fatal(f"{code}: the bucket {self.bucket!r} does not exist or cannot be reached, "
                        "or no credentials were found (AWS_ACCESS_KEY_ID, ~/.aws/credentials)") from None

    def put(self, key: str, source: Source, size: int, sha256: str, exclusive: bool = False) -> None:
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()

        def call() -> None:
            try:
                if size > SINGLE_PUT_MAX and isinstance(source, Region):
                    # Parts: no whole-object checksum; verify-backup reads it back whole.
                    self.client.upload_fileobj(_Reader(source), self.bucket, self._key(key))
                    return
                body: Any = source if isinstance(source, bytes) else _Reader(source)
                extra = {"IfNoneMatch": "*"} if exclusive else {}
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, ContentLength=size,
                                       ChecksumSHA256=checksum, **extra)
            except Exception as exc:
                self._fatal(exc, key)
                raise

        self._retried(f"uploading {key}", call)

    def get(self, key: str, limit: int) -> bytes:
        def call() -> bytes:
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                if obj["ContentLength"] > limit:
                    raise Fatal(f"{key} holds {obj['ContentLength']} bytes, over the {limit} expected")
                return obj["Body"].read()
            except Fatal:
                raise
            except Exception as exc:
                self._fatal(exc, key)
                raise

        return self._retried(f"reading {key}", call)

    def download(self, key: str, sink: Callable[[bytes], None]) -> int:
        done = 0

        def call() -> int:
            nonlocal done
            try:
                extra = {"Range": f"bytes={done}-"} if done else {}
                obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
                for chunk in obj["Body"].iter_chunks(CHUNK):
                    sink(chunk)
                    done += len(chunk)
                return done
            except Exception as exc:
                if done and _code(exc) == "InvalidRange":
                    return done  # the failed attempt had every byte already
                self._fatal(exc, key)
                raise

        return self._retried(f"downloading {key}", call)

    def list(self, under: str = "") -> dict[str, int]:
        start = self._key(under) if under else (f"{self.prefix}/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0

        def call() -> dict[str, int]:
            out: dict[str, int] = {}
            try:
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                    for obj in page.get("Contents", ()):
                        out[obj["Key"][cut:]] = int(obj["Size"])
            except Exception as exc:
                self._fatal(exc, under or "/")
                raise
            return out

        return self._retried("listing", call)

    def sha256(self, key: str) -> str | None:
        def call() -> str | None:
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
            except Exception as exc:
                self._fatal(exc, key)
                raise
            value = head.get("ChecksumSHA256")
            if not value or "-" in value:  # absent, or a multipart upload's checksum of checksums
                return None
            return base64.b64decode(value).hex()

        return self._retried(f"reading the checksum of {key}", call)

    def delete(self, key: str) -> None:
        def call() -> None:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as exc:
                if _code(exc) in ("NoSuchKey", "NotFound"):
                    return
                self._fatal(exc, key)
                raise

        self._retried(f"deleting {key}", call)

    def close(self) -> None:
        self.client.close()
