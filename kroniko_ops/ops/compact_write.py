"""Writing packs: temp files, verification against the log, atomic publication.

A pack is written to ``packs/.tmp-<pid>-<hex>.pack`` and ``.idx`` (a crash leaves only temp
files, which hold copies of events that are still loose), fsynced, read back from disk and
checked event by event against the log's hashes, and only then published: ``link`` the idx, then
the pack, under their final names (``link`` never replaces a file), remove the temp names, fsync
``packs/``. The caller removes the loose files the pack replaces only after that.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from .. import fileio
from ..layout import TMP_PREFIX
from ..log import iter_lines
from ..packs import BATCH, Pack, PackError, idx_trailer, pack_name, pack_trailer

FLUSH_BYTES = 4 << 20


class PackWriter:
    """One pack being written for the positions ``first, first + 1, ...``."""

    def __init__(self, folder: str, first: int, durable: bool = True) -> None:
        self.folder, self.first, self.durable = folder, first, durable
        if not os.path.isdir(folder):
            fileio.makedirs(folder)
        token = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
        self.tmp_pack, self.tmp_idx = token + ".pack", token + ".idx"
        self.next = first
        self.size = 0
        self._digest, self._idx_digest = hashlib.sha256(), hashlib.sha256()
        self._data: list[bytes] = []
        self._offsets: list[bytes] = []
        self._buffered = 0
        self._fds: list[int] = []
        self._fds.append(fileio.open_write(self.tmp_pack, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
        self._fds.append(fileio.open_write(self.tmp_idx, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))

    @property
    def last(self) -> int:
        """The last position added so far (``first - 1`` when none)."""
        return self.next - 1

    def add(self, raws: Sequence[bytes]) -> None:
        """Append the stored bytes of the next positions, in order."""
        offset = self.size
        offsets, data = self._offsets, self._data
        for raw in raws:
            offsets.append(b"%012d\n" % offset)
            data.append(raw)
            data.append(b"\n")
            offset += len(raw) + 1
        self._buffered += offset - self.size
        self.size = offset
        self.next += len(raws)
        if self._buffered >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        data, idx = b"".join(self._data), b"".join(self._offsets)
        self._data.clear()
        self._offsets.clear()
        self._buffered = 0
        self._digest.update(data)
        self._idx_digest.update(idx)
        fileio.write_all(self._fds[0], data, self.tmp_pack)
        fileio.write_all(self._fds[1], idx, self.tmp_idx)

    def finish(self) -> Pack:
        """Write the trailers, fsync, and return the temp pack (not published yet)."""
        if self.last < self.first:
            raise ValueError("a pack needs at least one event")
        self._offsets.append(b"%012d\n" % self.size)
        self._flush()
        trailer = pack_trailer(self.first, self.last, self._digest)
        fileio.write_all(self._fds[0], trailer, self.tmp_pack)
        fileio.write_all(self._fds[1], idx_trailer(self.first, self.last, trailer[-65:-1], self._idx_digest),
                         self.tmp_idx)
        for fd, path in zip(self._fds, (self.tmp_pack, self.tmp_idx), strict=True):
            if self.durable:
                fileio.fsync(fd, path)
                if hasattr(os, "posix_fadvise"):
                    # Drop the (now clean) cached pages so that the check that follows reads the disk.
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        self._close()
        return Pack(self.folder, self.first, self.last, self.tmp_pack, self.tmp_idx)

    def _close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def publish(self) -> str:
        """Give the finished temp files their final names (idx first: a listed ``.pack`` always
        has its idx) and fsync the folder; return the final ``.pack`` path."""
        stem = os.path.join(self.folder, pack_name(self.first, self.last))
        fileio.link(self.tmp_idx, stem + ".idx")
        fileio.link(self.tmp_pack, stem + ".pack")
        for tmp in (self.tmp_idx, self.tmp_pack):
            fileio.unlink(tmp)
        if self.durable:
            fileio.fsync_dir(self.folder)
        return stem + ".pack"

    def abort(self) -> None:
        """Close and remove the temp files (best effort: a leftover is a stale temp file that
        holds only copies)."""
        if self._fds:
            self._close()
        for tmp in (self.tmp_pack, self.tmp_idx):
            try:
                fileio.unlink(tmp)
            except OSError:
                pass


def verify_against_log(pack: Pack, log_fd: int) -> None:
    """Check a written pack: trailers, offsets, and every event's SHA-256 against the log line of
    its position. Raises :class:`~kroniko_ops.packs.PackError`."""
    try:
        pack.checksums()
        for a in range(pack.first, pack.last + 1, BATCH):
            b = min(pack.last, a + BATCH - 1)
            raws = pack.read(a, b)
            for line, raw in zip(iter_lines(log_fd, a, b), raws, strict=True):
                if hashlib.sha256(raw).hexdigest() != line.event_hash:
                    raise PackError(f"{pack.pack_path}: position {line.position} does not match the log")
    finally:
        pack.close()


def remove_pack(pack: Pack) -> None:
    """Unlink a pack whose events are all in a published, verified pack (``.pack`` first, so
    that a listed pack always has its idx)."""
    for path in (pack.pack_path, pack.idx_path):
        try:
            fileio.unlink(path)
        except FileNotFoundError:
            pass
