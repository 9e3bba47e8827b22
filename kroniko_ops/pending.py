"""The committed records past the index checkpoint, which every append's condition and idempotency
checks must still see: kept in memory by the writer, with what a condition needs of each record
(position, id, type and tags) and nothing more."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence

import orjson

from .format import record as recfmt
from .index import Entry
from .model import Query

REBUILD_AFTER = 256  # dropped entries that may linger in the lookups before they are rebuilt
_TAGS = b',"tags":'  # canonical JSON sorts its keys: "tags" and "type" close every event


def entry_of(rec: recfmt.Record) -> Entry:
    """``(position, id, type, tags)`` of a record, for the index and condition checks."""
    return entries_of([rec])[0]


def entries_of(records: Sequence[recfmt.Record]) -> list[Entry]:
    """The entries of ``records`` with one JSON parse for all of them, of each body's last two
    keys only (``tags`` and ``type``; the id is in the header): a condition needs nothing else,
    and the data may be large. Within a JSON string a quote is escaped, so the last ``,"tags":``
    of a body is its key. A body that does not end so is parsed whole."""
    tails = []
    for rec in records:
        body = rec.body
        i = body.rfind(_TAGS)
        tails.append(b"{" + body[i + 1:] if i > 0 else body)
    try:
        docs = orjson.loads(b"[" + b",".join(tails) + b"]")
        return [(rec.position, rec.event_id, doc["type"], tuple(doc.get("tags") or ()))
                for rec, doc in zip(records, docs, strict=True)]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        out = []
        for rec in records:
            doc = orjson.loads(rec.body)
            out.append((rec.position, rec.event_id, doc["type"], tuple(doc.get("tags") or ())))
        return out


def entries_from(buf: bytes, spans: Sequence[tuple[int, int, int]], first: int) -> list[Entry]:
    """The entries of whole records at ``spans`` (start, end, header size) of ``buf``, holding
    positions ``first, first + 1...``: ids from the headers, type and tags from each body's last
    two keys, parsed together."""
    tails = []
    ids = []
    for start, end, size in spans:
        body = buf[start + size:end - 1]
        i = body.rfind(_TAGS)
        tails.append(b"{" + body[i + 1:] if i > 0 else body)
        ids.append(buf[start + 13:start + 77].rstrip().decode("ascii"))
    docs = orjson.loads(b"[" + b",".join(tails) + b"]")
    if len(docs) != len(spans):
        raise ValueError("a record's event is not one JSON object")
    return [(first + k, ids[k], doc["type"], tuple(doc.get("tags") or ())) for k, doc in enumerate(docs)]


class Pending:
    """The committed records past the index checkpoint, in position order: every append's
    condition and idempotency checks look at them. Parsed entries (ids and terms looked up in
    O(1)), followed by records kept as their raw bytes (other writers' batches, this handle's
    single events) that are parsed only when a check could match them: a condition on a tag
    that none of their bytes spell, as JSON, is answered by a substring search."""

    def __init__(self) -> None:
        self.clear()

    def __len__(self) -> int:
        return len(self._entries) - self._lo + len(self._spans)

    def __bool__(self) -> bool:
        return len(self._entries) > self._lo or bool(self._spans)

    @property
    def first(self) -> int:
        """The first pending position (only when not empty)."""
        return self._entries[self._lo][0] if len(self._entries) > self._lo else self._raw_first

    @property
    def last(self) -> int:
        """The last pending position (only when not empty)."""
        return self._raw_first + len(self._spans) - 1 if self._spans else self._entries[-1][0]

    @property
    def entries(self) -> list[Entry]:
        """Every pending entry, parsed (for the index)."""
        self._absorb()
        return self._entries[self._lo:] if self._lo else self._entries

    @property
    def ids(self) -> dict[str, int]:
        """Event id -> position of every pending record (and perhaps of some already dropped:
        a position once given is a fact of the log, indexed or not)."""
        self._absorb()
        return self._ids

    def clear(self) -> None:
        """Forget everything (indexed, or to be re-read from the log)."""
        self._entries: list[Entry] = []
        self._lo = 0  # entries before it were dropped (indexed); the lookups below may still name them
        self._ids: dict[str, int] = {}
        self._terms: dict[tuple[int, str], list[int]] = {}
        self._raw = bytearray()
        self._spans: list[tuple[int, int, int]] = []
        self._raw_first = 0

    def add_raw(self, first: int, buf: bytes, spans: Sequence[tuple[int, int, int]]) -> None:
        """Add whole records (``spans`` of ``buf``: start, end, header size) holding positions
        ``first, first + 1...``, right after the last one; parsed when needed."""
        if not spans:
            return
        if not self._spans:
            self._raw_first = first
        base = len(self._raw) - spans[0][0]
        self._raw += buf[spans[0][0]:spans[-1][1]]
        self._spans += [(a + base, b + base, h) for a, b, h in spans]

    def add_own(self, first: int, buf: bytes, sizes: Sequence[int], header: int,
                entries: Callable[[], list[Entry]]) -> None:
        """Add the records this handle just wrote (``buf``, one record per size in ``sizes``,
        headers of ``header`` bytes), whose entries it knows: kept parsed (no search of raw
        bytes for the next condition), unless other writers' records wait raw before them; then
        raw too, as order must hold, and parsed with those only if a check needs them."""
        if not self._spans:
            self._add(entries())
            return
        spans, off = [], 0
        for size in sizes:
            spans.append((off, off + size, header))
            off += size
        self.add_raw(first, buf, spans)

    def _absorb(self) -> None:
        """Parse the raw records into entries."""
        if self._spans:
            raw, spans, first = bytes(self._raw), self._spans, self._raw_first
            self._raw, self._spans = bytearray(), []
            self._add(entries_from(raw, spans, first))

    def extend(self, entries: Iterable[Entry]) -> None:
        """Add parsed entries that follow the last one."""
        self._absorb()
        self._add(entries)

    def _add(self, entries: Iterable[Entry]) -> None:
        terms = self._terms
        add = self._entries.append
        ids = self._ids
        for e in entries:
            add(e)
            pos = e[0]
            ids[e[1]] = pos
            key = (0, e[2])
            got = terms.get(key)
            if got is None:
                terms[key] = [pos]
            else:
                got.append(pos)
            for t in e[3]:
                key = (1, t)
                got = terms.get(key)
                if got is None:
                    terms[key] = [pos]
                else:
                    got.append(pos)

    def drop_through(self, position: int) -> None:
        """Forget the entries up to ``position`` (indexed since). Raw records are dropped
        unparsed; parsed ones are skipped over, and the lookups rebuilt only once the dropped
        outnumber the kept (with several writers each handle drops every other writer's
        records about every hundred appends: rebuilding each time cost more than the appends)."""
        entries = self._entries
        if len(entries) > self._lo:
            self._lo = min(len(entries), max(self._lo, position - entries[0][0] + 1))
        if len(entries) == self._lo:
            if entries:
                self._entries, self._lo, self._ids, self._terms = [], 0, {}, {}
            spans = self._spans
            k = position - self._raw_first + 1
            if spans and k > 0:
                if k >= len(spans):
                    self._raw, self._spans = bytearray(), []
                else:
                    cut = spans[k][0]
                    del self._raw[:cut]
                    self._spans = [(a - cut, b - cut, h) for a, b, h in spans[k:]]
                    self._raw_first += k
        elif self._lo > REBUILD_AFTER and self._lo > len(entries) - self._lo:
            keep = entries[self._lo:]
            raw, spans, raw_first = self._raw, self._spans, self._raw_first
            self.clear()
            self._add(keep)
            self._raw, self._spans, self._raw_first = raw, spans, raw_first

    def _raw_may_match(self, query: Query, after: int) -> bool:
        """False only when no raw record after ``after`` can match ``query``: for some item,
        every tag and one of the types appear in their bytes as JSON strings (canonical JSON
        writes a tag and a type exactly as ``orjson.dumps`` does)."""
        if not self._spans or after >= self.last:
            return False
        raw = self._raw
        start = self._spans[max(0, after + 1 - self._raw_first)][0]
        for item in query.items:
            if all(raw.find(orjson.dumps(t), start) >= 0 for t in item.tags) and (
                    not item.types or any(raw.find(b'"type":' + orjson.dumps(t), start) >= 0 for t in item.types)):
                return True
        return False

    def first_match(self, query: Query, after: int) -> int | None:
        """The first pending position after ``after`` matching ``query``."""
        if not self or after >= self.last:
            return None
        if query.is_all:
            return max(after + 1, self.first)
        if self._raw_may_match(query, after):
            self._absorb()
        entries = self._entries
        if len(entries) <= self._lo or after >= entries[-1][0]:
            return None
        base = entries[0][0]
        after = max(after, entries[self._lo][0] - 1)  # the dropped ones are in the index: not looked at here
        best: int | None = None
        for item in query.items:
            if item.tags:
                candidates = self._terms.get((1, item.tags[0]), ())
            else:
                candidates = sorted(p for t in item.types for p in self._terms.get((0, t), ()))
            for pos in candidates[bisect.bisect_right(candidates, after):]:
                if best is not None and pos >= best:
                    break
                e = entries[pos - base]
                if item.matches(e[2], e[3]):
                    best = pos
                    break
        return best
