"""Log checks, part two: every committed line's framing, position and chain (:class:`LogScanner`).

Lines are read in chunks; a chunk is first checked as a whole with C-level operations, and only
a chunk that fails is walked line by line to say exactly which line is wrong and how. Runs of
bad lines, or of lines shifted by the same offset, give one finding each.
"""

from __future__ import annotations

import array
import hashlib
import os
import sys
import zlib
from collections.abc import Iterable, Iterator

from ..log import LINE_LEN, ZERO_CHAIN
from .checks_common import LOG_PATH, MASK64, Context, Digest

CHUNK_LINES = 4096
MAX_BAD_POSITIONS = 100_000
_ID_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
_HEX = b"0123456789abcdef"


def _bulk_lines(raw: bytes, view: memoryview, first: int, n: int) -> tuple[list[str], list[bytes]] | None:
    """The event ids and the six fields of ``n`` whole lines starting at line ``first`` when
    every one of them is well formed (checksum, separators, position, id and hex fields); None
    when any is not.

    Works on the whole chunk at once: the separators by step slices, the fields by one
    ``split()`` (six tokens a line), the checksums by one ``crc32`` per line compared with all CRC
    fields decoded in one ``fromhex``.
    """
    L = LINE_LEN
    spaces = b" " * n
    if (raw[12::L] != spaces or raw[77::L] != spaces or raw[142::L] != spaces or raw[207::L] != spaces
            or raw[209::L] != spaces or raw[218::L] != b"\n" * n):
        return None
    tokens = raw.split()
    if len(tokens) != 6 * n:
        return None
    crc_text = b"".join(tokens[5::6])
    hexes = b"".join(tokens[2::6] + tokens[3::6])
    positions = b"".join(tokens[0::6])
    ids = tokens[1::6]
    joined = b"\n".join(ids)
    if (len(crc_text) != 8 * n or crc_text.translate(None, _HEX) or len(hexes) != 128 * n
            or hexes.translate(None, _HEX) or b"".join(tokens[4::6]).translate(None, b"C-")
            or len(positions) != 12 * n or not positions.isdigit()
            or joined.translate(None, _ID_CHARS + b"\n") or len(joined) > 65 * n):
        return None
    if list(map(int, tokens[0::6])) != list(range(first, first + n)):
        return None
    crcs = array.array("I", map(zlib.crc32, [view[o : o + 209] for o in range(0, n * L, L)]))
    if sys.byteorder == "little":
        crcs.byteswap()
    if crcs.tobytes() != bytes.fromhex(crc_text.decode()):
        return None
    return joined.decode().split("\n"), tokens


