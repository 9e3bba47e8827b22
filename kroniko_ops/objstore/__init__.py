"""Object storage for replicas: an ``s3://bucket/prefix`` (any S3-compatible service, through
boto3) or a folder, behind one small interface (:class:`ObjectStore`).

Objects are written whole or not at all (a folder writes a temp name, fsyncs it and renames it;
S3 makes a PUT visible only when complete) and every upload carries its SHA-256, which the
service checks where it can. Every call is retried with exponential back-off (a server that went
away, a slow server, a full quota, a permission error may all pass) for :attr:`Retry.seconds`;
then :class:`ObjectStoreError` (exit 8) says what failed and what to check. Credentials and the
endpoint come only from the AWS SDK's standard environment and files and are never part of a
message.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ..errors import InvalidArgument, KronikoError

T = TypeVar("T")
CHUNK = 1 << 20


class ObjectStoreError(KronikoError):
    """An object storage call kept failing after its retries (exit 8): the message names the
    operation, the object and the last error, never a credential."""


class Conflict(ObjectStoreError):
    """An exclusive write found the object already there: another process wrote it."""


class Missing(ObjectStoreError):
    """The object asked for does not exist."""


class Fatal(Exception):
    """Raised inside a retried call for an error no retry can fix (wraps the message)."""


@dataclass(frozen=True)
class Retry:
    """How long a failing call is retried: back-off from ``first`` doubling up to ``most``
    seconds between attempts, giving up once ``seconds`` have passed since the first attempt."""

    seconds: float = 120.0
    first: float = 0.2
    most: float = 5.0


@dataclass(frozen=True)
class Region:
    """``size`` bytes of the open file ``fd`` from ``offset``: an upload's source, read again
    on each attempt."""

    fd: int
    offset: int
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The bytes, in chunks (raises when the file is shorter)."""
        done = 0
        while done < self.size:
            chunk = os.pread(self.fd, min(CHUNK, self.size - done), self.offset + done)
            if not chunk:
                raise OSError(f"unexpected end of file at byte {self.offset + done}")
            yield chunk
            done += len(chunk)


Source = bytes | Region


class ObjectStore:
    """Where a replica lives. Keys are relative to the URL (``manifests/000000000001.json``)."""

    url: str
    retry: Retry
    cancel: threading.Event | None = None  # set: stop retrying (the command was asked to stop)

    def put(self, key: str, source: Source, size: int, sha256: str, exclusive: bool = False) -> None:
        """Write the object ``key`` whole (``size`` bytes whose SHA-256 is ``sha256``, checked
        before it becomes visible); with ``exclusive``, raise :class:`Conflict` if it exists."""
        raise NotImplementedError

    def get(self, key: str, limit: int) -> bytes:
        """The bytes of a small object (at most ``limit``); :class:`Missing` when absent."""
        raise NotImplementedError

    def download(self, key: str, sink: Callable[[bytes], None]) -> int:
        """Pass the object's bytes to ``sink`` in order, each byte once (a retry resumes where
        the failed attempt stopped); return the size. :class:`Missing` when absent."""
        raise NotImplementedError

    def list(self, under: str = "") -> dict[str, int]:
        """Every object whose key starts with ``under``, with its size."""
        raise NotImplementedError

    def sha256(self, key: str) -> str | None:
        """The SHA-256 the service recorded for the object, when it keeps one (else None)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the object (absent already is fine)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    def _retried(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` until it succeeds, retrying for :attr:`retry` ``.seconds``; a
        :class:`Fatal` error or :class:`Missing`/:class:`Conflict` ends it at once."""
        start = time.monotonic()
        delay = self.retry.first
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except (Missing, Conflict):
                raise
            except Fatal as exc:
                raise ObjectStoreError(f"{what} on {self.url}: {exc}") from None
            except Exception as exc:
                problem = describe_error(exc)
                if self.cancel is not None and self.cancel.is_set():
                    raise ObjectStoreError(f"{what} on {self.url}: stopped while it was failing ({problem})") from None
                if time.monotonic() - start + delay > self.retry.seconds:
                    raise ObjectStoreError(
                        f"{what} on {self.url} failed {attempt} time(s) over {time.monotonic() - start:.0f} s, "
                        f"last: {problem}; check that the service is reachable, the bucket exists, the "
                        "credentials may write there and the quota is not full, then run the command again"
                    ) from None
            pause = delay * (0.5 + random.random() / 2)  # jitter: retries of many clients spread out
            if self.cancel is not None:
                self.cancel.wait(pause)
            else:
                time.sleep(pause)
            delay = min(delay * 2, self.retry.most)


def describe_error(exc: BaseException) -> str:
    """A one-line description of ``exc`` (S3 error codes and HTTP statuses where present)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{err.get('Code', type(exc).__name__)} (HTTP {status}): {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def is_url(text: str) -> bool:
    """True for an ``s3://`` URL (a folder is any other path)."""
    return text.startswith("s3://")


def open_url(url: str, retry: Retry | None = None) -> ObjectStore:
    """The object store at ``url``: ``s3://bucket/prefix`` or a folder path. Raises
    InvalidArgument (exit 2) for a malformed URL."""
    retry = retry or Retry()
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        if not bucket or any(part in ("", ".", "..") for part in prefix.strip("/").split("/") if prefix.strip("/")):
            raise InvalidArgument(f"{url}: expected s3://BUCKET/PREFIX (a bucket name, then an optional prefix)")
        from .s3 import S3Store

        return S3Store(bucket, prefix.strip("/"), retry)
    if "://" in url:
        raise InvalidArgument(f"{url}: only s3:// URLs and folder paths are supported")
    from .folder import FolderStore

    return FolderStore(url, retry)
