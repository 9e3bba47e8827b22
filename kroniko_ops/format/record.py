"""The record: one event as one line of a log segment or a pack block (the only module that
builds or slices record bytes; ``docs/FORMAT.md`` gives every byte).

A record is a 245-byte ASCII header, the event's canonical JSON, and ``\\n``::

    000000000042 order-1-a<padded to 64> <sha256 of the JSON> <chain> C 00000123 1796000000000000 1a2b3c4d {...}

Fields, separated by one space: position (12 digits), event id (left-aligned, space-padded to
64), SHA-256 of the stored JSON bytes (64 hex), chain hash ``sha256(previous chain || event
hash)`` over the raw 32-byte digests (64 hex), commit mark (``C`` on the last record of a batch,
``-`` otherwise), the JSON's length (8 digits), the batch's commit time (microseconds since the
Unix epoch, UTC, 16 digits), CRC-32 of the header bytes before it (8 hex). Canonical JSON never
holds a raw newline (orjson escapes control characters), so a segment can be split into records
on ``\\n`` and read with ``cut -c246-`` and ``jq``.

Records written before commit times were recorded (header version 1) have a 228-byte header
without the time field; they stay readable, and a record tells its own version: byte 227 is the
space before the JSON in version 1 and a digit of the commit time in version 2.
"""

from __future__ import annotations

import binascii
import hashlib
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter

HEADER = 245  # the header this version writes (version 2, with the commit time)
HEADER_V1 = 228  # records written before commit times were recorded
GENESIS = bytes(32)
COMMIT, MORE = ord("C"), ord("-")
_CRC_END = 236  # the CRC covers the header up to (not including) its own field
_CRC_END_V1 = 219
_V1_MARK = 227  # a space in version 1 (before the JSON), a digit of the commit time in version 2
MAX_BODY = 99_999_999
MAX_TIME_US = 9_999_999_999_999_999  # 16 digits: until the year 2286
_MARK = itemgetter(208)  # a record's commit mark
_BODY = itemgetter(slice(HEADER, None))  # a version 2 record's JSON


class RecordError(ValueError):
    """Bytes that are not a valid record; ``torn`` when they could be a record cut short."""

    def __init__(self, message: str, torn: bool = False) -> None:
        super().__init__(message)
        self.torn = torn


@dataclass(frozen=True, slots=True)
class Record:
    """One parsed record. ``offset`` is where it starts in its file, ``size`` its length with
    the newline; ``body`` is the stored JSON, sliced, never re-encoded."""

    position: int
    event_id: str
    event_hash: bytes
    chain: bytes
    commit: bool
    body: bytes
    offset: int
    size: int
    time: int = 0  # the batch's commit time, microseconds since the epoch; 0 in version 1 records

    @property
    def end(self) -> int:
        """The offset just after this record's newline."""
        return self.offset + self.size


def chain_of(previous: bytes, event_hash: bytes) -> bytes:
    """The chain hash after ``previous`` for an event whose SHA-256 is ``event_hash``."""
    return hashlib.sha256(previous + event_hash).digest()


def encode(first: int, previous: bytes, items: Sequence[tuple[str, bytes]],
           hashes: Sequence[bytes] | None = None, time_us: int = 0) -> tuple[bytes, list[int], bytes]:
    """The records of one batch: ``items`` are ``(event id, canonical JSON)`` and get positions
    ``first``, ``first + 1``...; the last carries the commit mark; every record carries the
    batch's commit time ``time_us`` (microseconds since the Unix epoch).

    Returns the bytes (written with one ``write()``), each record's size, and the last chain.
    ``hashes`` may pass the bodies' SHA-256 digests already computed.
    """
    if not 0 <= time_us <= MAX_TIME_US:
        raise ValueError(f"commit time {time_us} is outside 0..{MAX_TIME_US} microseconds")
    out: list[bytes] = []
    add = out.append
    sizes: list[int] = []
    chain = previous
    last = len(items) - 1
    stamp = b"%016d" % time_us
    sha, hexlify, crc = hashlib.sha256, binascii.hexlify, zlib.crc32
    for i, (event_id, body) in enumerate(items):
        digest = hashes[i] if hashes is not None else sha(body).digest()
        chain = sha(chain + digest).digest()
        head = b"%012d %-64s %s %s %c %08d %s " % (
            first + i, event_id.encode(), hexlify(digest), hexlify(chain), COMMIT if i == last else MORE,
            len(body), stamp)
        add(head)
        add(b"%08x " % crc(head))
        add(body)
        add(b"\n")
        sizes.append(HEADER + len(body) + 1)
    return b"".join(out), sizes, chain


