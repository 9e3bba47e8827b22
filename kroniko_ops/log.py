"""The commit log ``log/append.log``: fixed-width lines, one per position.

A line (219 bytes) is::

    PPPPPPPPPPPP IIII...(64) EEEE...(64) CCCC...(64) M XXXXXXXX\\n

position (12 digits), event id (left-aligned, space-padded to 64), SHA-256 of the event's
stored bytes, chain hash ``sha256(previous chain || event hash)`` (hex of 32 zero bytes before
position 1), commit mark (``C`` on the last line of a batch, ``-`` otherwise) and the CRC-32 of
everything before it. Line N starts at byte ``(N - 1) * 219``.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

LINE_LEN = 219
ZERO_CHAIN = "0" * 64
_BODY = LINE_LEN - 10  # bytes covered by the CRC (everything before " XXXXXXXX\n")
CHUNK_LINES = 4096


@dataclass(frozen=True, slots=True)
class LogLine:
    """One parsed log line."""

    position: int
    event_id: str
    event_hash: str
    chain: str
    commit: bool


class BadLine(ValueError):
    """A line that does not parse or fails its CRC."""


def event_hash(raw: bytes) -> str:
    """SHA-256 hex of an event's stored bytes."""
    return hashlib.sha256(raw).hexdigest()


def next_chain(previous: str, ehash: str) -> str:
    """The chain hash after ``previous`` for an event whose hash is ``ehash``."""
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(ehash)).hexdigest()


def encode_line(line: LogLine) -> bytes:
    """The 219 bytes of one line."""
    body = (
        f"{line.position:012d} {line.event_id:<64} {line.event_hash} {line.chain} "
        f"{'C' if line.commit else '-'}"
    ).encode("ascii")
    return body + b" %08x\n" % zlib.crc32(body)


def decode_line(raw: bytes) -> LogLine:
    """Parse one line; raises :class:`BadLine`."""
    if len(raw) != LINE_LEN or raw[-1:] != b"\n" or raw[_BODY : _BODY + 1] != b" ":
        raise BadLine("wrong length or framing")
    body = raw[:_BODY]
    try:
        crc = int(raw[_BODY + 1 : -1], 16)
    except ValueError:
        raise BadLine("CRC field is not hex") from None
    if zlib.crc32(body) != crc:
        raise BadLine("CRC mismatch")
    text = body.decode("ascii", "replace")
    pos, ident, ehash, chain, mark = text[:12], text[13:77], text[78:142], text[143:207], text[208]
    if not pos.isdigit() or mark not in "C-":
        raise BadLine("malformed fields")
    return LogLine(int(pos), ident.rstrip(" "), ehash, chain, mark == "C")


def build_lines(head: int, chain: str, items: list[tuple[str, str]]) -> tuple[bytes, list[LogLine]]:
    """Lines for a batch of ``(event_id, event_hash)`` after ``head``; the last carries the mark."""
    out: list[LogLine] = []
    for i, (eid, ehash) in enumerate(items):
        chain = next_chain(chain, ehash)
        out.append(LogLine(head + i + 1, eid, ehash, chain, i == len(items) - 1))
    return b"".join(encode_line(line) for line in out), out


@dataclass(frozen=True)
class Tail:
    """Where the committed log ends, as found by :func:`find_head`."""

    head: int
    chain: str
    committed_bytes: int
    file_size: int

    @property
    def clean(self) -> bool:
        """True when nothing follows the last committed line."""
        return self.committed_bytes == self.file_size


def read_line(fd: int, position: int) -> LogLine:
    """The line at ``position`` (seek, not scan); raises :class:`BadLine`."""
    return decode_line(os.pread(fd, LINE_LEN, (position - 1) * LINE_LEN))