def _unskipped(first: int, n: int, skip: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts ``[a, b)`` (offsets in the chunk of lines ``first..first+n-1``) outside ``skip``."""
    out, at = [], first
    end = first + n - 1
    for lo, hi in skip:
        if hi < at or lo > end:
            continue
        if lo > at:
            out.append((at - first, lo - first))
        at = max(at, hi + 1)
    if at <= end:
        out.append((at - first, n))
    return out


class LogScanner:
    """Walks lines ``1..last`` of a snapshot; reports framing (``log-bad-line``), position and
    (when iterated, chain) problems. Iterating yields ``(line number, event id, event hash as
    raw bytes)`` of every line that can be trusted; :meth:`ids` is the quick walk.

    ``bad`` collects the line numbers whose events cannot be known (capped; ``bad_overflow``
    says when it overflowed). ``chain_at_head`` is the chain computed (or, without ``chain``,
    read) at line ``head``.
    """

    def __init__(self, ctx: Context, fd: int, last: int, head: int, chain: bool) -> None:
        self.ctx, self.fd, self.last, self.head, self.chain = ctx, fd, last, head, chain
        self.bad: set[int] = set()
        self.bad_overflow = False
        self.unreadable = 0  # lines whose event id cannot be read
        self.chain_at_head = ZERO_CHAIN
        self._bad_run: list[int] = []
        self._pos_run: list[int] = []  # [first line, last line, offset]

    def mark_bad(self, lineno: int) -> None:
        """Remember that the event of line ``lineno`` cannot be trusted (its index lines are
        then left out of the index comparison)."""
        if len(self.bad) < MAX_BAD_POSITIONS:
            self.bad.add(lineno)
        else:
            self.bad_overflow = True

    def _bad_line(self, lineno: int, why: str) -> None:
        self.mark_bad(lineno)
        self.unreadable += 1
        run = self._bad_run
        if run and run[1] == lineno - 1 and run[2] == why:
            run[1] = lineno
            return
        self._flush_bad()
        self._bad_run = [lineno, lineno, why]

    def _flush_bad(self) -> None:
        if self._bad_run:
            a, b, why = self._bad_run
            where = f"line {a}" if a == b else f"lines {a}..{b}"
            self._bad_run = []
            self.ctx.add("log-bad-line", "error", LOG_PATH,
                         f"{where}: {why}; damage in the middle of the log is never repaired "
                         "automatically: restore the store from a backup", a)

    def _position(self, lineno: int, pos: int) -> None:
        self.mark_bad(lineno)
        run, off = self._pos_run, pos - lineno
        if run and run[1] == lineno - 1 and run[2] == off:
            run[1] = lineno
            return
        self._flush_pos()
        self._pos_run = [lineno, lineno, off]

    def _flush_pos(self) -> None:
        if self._pos_run:
            a, b, off = self._pos_run
            where = f"line {a} carries position {a + off}" if a == b else \
                f"lines {a}..{b} carry positions {a + off}..{b + off}"
            self._pos_run = []
            self.ctx.add("log-position-mismatch", "error", LOG_PATH,
                         f"{where}: lines were duplicated, lost or moved; restore from a backup", a)

    def _chunks(self) -> Iterator[tuple[int, bytes, memoryview, int]]:
        """``(first line number, raw bytes, view, line count)`` of each chunk of the snapshot."""
        lineno = 0
        while lineno < self.last:
            count = min(CHUNK_LINES, self.last - lineno)
            raw = os.pread(self.fd, count * LINE_LEN, lineno * LINE_LEN)
            if len(raw) < count * LINE_LEN:
                count = len(raw) // LINE_LEN
                if count == 0:
                    self._bad_line(lineno + 1, "the log ended early (truncated while checking?)")
                    return
            yield lineno + 1, raw, memoryview(raw), count
            lineno += count

    def _valid(self, raw: bytes, view: memoryview, o: int, lineno: int) -> bytes | None:
        """The event id of the line at offset ``o`` if its framing, checksum and fields are
        right (reporting its position when it is not its line number); None otherwise."""
        # The engine writes the CRC as 8 lowercase hex digits: accept nothing looser.
        if b"%08x" % zlib.crc32(view[o : o + 209]) != raw[o + 210 : o + 218] or raw[o + 209] != 32 \
                or raw[o + 218] != 10:
            self._bad_line(lineno, "the line fails its checksum")
            return None
        eid = raw[o + 13 : o + 77].rstrip(b" ")
        if (raw[o + 12] != 32 or raw[o + 77] != 32 or raw[o + 142] != 32 or raw[o + 207] != 32
                or raw[o + 208] not in b"C-" or not raw[o : o + 12].isdigit() or not eid
                or eid.translate(None, _ID_CHARS) or raw[o + 78 : o + 207].translate(None, _HEX) != b" "):
            self._bad_line(lineno, "the line's checksum is right but its fields are malformed")
            return None
        if self._bad_run:
            self._flush_bad()
        if raw[o : o + 12] != b"%012d" % lineno:
            self._position(lineno, int(raw[o : o + 12]))
        elif self._pos_run:
            self._flush_pos()
        return eid

    def _one_by_one(self, first: int, raw: bytes, view: memoryview, n: int
                    ) -> Iterator[tuple[int, str | None, bytes, bytes]]:
        """Lines of a chunk that failed the bulk check, each checked on its own (id None when bad)."""
        for k in range(n):
            o = k * LINE_LEN
            eid = self._valid(raw, view, o, first + k)
            if eid is None:
                yield first + k, None, b"", b""
            else:
                yield (first + k, eid.decode(), bytes.fromhex(raw[o + 78 : o + 142].decode()),
                       bytes.fromhex(raw[o + 143 : o + 207].decode()))

    def ids(self, digest: Digest, skip: list[tuple[int, int]] | None = None) -> None:
        """The quick walk: check every line's structure and add its event id to ``digest``,
        except for lines in the sorted, disjoint ``skip`` ranges (packed positions).

        A whole chunk is checked at once with C-level operations (step slices for the
        separators, one ``split`` for the fields, one ``fromhex`` for all CRC fields); only a
        chunk that fails goes line by line to say exactly what is wrong.
        """
        total, count = digest.total, digest.count
        skip = skip or []
        for first, raw, view, n in self._chunks():
            keep = _unskipped(first, n, skip)
            if first <= self.head < first + n:
                o = (self.head - first) * LINE_LEN
                self.chain_at_head = raw[o + 143 : o + 207].decode("ascii", "replace")
            bulk = _bulk_lines(raw, view, first, n)
            if bulk is not None:
                names = bulk[0]
                if self._bad_run:
                    self._flush_bad()
                if self._pos_run:
                    self._flush_pos()
                for a, b in keep:
                    total += sum(map(hash, names[a:b]))
                    count += b - a
                continue
            for k in range(n):
                o = k * LINE_LEN
                eid = self._valid(raw, view, o, first + k)
                if eid is not None and any(a <= k < b for a, b in keep):
                    total += hash(eid.decode())
                    count += 1
        digest.total, digest.count = total & MASK64, count
        self._flush_bad()
        self._flush_pos()

    def __iter__(self) -> Iterator[tuple[int, str, bytes]]:
        """The full walk, with the chain: yields ``(line, event id, event hash (raw bytes))`` of
        every line that can be trusted."""
        prev_stored = prev_computed = bytes(32)
        known = True  # whether the previous line's chain can be checked against
        sha256 = hashlib.sha256
        for first, raw, view, n in self._chunks():
            bulk = _bulk_lines(raw, view, first, n)
            if bulk is not None:
                if self._bad_run:
                    self._flush_bad()
                if self._pos_run:
                    self._flush_pos()
                ids, tokens = bulk
                hashes = bytes.fromhex(b"".join(tokens[2::6]).decode())
                chains = bytes.fromhex(b"".join(tokens[3::6]).decode())
                lines: Iterable[tuple[int, str | None, bytes, bytes]] = (
                    (first + k, ids[k], hashes[32 * k : 32 * k + 32], chains[32 * k : 32 * k + 32]) for k in range(n))
            else:
                lines = self._one_by_one(first, raw, view, n)
            for lineno, eid, ehash, stored in lines:
                if eid is None:
                    known = False
                    continue
                if known and sha256(prev_stored + ehash).digest() != stored:
                    computed = sha256(prev_computed + ehash).digest()
                    # Checked against both the stored and the recomputed previous chain, so one
                    # damaged chain field or one duplicated line gives one finding, not two.
                    if computed != stored:
                        self.mark_bad(lineno)
                        self.ctx.add("chain-mismatch", "error", LOG_PATH,
                                     f"line {lineno}'s chain hash does not follow from the line before it: "
                                     "the log was edited; restore from a backup", lineno)
                    prev_computed = computed
                else:
                    prev_computed = stored
                prev_stored = stored
                if lineno == self.head:
                    self.chain_at_head = prev_computed.hex()
                known = True
                yield lineno, eid, ehash
        self._flush_bad()
        self._flush_pos()
