"""The record: one event as one line of a log segment or a pack block (the only module that
builds or slices record bytes; ``docs/FORMAT.md`` gives every byte).

A record is a 228-byte ASCII header, the event's canonical JSON, and ``\\n``::

    000000000042 order-1-a<padded to 64> <sha256 of the JSON> <chain> C 00000123 1a2b3c4d {"data":...}

Fields, separated by one space: position (12 digits), event id (left-aligned, space-padded to
64), SHA-256 of the stored JSON bytes (64 hex), chain hash ``sha256(previous chain || event
hash)`` over the raw 32-byte digests (64 hex), commit mark (``C`` on the last record of a batch,
``-`` otherwise), the JSON's length (8 digits), CRC-32 of the header bytes before it (8 hex).
Canonical JSON never holds a raw newline (orjson escapes control characters), so a segment can
be split into records on ``\\n`` and read with ``cut -c229-`` and ``jq``.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

HEADER = 228
GENESIS = bytes(32)
COMMIT, MORE = ord("C"), ord("-")
_CRC_END = 219  # the CRC covers the header up to (not including) its own field
MAX_BODY = 99_999_999


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

    @property
    def end(self) -> int:
        """The offset just after this record's newline."""
        return self.offset + self.size


def chain_of(previous: bytes, event_hash: bytes) -> bytes:
    """The chain hash after ``previous`` for an event whose SHA-256 is ``event_hash``."""
    return hashlib.sha256(previous + event_hash).digest()


def encode(first: int, previous: bytes, items: Sequence[tuple[str, bytes]],
           hashes: Sequence[bytes] | None = None) -> tuple[bytes, list[int], bytes]:
    """The records of one batch: ``items`` are ``(event id, canonical JSON)`` and get positions
    ``first``, ``first + 1``...; the last carries the commit mark.

    Returns the bytes (written with one ``write()``), each record's size, and the last chain.
    ``hashes`` may pass the bodies' SHA-256 digests already computed.
    """
    out: list[bytes] = []
    sizes: list[int] = []
    chain = previous
    last = len(items) - 1
    for i, (event_id, body) in enumerate(items):
        digest = hashes[i] if hashes is not None else hashlib.sha256(body).digest()
        chain = hashlib.sha256(chain + digest).digest()
        head = b"%012d %-64s %s %s %c %08d " % (
            first + i, event_id.encode(), digest.hex().encode(), chain.hex().encode(),
            COMMIT if i == last else MORE, len(body))
        rec = b"%s%08x %s\n" % (head, zlib.crc32(head), body)
        out.append(rec)
        sizes.append(len(rec))
    return b"".join(out), sizes, chain


def parse_at(buf: bytes | memoryview, offset: int = 0) -> Record:
    """The record starting at ``offset`` of ``buf``; raises :class:`RecordError` (``torn`` when
    ``buf`` simply ends before the record does)."""
    end_header = offset + HEADER
    if len(buf) < end_header:
        raise RecordError(f"record at byte {offset} is cut short in its header", torn=True)
    head = bytes(buf[offset:end_header])
    # The field must be exactly what encode() writes: int(x, 16) would also take "ABCD", " abc"
    # or "0_ab", so a changed byte in the field itself would go unnoticed.
    if head[_CRC_END:_CRC_END + 8] != b"%08x" % zlib.crc32(head[:_CRC_END]) or head[227] != 32:
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
    )


def iter_records(buf: bytes | memoryview, offset: int = 0, base: int = 0) -> Iterator[Record]:
    """Every record of ``buf`` from ``offset`` on, in order; raises :class:`RecordError` at the
    first bytes that are not one. ``base`` is added to each record's offset (``buf``'s place in
    its file)."""
    n = len(buf)
    while offset < n:
        rec = parse_at(buf, offset)
        if base:
            rec = Record(rec.position, rec.event_id, rec.event_hash, rec.chain, rec.commit,
                         rec.body, rec.offset + base, rec.size)
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
    return [line[HEADER:] for line in lines]


def headers_only(buf: bytes) -> list[bytes]:
    """The raw headers of a run of complete records (for checks that need no JSON)."""
    lines = buf.split(b"\n")
    lines.pop()
    return [line[:HEADER] for line in lines]


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of a raw header (see :func:`headers_only`), parsed without its body."""

    position: int
    event_id: str
    event_hash: bytes
    chain: bytes
    commit: bool


def parse_header(head: bytes) -> Header:
    """Parse a raw 228-byte header; raises :class:`RecordError` when it fails its checksum."""
    if len(head) != HEADER or head[_CRC_END:_CRC_END + 8] != b"%08x" % zlib.crc32(head[:_CRC_END]):
        raise RecordError("a record header fails its checksum")
    return Header(int(head[:12]), head[13:77].rstrip().decode("ascii"),
                  bytes.fromhex(head[78:142].decode("ascii")), bytes.fromhex(head[143:207].decode("ascii")),
                  head[208] == COMMIT)


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
    sha, crc = hashlib.sha256, zlib.crc32
    pos = first
    for line in lines:
        head = line[:HEADER]
        try:
            ok = (head[_CRC_END:_CRC_END + 8] == b"%08x" % crc(head[:_CRC_END]) and head[227] == 32
                  and int(head[210:218]) == len(line) - HEADER)
        except (ValueError, IndexError):
            ok = False
        if not ok:
            problems.append((pos, "header"))
            ids.append("")
            out.append(b"")
            chain, pos = None, pos + 1
            continue
        if int(head[:12]) != pos:
            problems.append((pos, "position"))
            chain = None
        body = line[HEADER:]
        digest = sha(body).digest()
        if digest.hex().encode() != head[78:142]:
            problems.append((pos, "hash"))
            digest = bytes.fromhex(head[78:142].decode("ascii"))
        if chain is not None:
            chain = sha(chain + digest).digest()
            if chain.hex().encode() != head[143:207]:
                problems.append((pos, "chain"))
                chain = bytes.fromhex(head[143:207].decode("ascii"))
        else:
            chain = bytes.fromhex(head[143:207].decode("ascii"))
        ids.append(head[13:77].rstrip().decode("ascii"))
        out.append(body)
        pos += 1
    return ids, out, chain, problems