def parse_at(buf: bytes | memoryview, offset: int = 0) -> Record:
    """The record starting at ``offset`` of ``buf``; raises :class:`RecordError` (``torn`` when
    ``buf`` simply ends before the record does)."""
    if len(buf) < offset + HEADER_V1:
        raise RecordError(f"record at byte {offset} is cut short in its header", torn=True)
    size = HEADER_V1 if buf[offset + _V1_MARK] == 32 else HEADER
    end_header = offset + size
    if len(buf) < end_header:
        raise RecordError(f"record at byte {offset} is cut short in its header", torn=True)
    head = bytes(buf[offset:end_header])
    if not _header_ok(head):
        raise RecordError(f"record at byte {offset} fails its header checksum")
    length = int(head[210:218])
    end = end_header + length + 1
    if len(buf) < end:
        raise RecordError(f"record at byte {offset} is cut short in its event bytes", torn=True)
    if buf[end - 1] != 10:
        raise RecordError(f"record at byte {offset} does not end in a newline")
    return Record(
        position=int(head[:12]),
        event_id=head[13:77].rstrip().decode("ascii"),
        event_hash=bytes.fromhex(head[78:142].decode("ascii")),
        chain=bytes.fromhex(head[143:207].decode("ascii")),
        commit=head[208] == COMMIT,
        body=bytes(buf[end_header:end - 1]),
        offset=offset,
        size=end - offset,
        time=int(head[219:235]) if size == HEADER else 0,
    )


def walk(buf: bytes, offset: int, position: int) -> tuple[list[tuple[int, int, int]], int, bool]:
    """The whole records of ``buf`` from ``offset`` on that hold positions ``position + 1``,
    ``position + 2``... with a valid header checksum, framing only (no hash, no chain, no
    objects): ``[(start, end, header size)]``, the offset where the walk stopped, and whether
    it stopped because ``buf`` ends inside a record (read more and walk again from there)."""
    out: list[tuple[int, int, int]] = []
    n = len(buf)
    crc = zlib.crc32
    while offset < n:
        if n < offset + HEADER:
            if n < offset + HEADER_V1 or buf[offset + _V1_MARK] != 32:
                return out, offset, buf[offset] != 0
        size = HEADER_V1 if buf[offset + _V1_MARK] == 32 else HEADER
        cut = _CRC_END_V1 if size == HEADER_V1 else _CRC_END
        head = buf[offset:offset + size]
        if head[cut:cut + 8] != b"%08x" % crc(head[:cut]) or head[size - 1] != 32:
            return out, offset, False
        try:
            if int(head[:12]) != position + 1:
                return out, offset, False
            end = offset + size + int(head[210:218]) + 1
        except ValueError:
            return out, offset, False
        if end > n:
            return out, offset, True
        if buf[end - 1] != 10:
            return out, offset, False
        out.append((offset, end, size))
        offset, position = end, position + 1
    return out, offset, False


