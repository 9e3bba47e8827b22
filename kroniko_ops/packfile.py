"""One pack file pair (``.pack`` + ``.idx``): names, trailers, and reading by position.

The format is in docs/FORMAT.md ("Packs"); :mod:`kroniko_ops.packs` finds packs in a store.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from itertools import pairwise

OFF_LEN = 13  # "%012d\n"
PACK_MAGIC = b"kroniko-pack 1 "
IDX_MAGIC = b"kroniko-idx 1 "
PACK_TRAILER_LEN = len(PACK_MAGIC) + 13 + 13 + 64 + 1
IDX_TRAILER_LEN = len(IDX_MAGIC) + 13 + 13 + 65 + 64 + 1
NAME_RE = re.compile(r"\Apack-(\d{12})-(\d{12})\.(pack|idx)\Z")
BATCH = 1024


def pack_name(first: int, last: int) -> str:
    """The file name stem of the pack of ``first..last``."""
    return f"pack-{first:012d}-{last:012d}"


def parse_name(name: str) -> tuple[int, int, str] | None:
    """``(first, last, suffix)`` of a pack or idx file name, or None when it is not one."""
    m = NAME_RE.match(name)
    if not m:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    return (first, last, m.group(3)) if 1 <= first <= last else None


def pack_trailer(first: int, last: int, digest: hashlib._Hash) -> bytes:
    """The trailer of a pack whose data went into ``digest`` (which this updates)."""
    head = PACK_MAGIC + b"%012d %012d " % (first, last)
    digest.update(head)
    return head + digest.hexdigest().encode() + b"\n"


def idx_trailer(first: int, last: int, pack_hex: bytes, digest: hashlib._Hash) -> bytes:
    """The trailer of an idx whose offset lines went into ``digest`` (which this updates)."""
    head = IDX_MAGIC + b"%012d %012d %s " % (first, last, pack_hex)
    digest.update(head)
    return head + digest.hexdigest().encode() + b"\n"


class Pack:
    """One pack, opened lazily and read with ``pread``.

    Each file is held by a file object, so a file descriptor is closed only when no reader
    holds the pack any more (a merge that removes the files leaves open packs readable, and a
    descriptor number is never reused under a reader). Reads cost two system calls, where a
    memory map would cost a page fault per cold page, which in virtual machines is far dearer.
    """

    def __init__(self, folder: str, first: int, last: int, pack_path: str | None = None,
                 idx_path: str | None = None) -> None:
        stem = os.path.join(folder, pack_name(first, last))
        self.first, self.last = first, last
        self.pack_path = pack_path or stem + ".pack"
        self.idx_path = idx_path or stem + ".idx"
        self._files: tuple[_File, _File] | None = None
        self._checked = False
        self.verified = False
        self._mutex = threading.Lock()

    @property
    def count(self) -> int:
        """Number of events in the pack."""
        return self.last - self.first + 1

    @property
    def data_size(self) -> int:
        """Bytes of event data (without the trailer)."""
        return self._open()[0].size - PACK_TRAILER_LEN

    def __repr__(self) -> str:
        return f"Pack({self.first}..{self.last})"

    def _open(self) -> tuple[_File, _File]:
        files = self._files
        if files is None:
            with self._mutex:
                if self._files is None:
                    pack = _File(self.pack_path)
                    self._files = (pack, _File(self.idx_path))
                files = self._files
        return files

    def open(self) -> None:
        """Open both files; raises ``FileNotFoundError`` if they were removed, :class:`PackError`
        if their sizes or trailers do not fit the name."""
        pack, idx = self._open()
        if self._checked:
            return
        n = self.count
        if idx.size != (n + 1) * OFF_LEN + IDX_TRAILER_LEN or pack.size < PACK_TRAILER_LEN:
            raise PackError(f"{self.idx_path}: size does not fit {n} events")
        for f, tail_len, magic in ((pack, PACK_TRAILER_LEN, PACK_MAGIC), (idx, IDX_TRAILER_LEN, IDX_MAGIC)):
            tail = f.read(f.size - tail_len, tail_len)
            fields = tail[len(magic):].split(b" ")
            if not tail.startswith(magic) or fields[:2] != [b"%012d" % self.first, b"%012d" % self.last]:
                raise PackError(f"{self.pack_path}: trailer does not name positions {self.first}..{self.last}")
        self._checked = True

    def close(self) -> None:
        """Close both files now (only when no other thread reads this pack)."""
        files, self._files = self._files, None
        for f in files or ():
            f.close()

    def offsets(self, k0: int, k1: int) -> list[int]:
        """Byte offsets of events ``k0..k1`` (0-based in the pack) and the end of ``k1``."""
        raw = self._open()[1].read(k0 * OFF_LEN, (k1 - k0 + 2) * OFF_LEN)
        try:
            out = [int(x) for x in raw.split(b"\n")[:-1]]
        except ValueError:
            raise PackError(f"{self.idx_path}: offset lines {k0}..{k1 + 1} are not numbers") from None
        if len(out) != k1 - k0 + 2:
            raise PackError(f"{self.idx_path}: offset lines {k0}..{k1 + 1} are missing")
        return out

    def _span(self, k0: int, k1: int) -> tuple[int, int]:
        """The offsets of line ``k0`` and line ``k1`` (``k1`` just past the last event wanted)."""
        idx = self._open()[1]
        try:
            if k1 == k0 + 1:
                raw = idx.read(k0 * OFF_LEN, 2 * OFF_LEN)
                return int(raw[:12]), int(raw[OFF_LEN : OFF_LEN + 12])
            return int(idx.read(k0 * OFF_LEN, 12)), int(idx.read(k1 * OFF_LEN, 12))
        except ValueError:
            raise PackError(f"{self.idx_path}: offset lines {k0} or {k1} are not numbers") from None

    def read(self, first: int, last: int) -> list[bytes]:
        """The stored bytes of the events ``first..last`` (inside this pack), in order."""
        pack = self._open()[0]
        k0, k1 = first - self.first, last - self.first + 1
        base, end = self._span(k0, k1)
        if not 0 <= base < end <= pack.size - PACK_TRAILER_LEN:
            raise PackError(f"{self.idx_path}: offsets {base}..{end} fall outside the pack")
        data = pack.read(base, end - base)
        # Canonical JSON holds no raw newline: then the newlines are exactly the events' ends and
        # one split frames them all. Otherwise frame each event by its offsets.
        parts = data.split(b"\n")
        if len(parts) == k1 - k0 + 1 and parts[-1] == b"":
            parts.pop()
            return parts
        offs = self.offsets(k0, k1 - 1)
        if offs[0] != base or offs[-1] != end:
            raise PackError(f"{self.idx_path}: offset lines {k0}..{k1} changed while being read")
        out = []
        for a, b in pairwise(offs):
            if b <= a or data[b - base - 1] != 10:
                raise PackError(f"{self.pack_path}: event at offset {a} is not followed by a newline")
            out.append(data[a - base : b - base - 1])
        return out

    def read_one(self, position: int) -> bytes:
        """The stored bytes of one event: one ``pread`` of its two offsets, one of the event."""
        pack = self._open()[0]
        a, b = self._span(position - self.first, position - self.first + 1)
        if not 0 <= a < b <= pack.size - PACK_TRAILER_LEN:
            raise PackError(f"{self.idx_path}: the offsets of position {position} do not frame an event")
        raw = pack.read(a, b - a)
        if raw[-1:] != b"\n":
            raise PackError(f"{self.pack_path}: the event of position {position} is not followed by a newline")
        return raw[:-1]

    def batches(self, first: int, last: int, backwards: bool = False) -> Iterator[tuple[int, list[bytes]]]:
        """``(position, [bytes, ...])`` runs covering ``first..last`` in order (each run
        ascending; runs descending when ``backwards``)."""
        if not backwards:
            for a in range(first, last + 1, BATCH):
                yield a, self.read(a, min(last, a + BATCH - 1))
        else:
            for b in range(last, first - 1, -BATCH):
                a = max(first, b - BATCH + 1)
                yield a, self.read(a, b)

    def checksums(self) -> tuple[str, str]:
        """Verify both trailers' SHA-256 and that the idx names this pack's; return the pack's
        and the idx's hex digests. Raises :class:`PackError`."""
        self.open()
        pack, idx = self._open()
        pack_hex = _check_tail(pack)
        idx_hex = _check_tail(idx)
        named = idx.read(idx.size - IDX_TRAILER_LEN, IDX_TRAILER_LEN).split(b" ")[4]
        if named.decode("ascii", "replace") != pack_hex:
            raise PackError(f"{self.idx_path}: names pack checksum {named[:12]!r}..., not this pack's")
        offs = self.offsets(0, self.count - 1)
        if offs[0] != 0 or offs[-1] != pack.size - PACK_TRAILER_LEN or any(
            b <= a for a, b in pairwise(offs)
        ):
            raise PackError(f"{self.idx_path}: offsets are not increasing from 0 to the data's end")
        self.verified = True
        return pack_hex, idx_hex


