"""The second pass over the log's records, for the index check once the first found the index
wrong: ``(position, id, event)`` of every readable record, damaged ones skipped (the walk of
:mod:`.records` reported them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt
from .parts import Part
from .records import RUN, _doc_problem


def iter_docs(parts: Sequence[Part], lo: int, hi: int,
              unread: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(position, id, event)`` of the readable records in ``lo..hi`` (a second pass after the
    first found the index wrong; damaged records are skipped, they were reported already).
    ``unread(a, b)`` is told of positions a file held that could not be opened again (the walk
    read or reported them; the caller must not judge them by their absence here)."""
    for part in parts:
        if part.last < lo or part.first > hi:
            continue
        a0, b0 = max(lo, part.first), min(hi, part.last)
        try:
            part.open()
        except (OSError, segfmt.SegmentError, packfmt.PackError):
            if unread is not None:
                unread(a0, b0)
            continue  # reported by the walk
        try:
            if part.in_pack:
                yield from _pack_docs(part.reader, a0, b0, unread)  # type: ignore[arg-type]
            else:
                yield from _part_docs(part, a0, b0)
        finally:
            part.release()


def _pack_docs(reader: packfmt.PackReader, a0: int, b0: int,
               unread: Callable[[int, int], None] | None) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``iter_docs`` within an opened pack, block by block: a damaged block (reported by the
    walk) costs its own positions, not those of the blocks read with it."""
    for block in reader.blocks:
        a, b = max(a0, block.first), min(b0, block.first + block.count - 1)
        if a > b0:
            break
        if b < a:
            continue
        try:
            recs = list(recfmt.iter_records(b"".join(reader.read_range(a, b))))
        except (recfmt.RecordError, packfmt.PackError):
            if unread is not None:
                unread(a, b)
            continue
        yield from _docs(recs)


def _part_docs(part: Part, a0: int, b0: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``iter_docs`` within one opened segment."""
    if part.reader is None:
        try:
            for rec in segfmt.scan(part.fd, 0, part.size):
                if a0 <= rec.position <= b0:
                    yield from _docs([rec])
        except recfmt.RecordError:
            pass
        return
    for a in range(a0, b0 + 1, RUN):
        b = min(b0, a + RUN - 1)
        try:
            recs = list(recfmt.iter_records(part.reader.read_run(a, b)))  # type: ignore[attr-defined]
        except recfmt.RecordError:
            recs = list(_one_by_one(part, a, b))
        yield from _docs(recs)


def _one_by_one(part: Part, a: int, b: int) -> Iterator[recfmt.Record]:
    """The records of ``a..b`` of a segment that parse (a damaged one is skipped)."""
    for p in range(a, b + 1):
        try:
            yield recfmt.parse_at(part.reader.read_run(p, p))  # type: ignore[attr-defined]
        except (recfmt.RecordError, IndexError, OSError):
            continue


def _docs(recs: list[recfmt.Record]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    for rec in recs:
        try:
            doc = orjson.loads(rec.body)
        except orjson.JSONDecodeError:
            continue
        if _doc_problem(doc, rec.event_id) is None:
            yield rec.position, rec.event_id, doc