def chain_and_time(buf: bytes, start: int, size: int) -> tuple[bytes, int] | None:
    """The chain hash and commit time of the record at ``start`` of ``buf`` whose header
    (``size`` bytes) :func:`walk` has already checked; None when either field is not as
    :func:`encode` writes it (hex digits, 16 decimal digits)."""
    try:
        chain = bytes.fromhex(buf[start + 143:start + 207].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    if size != HEADER:
        return chain, 0
    stamp = buf[start + 219:start + 235]
    return (chain, int(stamp)) if stamp.isdigit() and buf[start + 235] == 32 else None


def is_commit_point(head: bytes, position: int, chain: bytes, size: int) -> bool:
    """Whether ``head`` (at least the header of one record) starts the record at ``position``
    whose chain hash is ``chain``, ``size`` bytes long with its newline, the last of its batch.
    Equal chains mean equal histories: a writer that finds its remembered tail so knows the log
    up to there is what it remembers, whatever was cut and rewritten meanwhile."""
    head = bytes(head[:header_size(head)])
    if not _header_ok(head):
        return False
    try:
        return (int(head[:12]) == position and head[208] == COMMIT and head[143:207] == binascii.hexlify(chain)
                and len(head) + int(head[210:218]) + 1 == size)
    except ValueError:
        return False


def _header_ok(head: bytes) -> bool:
    """Whether a raw header (either version, by its length) carries a valid checksum."""
    # The field must be exactly what encode() writes: int(x, 16) would also take "ABCD", " abc"
    # or "0_ab", so a changed byte in the field itself would go unnoticed.
    if len(head) == HEADER:
        return (head[_CRC_END:_CRC_END + 8] == b"%08x" % zlib.crc32(head[:_CRC_END]) and head[244] == 32
                and head[235] == 32 and head[219:235].isdigit())
    return (len(head) == HEADER_V1 and head[_V1_MARK] == 32
            and head[_CRC_END_V1:_CRC_END_V1 + 8] == b"%08x" % zlib.crc32(head[:_CRC_END_V1]))


def header_size(line: bytes | memoryview) -> int:
    """The header length of the record that ``line`` starts with (its version's)."""
    return HEADER_V1 if len(line) > _V1_MARK and line[_V1_MARK] == 32 else HEADER


def iter_records(buf: bytes | memoryview, offset: int = 0, base: int = 0) -> Iterator[Record]:
    """Every record of ``buf`` from ``offset`` on, in order; raises :class:`RecordError` at the
    first bytes that are not one. ``base`` is added to each record's offset (``buf``'s place in
    its file)."""
    n = len(buf)
    while offset < n:
        rec = parse_at(buf, offset)
        if base:
            rec = Record(rec.position, rec.event_id, rec.event_hash, rec.chain, rec.commit,
                         rec.body, rec.offset + base, rec.size, rec.time)
        yield rec
        offset += rec.size


def body_hash_ok(rec: Record) -> bool:
    """Whether the stored bytes match the SHA-256 the header carries."""
    return hashlib.sha256(rec.body).digest() == rec.event_hash


def bodies(buf: bytes) -> list[bytes]:
    """The JSON bodies of a run of complete, already verified records, by splitting (fast path
    for bulk reads; the caller knows the bytes are whole records)."""
    lines = buf.split(b"\n")
    lines.pop()  # after the last newline
    return _bodies(lines)


def bodies_commits(buf: bytes) -> tuple[list[bytes], list[tuple[int, int, bool]]]:
    """:func:`bodies` and :func:`commits` of one run, split once."""
    lines = buf.split(b"\n")
    lines.pop()
    return _bodies(lines), _commits(lines)


def _bodies(lines: list[bytes]) -> list[bytes]:
    if lines and lines[0][_V1_MARK] != 32 and lines[-1][_V1_MARK] != 32:
        # Version 1 records only ever come before version 2 ones: both ends new means all new.
        return list(map(_BODY, lines))
    return [line[HEADER_V1:] if line[_V1_MARK] == 32 else line[HEADER:] for line in lines]


def commits(buf: bytes) -> list[tuple[int, int, bool]]:
    """The batches of a run of complete, verified records, as ``(index of the group's last
    record in the run, commit time in microseconds, whether that record ends its batch)``: one
    group per batch, and a last one without a commit mark when the run ends inside a batch.
    Version 1 records have no commit time (0)."""
    lines = buf.split(b"\n")
    lines.pop()
    return _commits(lines)


def _commits(lines: list[bytes]) -> list[tuple[int, int, bool]]:
    # The marks of every line gathered in C; then one step per batch, not per record.
    marks = bytes(map(_MARK, lines))
    out: list[tuple[int, int, bool]] = []
    i = marks.find(b"C")
    while i >= 0:
        line = lines[i]
        out.append((i, 0 if line[_V1_MARK] == 32 else int(line[219:235]), True))
        i = marks.find(b"C", i + 1)
    last = len(lines) - 1
    if last >= 0 and (not out or out[-1][0] != last):
        line = lines[last]
        out.append((last, 0 if line[_V1_MARK] == 32 else int(line[219:235]), False))
    return out


def split(buf: bytes) -> tuple[list[bytes], list[bytes], list[tuple[int, int, bool]]]:
    """The ids (the ASCII bytes of each header's id field), JSON bodies and batches (as
    :func:`commits`) of a run of complete, verified records."""
    lines = buf.split(b"\n")
    lines.pop()
    ids = [line[13:77].rstrip() for line in lines]
    return ids, _bodies(lines), _commits(lines)


def headers_only(buf: bytes) -> list[bytes]:
    """The raw headers of a run of complete records (for checks that need no JSON)."""
    lines = buf.split(b"\n")
    lines.pop()
    return [line[:header_size(line)] for line in lines]


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of a raw header (see :func:`headers_only`), parsed without its body."""

    position: int
    event_id: str
    event_hash: bytes
    chain: bytes
    commit: bool
    time: int = 0


def parse_header(head: bytes) -> Header:
    """Parse a raw header (245 bytes, or 228 for version 1); raises :class:`RecordError` when it
    fails its checksum."""
    if not _header_ok(head):
        raise RecordError("a record header fails its checksum")
    return Header(int(head[:12]), head[13:77].rstrip().decode("ascii"),
                  bytes.fromhex(head[78:142].decode("ascii")), bytes.fromhex(head[143:207].decode("ascii")),
                  head[208] == COMMIT, int(head[219:235]) if len(head) == HEADER else 0)


def leading_header(buf: bytes) -> bytes:
    """The raw header at the start of ``buf`` (which holds at least one whole header)."""
    return buf[:header_size(buf)]


def check_run(buf: bytes, first: int, chain: bytes | None) -> tuple[list[str], list[bytes], bytes | None,
                                                                 list[tuple[int, str]]]:
    """Check in bulk a run of whole records meant to hold positions ``first, first + 1, ...``
    (fsck's full walk): header checksum and framing, position, SHA-256 of each body and, from
    ``chain`` (the chain before ``first``; None: trust the first record's own), each chain hash.

    Returns one id and one body per line of ``buf`` (``""`` and ``b""`` for a line whose header
    fails), the chain after the run, and the problems as ``(position, kind)`` with kind one of
    ``"header"``, ``"position"``, ``"hash"``, ``"chain"``. A caller that gets fewer lines than
    positions falls back to :func:`parse_at` record by record (a damaged newline).
    """
    lines = buf.split(b"\n")
    if lines.pop():
        return [], [], None, [(first, "header")]
    ids: list[str] = []
    out: list[bytes] = []
    problems: list[tuple[int, str]] = []
    sha, crc, hexlify, unhex = hashlib.sha256, zlib.crc32, binascii.hexlify, bytes.fromhex
    add_id, add_body = ids.append, out.append
    pos = first
    for line in lines:
        # The header's version and checks inlined (header_size, _header_ok): a call per record
        # is a tenth of a full fsck's time.
        try:
            if len(line) > _V1_MARK and line[_V1_MARK] == 32:
                size = HEADER_V1
                ok = line[_CRC_END_V1:_CRC_END_V1 + 8] == b"%08x" % crc(line[:_CRC_END_V1])
            else:
                size = HEADER
                ok = (line[_CRC_END:_CRC_END + 8] == b"%08x" % crc(line[:_CRC_END]) and line[244] == 32
                      and line[235] == 32 and line[219:235].isdigit())
            ok = ok and int(line[210:218]) == len(line) - size
        except (ValueError, IndexError):
            ok = False
        if not ok:
            problems.append((pos, "header"))
            add_id("")
            add_body(b"")
            chain, pos = None, pos + 1
            continue
        if int(line[:12]) != pos:
            problems.append((pos, "position"))
            chain = None
        body = line[size:]
        digest = sha(body).digest()
        if hexlify(digest) != line[78:142]:
            problems.append((pos, "hash"))
            digest = unhex(line[78:142].decode("ascii"))
        if chain is not None:
            chain = sha(chain + digest).digest()
            if hexlify(chain) != line[143:207]:
                problems.append((pos, "chain"))
                chain = unhex(line[143:207].decode("ascii"))
        else:
            chain = unhex(line[143:207].decode("ascii"))
        add_id(line[13:77].rstrip().decode("ascii"))
        add_body(body)
        pos += 1
    return ids, out, chain, problems


def rebuild(first: int, previous: bytes, ids: Sequence[str], bodies: Sequence[bytes],
            commits: Sequence[tuple[int, int, bool]], hashes: Sequence[bytes] | None = None) -> tuple[bytes, bytes]:
    """The raw records of events ``first, first + 1, ...`` from what a dense pack keeps (ids,
    stored bytes, batches as :func:`commits` gives them): the records exactly as they were in
    their segment, with a version 1 header where the commit time is 0 (unknown). Returns them
    and the chain after the last. ``hashes`` may pass the bodies' SHA-256 digests."""
    sha = hashlib.sha256
    out: list[bytes] = []
    chain = previous
    k = 0
    for last, stamp, ends in commits:
        tail = b" %016d " % stamp if stamp else b" "
        for i in range(k, last + 1):
            body = bodies[i]
            digest = hashes[i] if hashes is not None else sha(body).digest()
            chain = sha(chain + digest).digest()
            head = b"%012d %-64s %s %s %c %08d%s" % (
                first + i, ids[i].encode(), digest.hex().encode(), chain.hex().encode(),
                COMMIT if ends and i == last else MORE, len(body), tail)
            out.append(b"%s%08x %s\n" % (head, zlib.crc32(head), body))
        k = last + 1
    return b"".join(out), chain
