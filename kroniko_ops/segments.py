"""The writer's segment files: opening the active segment, finishing a roll a crash interrupted,
publishing a sealed segment's offset index, and the preallocated files segments are made from.

A segment is made at its full size (``segment_bytes``) with every byte written as zero, before it
is needed: ``log/next.prealloc`` is written, fsynced and named outside the writer lock once the
active segment is half full, and a roll renames it to ``log/<first>.seg``, so an append always
overwrites space already written (its ``fdatasync`` needs no journal commit). A file is never
reused: every segment starts as fresh zeros, so no old record with a valid checksum can be read
as a new one. A roll that finds no spare makes it under the lock, before the old segment is
sealed: a full disk stops the roll with nothing changed.
"""

from __future__ import annotations

import logging
import os

from . import fileio, layout
from .errors import NothingWritten, StoreCorrupted
from .format import segment as segfmt
from .logview import LogView

_log = logging.getLogger("kroniko_ops")


class SegmentFiles:
    """The active segment's write descriptor and the files a roll makes and renames."""

    def __init__(self, lay: layout.Layout, view: LogView, syncer: fileio.Syncer, segment_bytes: int) -> None:
        self.layout = lay
        self.view = view
        self.syncer = syncer
        self.segment_bytes = segment_bytes
        self.fd: int | None = None
        self.first = 0
        self._sealed_mark = ""
        self.spare_known = False  # this handle saw log/next.prealloc since the active segment changed

    def close(self) -> None:
        """Close the write descriptor."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def rolled(self) -> bool:
        """Whether the segment this handle writes to was sealed (its offset index appeared) or
        packed and removed by a compaction since."""
        assert self.fd is not None
        return os.path.lexists(self._sealed_mark) or os.fstat(self.fd).st_nlink == 0

    def open_active(self) -> None:
        """Point the write descriptor at the newest segment, finishing a seal that a crash
        interrupted (its offset index written, the next segment not yet created)."""
        self.view.refresh()
        first = self.view.active_first
        idx = os.path.join(self.layout.log_dir, segfmt.idx_name(first))
        if os.path.lexists(idx):
            self._finish_interrupted_seal(first, idx)
            return self.open_active()
        prev = self.view.previous_segment(first)
        if prev is not None and not os.path.lexists(os.path.join(self.layout.log_dir, segfmt.idx_name(prev))):
            # Compaction removes a packed segment's files (.seg first) after the listing: only
            # a segment still there can have lost its index to a power cut.
            if os.path.lexists(os.path.join(self.layout.log_dir, segfmt.seg_name(prev))):
                self._restore_lost_seal(prev, first)
            return self.open_active()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None  # if opening the next one fails, close() must not close this number again
        path = os.path.join(self.layout.log_dir, segfmt.seg_name(first))
        # Records go at the tail's offset (pwrite), not at the end of the file: no O_APPEND.
        self.fd = fileio.check_regular(fileio.open_write(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK), path)
        self.first = first
        self._sealed_mark = idx  # appears when another writer seals this segment
        self.spare_known = False

    def _restore_lost_seal(self, prev: int, first: int) -> None:
        """A power cut kept the next segment's name but lost the sealed one's offset index (the
        folder fsync that makes both durable never ran). Nothing can have been written to the
        next segment before that fsync, so one holding no record means: rebuild the index from
        the sealed segment, whose records were fsynced (and trimmed) before the seal began."""
        if not segfmt.holds_no_record(os.path.join(self.layout.log_dir, segfmt.seg_name(first))):
            raise StoreCorrupted(
                f"log/{segfmt.idx_name(prev)} of {self.layout.root} is missing while the next segment holds "
                f"records; run: kroniko-ops fsck {self.layout.root}")
        fd = fileio.open_read(os.path.join(self.layout.log_dir, segfmt.seg_name(prev)))
        try:
            data = segfmt.build_seal(fd, prev, segfmt.data_end(fd))
        finally:
            os.close(fd)
        self.publish_idx(prev, data)
        self.syncer.dir(self.layout.log_dir)

    def _finish_interrupted_seal(self, first: int, idx: str) -> None:
        path = os.path.join(self.layout.log_dir, segfmt.seg_name(first))
        fd = fileio.open_read(path)
        try:
            size = os.fstat(fd).st_size
            try:
                seal = segfmt.read_idx(idx, first)
                ok = seal.size == size
            except (segfmt.SegmentError, OSError):
                ok = False
            if not ok:
                layout.set_aside(self.layout.root, "torn-seal",
                                 f"log/{segfmt.idx_name(first)}: an offset index left torn by a crash while "
                                 "sealing; rebuilt from the segment's records.",
                                 move=[idx], durable=self.syncer.durable)
                data = segfmt.build_seal(fd, first, segfmt.data_end(fd, size))
                self.publish_idx(first, data)
            last = segfmt.read_idx(idx, first)
            self.create_next(first + last.count, self.spare())
        finally:
            os.close(fd)

    def publish_idx(self, first: int, data: bytes) -> None:
        """Write a sealed segment's offset index under its name (through a fsynced temp file)."""
        final = os.path.join(self.layout.log_dir, segfmt.idx_name(first))
        tmp = os.path.join(self.layout.log_dir, f"{layout.TMP_PREFIX}{os.getpid()}-{segfmt.idx_name(first)}")
        fd = fileio.open_write(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            fileio.write_all(fd, data, tmp)
            self.syncer.file(fd, tmp)
        finally:
            os.close(fd)
        fileio.rename(tmp, final)

    def create_next(self, first: int, spare: str) -> None:
        """Give the preallocated ``spare`` the name of the segment starting at ``first``."""
        fileio.rename(spare, os.path.join(self.layout.log_dir, segfmt.seg_name(first)))
        # One folder fsync makes the sealed index's name and the new segment's name durable,
        # before any record goes to the new segment.
        self.syncer.dir(self.layout.log_dir)

    # -- preallocation -----------------------------------------------------------------------------

    def spare(self) -> str:
        """The path of ``log/next.prealloc``, made now (zeros, fsynced) when there is none. A
        failure leaves nothing behind and raises :class:`NothingWritten`."""
        path = os.path.join(self.layout.log_dir, segfmt.SPARE_NAME)
        try:
            # Read whole before it becomes a segment: a byte that is not zero past the records
            # would read as a torn tail (a dirty file is replaced, it never held a record).
            if os.path.isfile(path) and not os.path.islink(path) and segfmt.only_zeros(path):
                return path
            return self.make_spare()
        except OSError as exc:
            raise NothingWritten(
                f"preallocating the next log segment of {self.layout.root} ({self.segment_bytes} bytes) failed "
                f"({exc}); nothing was written: free disk space (or fix permissions) and retry") from exc

    def make_spare(self) -> str:
        """Write ``log/next.prealloc``: ``segment_bytes`` zeros, fsynced under a temp name, then
        renamed (several writers may race to: each one's file is whole)."""
        log_dir = self.layout.log_dir
        tmp = os.path.join(log_dir, f"{layout.TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{segfmt.SPARE_NAME}")
        fd = fileio.open_write(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
        try:
            fileio.write_zeros(fd, 0, self.segment_bytes, tmp)
            self.syncer.file(fd, tmp)
        except BaseException:
            os.close(fd)
            try:
                fileio.unlink(tmp)
            except OSError:
                pass  # a stale temp file: recover removes it
            raise
        os.close(fd)
        path = os.path.join(log_dir, segfmt.SPARE_NAME)
        fileio.rename(tmp, path)
        self.spare_known = True
        return path

    def drop_dirty_spare(self) -> bool:
        """Remove ``log/next.prealloc`` when it holds anything but zeros (it never held a
        record: a roll makes a new one); True when it did."""
        path = os.path.join(self.layout.log_dir, segfmt.SPARE_NAME)
        if not os.path.isfile(path) or os.path.islink(path) or segfmt.only_zeros(path):
            return False
        fileio.unlink(path)
        self.syncer.dir(self.layout.log_dir)
        self.spare_known = False
        return True

    def prepare_spare(self, end: int) -> None:
        """Outside the lock, once the active segment is half full: make sure the next segment is
        preallocated before the roll needs it. A failure is left for the roll to report."""
        if self.spare_known or end < self.segment_bytes // 2:
            return
        try:
            if not os.path.lexists(os.path.join(self.layout.log_dir, segfmt.SPARE_NAME)):
                self.make_spare()
            self.spare_known = True
        except OSError as exc:
            self.spare_known = True  # not again for this segment: the roll makes it or says why not
            _log.warning("preallocating the next log segment of %s failed (%s); the roll will try again",
                         self.layout.root, exc)

    def clear(self, fd: int, start: int, end: int, name: str) -> None:
        """Take back bytes ``start..end`` of the active segment (see :func:`take_back`)."""
        take_back(fd, start, end, self.segment_bytes, name)

    def preallocate(self, end: int) -> None:
        """Under the lock, when the active segment ends right after its records (made before
        segments were preallocated, restored from a backup, or trimmed by a seal a crash cut
        short): write the zeros of the rest of its size, so appends overwrite written space."""
        assert self.fd is not None
        if end >= self.segment_bytes:
            return
        name = segfmt.seg_name(self.first)
        fileio.write_zeros(self.fd, end, self.segment_bytes, name)
        self.syncer.file(self.fd, name)


def take_back(fd: int, start: int, end: int, segment_bytes: int, name: str) -> None:
    """Take back bytes ``start..end`` of an active segment (a dead writer's, a failed write's, or
    what ``fsck --accept-loss`` cuts): zeros again where the segment is preallocated, a shorter
    file where they grew it past its preallocated size, so the end of its records is found as
    for any other append. Not fsynced here."""
    size = os.fstat(fd).st_size
    keep = min(size, max(start, segment_bytes))
    if size > keep:
        fileio.truncate(fd, keep, name)
    fileio.write_zeros(fd, start, min(end, keep), name)
