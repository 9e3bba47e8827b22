"""A pack's block table (the part of the pack format in :mod:`.pack` that lists its blocks):
one :class:`Block` per compressed block, stored column by column so that a reader loads each
column with one call. :mod:`.packwrite` encodes it, :mod:`.pack` decodes it; nothing else does."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_COLUMN_CODES = ("Q", "I", "Q", "I", "I", "I")  # first, count, offset, clen, ulen, crc: u64 or u32
assert [array(c).itemsize for c in _COLUMN_CODES] == [8, 4, 8, 4, 4, 4]


@dataclass(frozen=True, slots=True)
class Block:
    """One entry of the block table (``chain``: after its last event; empty in version 3)."""

    first: int
    count: int
    offset: int
    clen: int
    ulen: int
    crc: int
    chain: bytes = b""

    @property
    def last(self) -> int:
        """Its last position."""
        return self.first + self.count - 1


class Table(Sequence[Block]):
    """A pack's block table, kept as its columns (first, count, offset, clen, ulen, crc; and the
    chains, 32 bytes each, in version 4) and handed out as :class:`Block` entries on demand."""

    __slots__ = ("_chains", "_columns")

    def __init__(self, columns: Sequence[Sequence[int]], chains: bytes = b"") -> None:
        self._columns, self._chains = columns, chains

    def __len__(self) -> int:
        return len(self._columns[0])

    def chain(self, i: int) -> bytes:
        """The chain after block ``i``'s last event (empty in version 3)."""
        return self._chains[32 * i:32 * i + 32]

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        c = self._columns
        return Block(c[0][i], c[1][i], c[2][i], c[3][i], c[4][i], c[5][i], self.chain(i))

    def __iter__(self) -> Iterator[Block]:
        return map(Block, *self._columns, map(self.chain, range(len(self))))


def encode_table(before: bytes, blocks: Sequence[Block]) -> bytes:
    """A version 4 block table: the chain before the first event, then the entries column by
    column (all firsts, all counts, ... all chains), so that a reader loads each column in one call."""
    out = [before]
    for name, code in zip(("first", "count", "offset", "clen", "ulen", "crc"), _COLUMN_CODES, strict=True):
        column = array(code, [getattr(b, name) for b in blocks])
        if sys.byteorder == "little":
            column.byteswap()
        out.append(column.tobytes())
    out.extend(b.chain for b in blocks)
    return b"".join(out)


def decode_columns(table: bytes, n: int) -> tuple[list[array], bytes]:  # type: ignore[type-arg]
    """The columns and the chains of a version 4 table's entries (after its leading chain)."""
    columns, at = [], 0
    for code in _COLUMN_CODES:
        column = array(code)
        size = column.itemsize * n
        column.frombytes(table[at:at + size])
        if sys.byteorder == "little":
            column.byteswap()
        columns.append(column)
        at += size
    return columns, table[at:at + 32 * n]
