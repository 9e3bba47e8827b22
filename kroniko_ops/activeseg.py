"""The active segment as readers and the writer see it: the last segment, read up to a bound the
caller gives, with the offsets of the records seen so far (:class:`~.logview.LogView` holds one)."""

from __future__ import annotations

import os
import threading
from array import array
from itertools import accumulate, repeat
from operator import add

from . import fileio
from .errors import NothingWritten, StoreCorrupted, access_denied, denied, out_of_files
from .format import record as recfmt
from .format import segment as segfmt


class ActiveSegment:
    """The last segment, read up to a bound the caller gives (the synced end for readers, the
    committed tail for the writer); keeps the offsets of the records it has seen."""

    def __init__(self, directory: str, first: int) -> None:
        self.first = first
        self.path = os.path.join(directory, segfmt.seg_name(first))
        try:
            self.fd = fileio.open_read(self.path)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            if out_of_files(exc):  # the process's limit, not the segment's fault
                raise NothingWritten(f"could not open {self.path} ({exc}); nothing was written: raise the "
                                     "open-files limit (ulimit -n) or close files, and retry") from exc
            if denied(exc):
                raise access_denied(self.path, exc) from None
            root = os.path.dirname(os.path.dirname(self.path))
            raise StoreCorrupted(f"{self.path} cannot be used as a log segment ({exc.strerror}); "
                                 f"run: kroniko-ops fsck {root}") from None
        self.offsets = array("Q", [0])  # record starts, then the end of the last record seen
        self.last = first - 1
        self._seen = (0, b"")  # the synced (position, chain) this view was last checked against
        self._lock = threading.Lock()  # two threads extending at once would add offsets twice

    def close(self) -> None:
        """Close the descriptor."""
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()

    def extend(self, end: int) -> None:
        """Learn the offsets of the records in bytes ``..end`` (whole, committed records)."""
        with self._lock:
            self._extend(end)

    def follow(self, position: int, chain: bytes, end: int) -> None:
        """Learn the records up to the synced ``end``, whose last is ``position`` with ``chain``.

        When the synced position changed since the last call, first make sure that what this
        view learned is still the log: ``fsck --repair --accept-loss`` may have cut records it
        knows, and new ones may have taken their bytes since, at other offsets. The record at the
        position checked last time must still carry its chain (which vouches for every record
        before it), and the one at the new position must carry the synced chain; otherwise the
        offsets are learned again from the segment's start. Raises :class:`StoreCorrupted` when
        even then the log does not hold the synced record."""
        with self._lock:
            if (position, chain) == self._seen:
                self._extend(end)
                return
            if self._seen[0] and not self._holds(*self._seen):
                self._forget()
            self._extend(end)
            if not self._holds(position, chain):
                self._forget()
                self._extend(end)
                if not self._holds(position, chain):
                    root = os.path.dirname(os.path.dirname(self.path))
                    raise StoreCorrupted(f"{self.path} does not hold the synced record {position} with the chain "
                                         f"the synced position records: run: kroniko-ops fsck {root}")
            self._seen = (position, chain)

    def _holds(self, position: int, chain: bytes) -> bool:
        """Whether the record this view learned at ``position`` is there whole with ``chain``
        (True when it learned none there: nothing to contradict)."""
        k = position - self.first
        if k < 0 or k + 1 >= len(self.offsets):
            return True
        a, b = self.offsets[k], self.offsets[k + 1]
        data = os.pread(self.fd, b - a, a)
        try:
            rec = recfmt.parse_at(data)
        except recfmt.RecordError:
            return False
        return rec.position == position and rec.size == len(data) and rec.chain == chain

    def _forget(self) -> None:
        """Drop every offset learned: the log below them changed."""
        self.offsets = array("Q", [0])
        self.last = self.first - 1
        self._seen = (0, b"")

    def _extend(self, end: int) -> None:
        have = self.offsets[-1]
        if end <= have:
            return
        data = os.pread(self.fd, end - have, have)
        if len(data) != end - have or b"\0" in data:
            raise self._lost(have, data, end)
        lines = data.split(b"\n")
        lines.pop()
        ends = accumulate(map(add, map(len, lines), repeat(1)), initial=have)
        next(ends)  # the offsets after each line (computed in C: an active segment may hold many)
        self.offsets.extend(ends)
        self.last = self.first + len(self.offsets) - 2

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """The byte range of positions ``lo..hi`` (already seen through :meth:`extend`)."""
        return self.offsets[lo - self.first], self.offsets[hi - self.first + 1]

    def read_run(self, lo: int, hi: int) -> bytes:
        """The raw bytes of records ``lo..hi``. Raises :class:`StoreCorrupted` when the disk no
        longer holds them whole: records learned before it lost them must not read as fewer."""
        a, b = self.span(lo, hi)
        data = os.pread(self.fd, b - a, a)
        if len(data) != b - a or b"\0" in data:
            raise self._lost(a, data, self.offsets[-1])
        return data

    def _lost(self, at: int, data: bytes, end: int) -> StoreCorrupted:
        """The error for ``data`` read at byte ``at`` cut short, or holding zeros where records
        should be (a preallocated segment whose writes the disk lost, at the end or in between):
        the log no longer holds what was synced."""
        root = os.path.dirname(os.path.dirname(self.path))
        return StoreCorrupted(f"{self.path} holds records up to byte {at + len(data.split(bytes(1))[0])}, short of "
                              f"its synced end {end}: acknowledged records are missing; run: kroniko-ops fsck {root} "
                              "(then restore from a backup, or keep what remains with fsck --repair --accept-loss)")
