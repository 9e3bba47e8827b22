"""The log's files as fsck sees them (:class:`Part`), opened lazily and at most
:data:`MAX_OPEN` at a time (:class:`Pool`): a store may hold more sealed segments and packs than
the process may open files, so the plan keeps only what it learnt of each file (range, size,
last chain hash, first record) and the walk reopens each file when it reads it.

A file may be gone when it is reopened: compaction removes a sealed segment or a pack only after
publishing a pack that holds its records (the same history), so the records are then read from
that pack (:attr:`Part.substitute` names it). Sealed segments and packs never change once named,
so a reopened file holds the bytes the plan saw.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

from ... import fileio
from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt

PACK, SEALED, SCANNED, ACTIVE = "pack", "sealed", "scanned", "active"
MAX_OPEN = 16  # files of the plan open at once in one process (each forked worker has its own)
HOLDER_LISTINGS = 20  # listings of packs/ tried while compactions keep merging the pack just listed


class Pool:
    """The open parts of one plan, least recently used first; opening one more than
    :data:`MAX_OPEN` closes the oldest. ``packs_dir`` is where a removed file's records are
    looked for."""

    def __init__(self, packs_dir: str, limit: int = MAX_OPEN) -> None:
        self.packs_dir = packs_dir
        self.limit = limit
        self.open: OrderedDict[int, Part] = OrderedDict()

    def admit(self, part: Part) -> None:
        """Make room for ``part`` (about to be opened) and count it as the newest."""
        self.open.pop(id(part), None)
        while len(self.open) >= self.limit:
            _, old = self.open.popitem(last=False)
            old.close()
        self.open[id(part)] = part

    def touch(self, part: Part) -> None:
        """``part`` was used: it is the newest."""
        if id(part) in self.open:
            self.open.move_to_end(id(part))

    def forget(self, part: Part) -> None:
        """``part`` was closed."""
        self.open.pop(id(part), None)

    def holder(self, part: Part) -> packfmt.PackReader | None:
        """A pack in ``packs/`` holding every position of ``part`` with the same last chain hash
        (what compaction published before removing the file), opened; None when there is none.
        A candidate gone before it was opened was merged into a bigger pack by another
        compaction, published first: ``packs/`` is then listed again."""
        for _ in range(HOLDER_LISTINGS):
            try:
                names = sorted(os.listdir(self.packs_dir))
            except OSError:
                return None
            moved = False
            for name in names:
                rng = packfmt.parse_name(name)
                if rng is None or not (rng[0] <= part.first and part.last <= rng[1]):
                    continue
                try:
                    reader = packfmt.PackReader(os.path.join(self.packs_dir, name))
                except FileNotFoundError:
                    moved = True
                    continue
                except (packfmt.PackError, OSError):
                    continue
                try:
                    same = (reader.first, reader.last) == rng and reader.record(part.last).chain == part.last_chain
                except (packfmt.PackError, recfmt.RecordError, IndexError, OSError):
                    same = False
                if same:
                    return reader
                reader.close()
            if not moved:
                return None
        return None


@dataclass
class Part:
    """One file holding a range of positions. Once opened (:meth:`open`), ``reader`` is a
    :class:`segfmt.SealedSegment` or a :class:`packfmt.PackReader` (also for a file compaction
    removed meanwhile: the pack holding its records, see :attr:`substitute`); a ``scanned``
    segment (its offset index missing or damaged) is read with :func:`segfmt.scan` through
    ``fd``. A part without a ``pool`` (the active segment) is opened by its maker and stays open
    until :meth:`close`. ``head`` is the first record's event hash and chain hash, read while
    planning (or why it did not read)."""

    kind: str
    first: int
    last: int
    path: str
    last_chain: bytes = recfmt.GENESIS
    reader: object | None = None
    fd: int = -1
    size: int = 0
    pool: Pool | None = None
    head: tuple[bytes, bytes] | Exception | None = None
    substitute: str = field(default="")  # the pack read instead of a file removed meanwhile

    def open(self) -> None:
        """Open the file if it is not open (raises ``OSError``, ``SegmentError``, ``PackError``;
        ``FileNotFoundError`` when it is gone and no pack holds its records)."""
        if self.reader is not None or self.fd >= 0:
            if self.pool is not None:
                self.pool.touch(self)
            return
        if self.pool is None:
            raise ValueError(f"{self.path} is closed")
        self.pool.admit(self)
        try:
            if self.kind == SEALED:
                self.reader = segfmt.SealedSegment(os.path.dirname(self.path), self.first)
            elif self.kind == PACK:
                self.reader = packfmt.PackReader(self.path)
            else:
                self.fd = fileio.open_read(self.path)
        except FileNotFoundError:
            holder = self.pool.holder(self)
            if holder is None:
                self.pool.forget(self)
                raise
            self.reader, self.substitute = holder, holder.path
        except BaseException:
            self.pool.forget(self)
            raise

    def release(self) -> None:
        """Close the file unless its maker keeps it open (the walk is done with it)."""
        if self.pool is not None:
            self.close()

    def close(self) -> None:
        """Release the file."""
        if self.reader is not None:
            self.reader.close()  # type: ignore[attr-defined]
            self.reader = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pool is not None:
            self.pool.forget(self)

    @property
    def in_pack(self) -> bool:
        """Whether the open reader is a pack's (a pack, or the pack holding a removed file)."""
        return isinstance(self.reader, packfmt.PackReader)

    def record_at(self, position: int) -> recfmt.Record:
        """The record at ``position`` of this file (opening it)."""
        self.open()
        if self.kind == ACTIVE:
            return recfmt.parse_at(self.reader.read_run(position, position))  # type: ignore[attr-defined]
        if self.reader is not None:
            return self.reader.record(position)  # type: ignore[attr-defined]
        for rec in segfmt.scan(self.fd, 0, self.size):
            if rec.position == position:
                return rec
        raise recfmt.RecordError(f"position {position} not found in {self.path}")