def find_head(fd: int) -> Tail:
    """The last committed position: the last CRC-valid line with a commit mark.

    Whatever follows it (a batch being written right now, or a torn or uncommitted tail left by
    a dead writer) is not part of the store. Walks back from the end, so the cost is the length
    of that tail, not of the log.
    """
    size = os.fstat(fd).st_size
    n = size // LINE_LEN
    while n > 0:
        start = max(0, n - 64)
        raw = os.pread(fd, (n - start) * LINE_LEN, start * LINE_LEN)
        for k in range(n - start - 1, -1, -1):
            try:
                line = decode_line(raw[k * LINE_LEN : (k + 1) * LINE_LEN])
            except BadLine:
                continue
            if line.commit and line.position == start + k + 1:
                return Tail(line.position, line.chain, line.position * LINE_LEN, size)
        n = start
    return Tail(0, ZERO_CHAIN, 0, size)


def iter_lines(fd: int, first: int, last: int, backwards: bool = False) -> Iterator[LogLine]:
    """Lines ``first..last`` inclusive, in order or backwards, read in chunks."""
    if first > last:
        return
    if not backwards:
        pos = first
        while pos <= last:
            count = min(CHUNK_LINES, last - pos + 1)
            raw = os.pread(fd, count * LINE_LEN, (pos - 1) * LINE_LEN)
            for k in range(count):
                yield decode_line(raw[k * LINE_LEN : (k + 1) * LINE_LEN])
            pos += count
    else:
        pos = last
        while pos >= first:
            count = min(CHUNK_LINES, pos - first + 1)
            lo = pos - count + 1
            raw = os.pread(fd, count * LINE_LEN, (lo - 1) * LINE_LEN)
            for k in range(count - 1, -1, -1):
                yield decode_line(raw[k * LINE_LEN : (k + 1) * LINE_LEN])
            pos = lo - 1


# -- what follows the committed head ----------------------------------------------------------
# A writer that died mid-append leaves whole lines without a commit mark or an incomplete last
# line: both are safe to cut. Anything else after the head means committed lines were damaged or
# bytes were inserted mid-log; that must never be cut.

CLEAN, UNCOMMITTED, TORN, DAMAGED = "clean", "uncommitted", "torn", "damaged"


def _looks_committed(chunk: bytes, position: int) -> bool:
    """A full line at ``position`` with its commit mark and framing intact: a committed line
    with a damaged byte, not a torn write."""
    return chunk[208:209] == b"C" and chunk[:12] == b"%012d" % position and chunk[-1:] == b"\n"


def _misaligned_line(raw: bytes) -> int | None:
    """Offset of a checksum-valid line that starts off the 219-byte grid, if any."""
    i = raw.find(b"\n", LINE_LEN - 1)
    while i != -1:
        start = i - (LINE_LEN - 1)
        if start % LINE_LEN:
            try:
                decode_line(raw[start : i + 1])
            except BadLine:
                pass
            else:
                return start
        i = raw.find(b"\n", i + 1)
    return None


def classify_tail(raw: bytes, head: int) -> tuple[str, str]:
    """What the bytes after the committed head are: ``(kind, explanation)``."""
    if not raw:
        return CLEAN, ""
    uncommitted = 0
    garbled: int | None = None
    for k in range(len(raw) // LINE_LEN):
        chunk = raw[k * LINE_LEN : (k + 1) * LINE_LEN]
        expected = head + 1 + k
        try:
            line = decode_line(chunk)
        except BadLine:
            if _looks_committed(chunk, expected):
                return DAMAGED, (f"line {expected} carries a commit mark but fails its checksum: "
                                 "a committed line was damaged")
            garbled = expected if garbled is None else garbled
            continue
        if garbled is not None:
            return DAMAGED, f"line {expected} is valid after garbled line {garbled}"
        if line.position != expected or line.commit:
            return DAMAGED, f"line {expected} carries position {line.position}"
        uncommitted += 1
    off = _misaligned_line(raw)
    if off is not None:
        return DAMAGED, (f"a valid line starts {off} bytes after position {head}, off the 219-byte "
                         "grid: bytes were inserted or removed in the middle of the log")
    if garbled is None and len(raw) % LINE_LEN == 0:
        return UNCOMMITTED, f"{uncommitted} line(s) after position {head} carry no commit mark"
    return TORN, (f"{len(raw)} byte(s) after position {head} ({uncommitted} whole uncommitted "
                  "line(s), then an incomplete or garbled line)")
