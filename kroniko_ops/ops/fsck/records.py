"""The full level's walk over every record, in position order, in bulk: runs of raw records read
through the segment and pack readers, checked by :func:`record.check_run` (a run with any damage
is cut again by :func:`record.iter_records` to name it exactly), bodies parsed by one orjson
call per run. Each record is checked for its header checksum
(``log-bad-line``), position (``log-position-mismatch``), body hash (``event-hash-mismatch``),
chain hash (``chain-mismatch``) and JSON (``event-unreadable``), then handed to the sinks (the
index comparison and the references). A sealed segment's SHA-256 is computed from the same runs;
a pack is also checked with :meth:`PackReader.verify`.

Memory stays flat: one run (about 1 MiB of records) at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any

import orjson

from ... import gcpause
from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt
from .context import Context
from .parts import ACTIVE, SEALED, Part

RUN = 2048  # positions read per run from a segment
Row = tuple[int, str, dict[str, Any]]  # (position, id, event document) of a sound record
Sink = Callable[[list[Row]], None]  # given each run's sound records at once


def _doc_problem(doc: object, eid: str) -> str | None:
    """Why a parsed body is not an event with this id, or None."""
    if type(doc) is not dict:
        return "the JSON is not an object"
    if type(doc.get("type")) is not str or not doc["type"]:
        return "it has no type"
    tags = doc.get("tags")
    if type(tags) is not list or any(type(t) is not str for t in tags):
        return "its tags are not a list of strings"
    if doc.get("id") != eid:
        return f"its id {doc.get('id')!r} differs from the record's {eid!r}"
    if "data" not in doc or "metadata" not in doc:
        return "it lacks data or metadata"
    return None


def _all_sound(docs: list[Any], ids: Sequence[str]) -> bool:
    """Whether every parsed body is an event with its record's id (what :func:`_doc_problem`
    checks one by one, checked for a whole run with a few calls into C)."""
    try:
        if set(map(type, docs)) != {dict} or [d["id"] for d in docs] != list(ids):
            return False
        types = [d["type"] for d in docs]
        tags = [d["tags"] for d in docs]
    except KeyError:
        return False
    if set(map(type, types)) != {str} or "" in types or set(map(type, tags)) != {list}:
        return False
    flat = [t for row in tags for t in row]
    if flat and set(map(type, flat)) != {str}:
        return False
    return all(map(dict.__contains__, docs, repeat("data"))) and all(map(dict.__contains__, docs, repeat("metadata")))


class Walker:
    """Walks the parts of a plan; ``hashes=False`` skips the hash and chain checks (the
    references-only check)."""

    def __init__(self, ctx: Context, sinks: Sequence[Sink], hashes: bool = True,
                 bad: Callable[[int], None] | None = None) -> None:
        self.ctx = ctx
        self.sinks = list(sinks)
        self.bad = bad or (lambda _pos: None)  # told each position whose record is damaged
        self.hashes = hashes
        self.next_pos = 1
        self.chain: bytes | None = recfmt.GENESIS
        self.checked = 0
        self.rel = ""

    def walk(self, parts: Iterable[Part], upto: int) -> None:
        """Check every record of ``parts`` up to position ``upto``."""
        for part in parts:
            if part.first > upto:
                break
            self.rel = self.ctx.rel(part.path)
            if part.first != self.next_pos or part.kind != ACTIVE:
                # A gap, or a link into a file that the coverage check has already checked.
                self.chain = None
            self.next_pos = part.first
            last = min(part.last, upto)
            try:
                part.open()
            except (OSError, segfmt.SegmentError, packfmt.PackError) as exc:
                self._unreadable(part, last, exc)
                continue
            try:
                if part.substitute:
                    self.ctx.add("segment-superseded", "info", self.rel, f"removed while fsck ran (compaction); "
                                 f"positions {part.first}..{part.last} were checked in "
                                 f"{self.ctx.rel(part.substitute)}")
                if part.in_pack:
                    self._pack(part, last)
                elif part.kind == SEALED:
                    self._sealed(part, last)
                elif part.kind == ACTIVE:
                    self._segment_runs(part, last)
                else:
                    self._scanned(part, last)
            finally:
                part.release()  # one file open at a time: a store may hold more than the process may open

    def _unreadable(self, part: Part, last: int, exc: BaseException) -> None:
        """``part`` could not be opened again (removed, and no pack holds its records)."""
        code = "segment-gap" if isinstance(exc, FileNotFoundError) else "segment-corrupt"
        self.ctx.add(code, "error", self.rel, f"the file does not open again ({exc}) and no pack holds positions "
                     f"{part.first}..{last}: removed or changed while fsck ran?", part.first)
        for p in range(part.first, last + 1):
            self.bad(p)
        self.chain, self.next_pos = None, last + 1

    # -- reading ---------------------------------------------------------------------------

    def _sealed(self, part: Part, last: int) -> None:
        seg = part.reader
        assert isinstance(seg, segfmt.SealedSegment)
        digest = hashlib.sha256() if last == part.last and self.hashes else None
        for a in range(part.first, last + 1, RUN):
            b = min(last, a + RUN - 1)
            raw = seg.read_run(a, b)
            if digest is not None:
                digest.update(raw)
            self._run(raw, a, b, lambda p, s=seg: s.read_run(p, p))
        if digest is not None and digest.digest() != seg.seal.seg_sha256:
            self.ctx.add("segment-corrupt", "error", self.rel, "the segment does not match the SHA-256 its offset "
                         "index records: its bytes changed after it was sealed; restore it from a backup",
                         part.first)

    def _segment_runs(self, part: Part, last: int) -> None:
        seg = part.reader
        for a in range(part.first, last + 1, RUN):
            b = min(last, a + RUN - 1)
            self._run(seg.read_run(a, b), a, b, lambda p, s=seg: s.read_run(p, p))  # type: ignore[attr-defined]

    def _pack(self, part: Part, last: int) -> None:
        reader = part.reader
        assert isinstance(reader, packfmt.PackReader)
        if reader.version == 3:
            self._pack_records(part, last)
            return
        # The file's SHA-256 once: by the piece that starts it, unless read for a removed file.
        if self.hashes and not part.substitute and part.first == reader.first and not reader.sha_ok():
            self.ctx.add("pack-corrupt", "error", self.rel, "the pack fails its SHA-256 (its bytes changed after it "
                         "was written); restore it from a backup", part.first)
        blocks = reader.blocks
        for i in range(reader.find(part.first), len(blocks)):
            block = blocks[i]
            a, b = max(part.first, block.first), min(last, block.last)
            if a > last:
                break
            # One decompression and one parse per block; every event hash and the chain through
            # the block recomputed and compared with the chain the table records at its end.
            with gcpause.paused():
                self._block(reader, i, a, b)

    def _block(self, reader: packfmt.PackReader, i: int, a: int, b: int) -> None:
        """Check positions ``a..b`` of block ``i`` of a dense pack and hand its events to the
        sinks (with the collector paused: the parsed events die before it runs again)."""
        block = reader.blocks[i]
        chk = reader.check_block(i, hashes=self.hashes)
        for code, message in chk.problems:
            self.ctx.add(code, "error", self.rel, f"{message}; restore the pack from a backup", block.first)
        if chk.problems:
            for p in range(a, b + 1):
                self.bad(p)
        else:
            k = a - block.first
            self._sound(range(a, b + 1), chk.ids[k:k + b - a + 1], chk.docs[k:k + b - a + 1])
            if b == reader.last and not chk.commits[-1][2]:
                self.ctx.add("pack-corrupt", "error", self.rel, f"position {b} ends no batch (no commit mark)", b)
        # A piece that stops inside the block (a removed segment's positions, read from the pack
        # that took them in) hands on the chain after its own last event, not the block's.
        if b == block.last:
            self.chain = block.chain
        else:
            self.chain = chk.chains[b - block.first] if len(chk.chains) == block.count else None
        self.next_pos = b + 1
        self.checked += b - a + 1

    def _pack_records(self, part: Part, last: int) -> None:
        """A version 3 pack: whole raw records in its blocks, checked as a segment's are."""
        reader = part.reader
        assert isinstance(reader, packfmt.PackReader)
        if self.hashes and not part.substitute:
            problems = reader.verify()
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                self.ctx.add("pack-corrupt", "error", self.rel, f"the pack does not verify: {problems[0]}{more}; "
                             "restore it from a backup", part.first)
        for block in reader.blocks:
            a, b = max(part.first, block.first), min(last, block.first + block.count - 1)
            if a > last:
                break
            if b < a:
                continue
            try:
                raw = b"".join(reader.read_range(a, b))
            except packfmt.PackError as exc:
                self.ctx.add("pack-corrupt", "error", self.rel, f"{exc}: positions {a}..{b} are unreadable", a)
                for p in range(a, b + 1):
                    self.bad(p)
                self.chain, self.next_pos = None, b + 1
                continue
            self._run(raw, a, b, None)

    def _scanned(self, part: Part, last: int) -> None:
        try:
            for rec in segfmt.scan(part.fd, 0, part.size):
                if rec.position > last:
                    break
                self._records([rec])
        except recfmt.RecordError as exc:
            self.ctx.add("log-bad-line", "error", self.rel, f"{exc}: the rest of this segment is unreadable; "
                         "restore it from a backup", self.next_pos)
            for p in range(self.next_pos, last + 1):
                self.bad(p)
            self.chain, self.next_pos = None, last + 1

    def _run(self, raw: bytes, a: int, b: int, single: Callable[[int], bytes] | None) -> None:
        with gcpause.paused():  # the parsed events die before the collector runs again
            self._run_paused(raw, a, b, single)

    def _run_paused(self, raw: bytes, a: int, b: int, single: Callable[[int], bytes] | None) -> None:
        # The common case in bulk: every record whole, in place, hashed and chained right.
        ids, bodies, chain, problems = recfmt.check_run(raw, a, self.chain if self.hashes else None)
        if not self.hashes:
            problems = [p for p in problems if p[1] in ("header", "position")]
        if not problems and len(ids) == b - a + 1 and self.next_pos == a:
            self._docs(range(a, b + 1), ids, bodies)
            self.chain, self.next_pos = chain, b + 1
            self.checked += len(ids)
            return
        # Something is wrong in this run: name it exactly, record by record.
        try:
            recs = list(recfmt.iter_records(raw))
        except recfmt.RecordError:
            recs = []
        if len(recs) == b - a + 1:
            self._records(recs)
            return
        for p in range(a, b + 1):
            try:
                if single is None:
                    raise recfmt.RecordError("the block's records do not parse")
                rec = recfmt.parse_at(single(p))
            except (recfmt.RecordError, IndexError, OSError) as exc:
                self.ctx.add("log-bad-line", "error", self.rel, f"the record at position {p} is damaged ({exc}); "
                             "never repaired: restore the store from a backup", p)
                self.bad(p)
                self.chain, self.next_pos = None, p + 1
                continue
            self._records([rec])

    # -- checking --------------------------------------------------------------------------

    def _records(self, recs: list[recfmt.Record]) -> None:
        """Check parsed records one by one (a run with some damage, or a scanned segment)."""
        sha = hashlib.sha256
        hashes, add = self.hashes, self.ctx.add
        chain, expect = self.chain, self.next_pos
        positions: list[int] = []
        ids: list[str] = []
        bodies: list[bytes] = []
        for rec in recs:
            pos = rec.position
            if pos != expect:
                add("log-position-mismatch", "error", self.rel, f"the record where position {expect} belongs holds "
                    f"position {pos}; never repaired: restore the store from a backup", expect)
                chain = None
            if hashes:
                if sha(rec.body).digest() != rec.event_hash:
                    add("event-hash-mismatch", "error", self.rel, f"the event bytes of position {pos} differ from "
                        "the hash in its record header; restore the store from a backup", pos)
                    self.bad(pos)
                    chain, expect = rec.chain, pos + 1
                    continue
                if chain is not None and sha(chain + rec.event_hash).digest() != rec.chain:
                    add("chain-mismatch", "error", self.rel, f"the chain hash of position {pos} does not follow "
                        "from the previous record's", pos)
            chain, expect = rec.chain, pos + 1
            positions.append(pos)
            ids.append(rec.event_id)
            bodies.append(rec.body)
        self._docs(positions, ids, bodies)
        self.chain, self.next_pos = chain, expect
        self.checked += len(recs)

    def _docs(self, positions: Sequence[int], ids: Sequence[str], bodies: Sequence[bytes]) -> None:
        """Parse the bodies (one orjson call for the run), check each is an event with its
        record's id, and hand the sound ones to the sinks."""
        try:
            docs = orjson.loads(b"[" + b",".join(bodies) + b"]")
            if len(docs) != len(bodies):
                docs = None
        except orjson.JSONDecodeError:
            docs = None
        self._sound(positions, ids, docs, bodies)

    def _sound(self, positions: Sequence[int], ids: Sequence[str], docs: list[Any] | None,
               bodies: Sequence[bytes] = ()) -> None:
        """Check each parsed document is an event with its record's id (``docs`` None: parse
        ``bodies`` one by one), and hand the sound ones to the sinks."""
        if docs is not None and _all_sound(docs, ids):
            rows = list(zip(positions, ids, docs, strict=True))
            for sink in self.sinks:
                sink(rows)
            return
        add = self.ctx.add
        good: list[Row] = []
        keep = good.append
        for i, pos in enumerate(positions):
            eid = ids[i]
            if docs is not None:
                doc = docs[i]
            else:
                try:
                    doc = orjson.loads(bodies[i])
                except orjson.JSONDecodeError as exc:
                    add("event-unreadable", "error", self.rel, f"the event at position {pos} is not JSON ({exc})", pos)
                    self.bad(pos)
                    continue
            # The common case checked inline (a call per record costs a tenth of the budget).
            try:
                ok = (doc["id"] == eid and doc["type"].__class__ is str and doc["type"]
                      and doc["tags"].__class__ is list and "data" in doc and "metadata" in doc)
                if ok:
                    for tag in doc["tags"]:
                        if tag.__class__ is not str:
                            ok = False
            except (KeyError, TypeError):
                ok = False
            if not ok:
                add("event-unreadable", "error", self.rel, f"the event at position {pos} is not a valid event: "
                    f"{_doc_problem(doc, eid)}", pos)
                self.bad(pos)
                continue
            keep((pos, eid, doc))
        for sink in self.sinks:
            sink(good)
