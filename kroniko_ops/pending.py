"""The committed records past the index checkpoint, which every append's condition and idempotency
checks must still see: kept in memory by the writer, with what a condition needs of each record
(position, id, type and tags) and nothing more."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import orjson

from .format import record as recfmt
from .index import Entry
from .model import Query

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


class Pending:
    """The committed records past the index checkpoint, in position order, with their ids and
    terms looked up in O(1): conditions and idempotent retries check them on every append."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.ids: dict[str, int] = {}
        self._terms: dict[tuple[int, str], list[int]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    @property
    def first(self) -> int:
        """The first pending position (only when not empty)."""
        return self.entries[0][0]

    @property
    def last(self) -> int:
        """The last pending position (only when not empty)."""
        return self.entries[-1][0]

    def clear(self) -> None:
        """Forget everything (indexed, or to be re-read from the log)."""
        self.entries, self.ids, self._terms = [], {}, {}

    def extend(self, entries: Iterable[Entry]) -> None:
        """Add entries that follow the last one."""
        terms = self._terms
        add = self.entries.append
        ids = self.ids
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

    def first_match(self, query: Query, after: int) -> int | None:
        """The first pending position after ``after`` matching ``query``."""
        if not self.entries or after >= self.entries[-1][0]:
            return None
        first = self.entries[0][0]
        if query.is_all:
            return max(after + 1, first)
        best: int | None = None
        for item in query.items:
            if item.tags:
                candidates = self._terms.get((1, item.tags[0]), ())
            else:
                candidates = sorted(p for t in item.types for p in self._terms.get((0, t), ()))
            for pos in candidates[bisect.bisect_right(candidates, after):]:
                if best is not None and pos >= best:
                    break
                e = self.entries[pos - first]
                if item.matches(e[2], e[3]):
                    best = pos
                    break
        return best