class PackError(ValueError):
    """A pack whose files do not verify (pack-corrupt)."""


class _File:
    """A read-only file, its size (packs never change), and ``pread`` that reads it all."""

    __slots__ = ("_f", "fd", "path", "size")

    def __init__(self, path: str) -> None:
        self.path = path
        # Closed by close(), or when the last reader drops the pack: never under a reader.
        self._f = open(path, "rb", buffering=0)
        self.fd = self._f.fileno()
        self.size = os.fstat(self.fd).st_size
        if self.size == 0:
            self._f.close()
            raise PackError(f"{path} is empty")

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        data = os.pread(self.fd, length, offset)
        if len(data) < length and offset + len(data) < self.size:  # a short read: finish it
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(self.fd, length - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def close(self) -> None:
        """Close the file."""
        self._f.close()


def _check_tail(f: _File) -> str:
    """Check that the last 65 bytes hold the SHA-256 hex of everything before them."""
    if f.size < 65:
        raise PackError(f"{f.path}: shorter than its trailer")
    digest = hashlib.sha256()
    end = f.size - 65
    for a in range(0, end, 8 << 20):
        digest.update(f.read(a, min(end, a + (8 << 20)) - a))
    want = f.read(end, 64).decode("ascii", "replace")
    if digest.hexdigest() != want:
        raise PackError(f"{f.path}: SHA-256 does not match its trailer (damaged)")
    return want
