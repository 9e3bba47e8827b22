"""The checker's judgement of reads (property 7) and of the heads conditions were built on.

A read fixes a head and returns the events matching its query up to that head. Against the
final log, the checker requires of every recorded read:

- its head is at or below the final committed head (``read-past-head``): a reader never sees
  a position that was not, in the end, committed;
- its head is 0 or the last position of a batch (``read-mid-batch``): a reader never sees part
  of a batch;
- it returned exactly the committed events matching its query in its range, in order
  (``read-wrong-result``: count and digest of positions and body hashes recomputed from the
  final log; ``read-unordered``);
- its head is at or past the head of every earlier read of its worker (``head-went-back``);

and of every conditional append with an ``after``: its process actually read that head before
invoking it (``after-not-read``, property 3: a condition is only as good as the head it names;
an ``after`` raised past what was read hides conflicts the checker could not otherwise see).
"""

from __future__ import annotations

from collections.abc import Callable

from .history import History, ReadRecord
from .logsummary import Prior, positions_of, span

Report = Callable[..., None]


def check_reads(history: History, summaries: tuple[Prior, ...], head: int, report: Report) -> None:
    """Judge every read of ``history`` against the final log (``summaries`` cover ``1..head``).

    ``report(prop, code, message, ops, reads)`` records a violation.
    """
    inner: set[int] = set().union(*(s.inner for s in summaries))
    for r in history.reads:
        if r.head > head:
            report(7, "read-past-head", f"{r.name} answered for head {r.head}, but the final committed head is "
                   f"{head} (a reader saw a position that was never committed)", [], [r])
            continue
        if r.head in inner:
            report(7, "read-mid-batch", f"{r.name} answered for head {r.head}, which is inside a batch (the "
                   f"record at {r.head} has no commit mark): a reader saw part of a batch", [], [r])
        if not r.ordered:
            report(7, "read-unordered", f"{r.name} returned positions out of "
                   f"{'descending' if r.backwards else 'ascending'} order", [], [r])
        if r.query is not None and r.digest is not None:
            _result(r, summaries, report)


def _range(r: ReadRecord) -> tuple[int, int]:
    lo, hi = 1, r.head
    if r.start is not None:
        if r.backwards:
            hi = min(hi, r.start)
        else:
            lo = max(lo, r.start)
    return lo, hi


def _result(r: ReadRecord, summaries: tuple[Prior, ...], report: Report) -> None:
    assert r.query is not None
    lo, hi = _range(r)
    count, digest, slices = span(summaries, r.query, lo, hi)
    if count == r.found and digest == r.digest:
        return
    detail = f"it returned {r.found} event(s), the log holds {count} matching in {lo}..{hi}"
    if r.positions is not None:
        want = positions_of(slices)
        got = set(r.positions)
        missing = [p for p in want if p not in got]
        extra = sorted(got - set(want))
        if missing:
            detail += f"; missing {missing[:8]}"
        if extra:
            detail += f"; extra {extra[:8]}"
        if not missing and not extra:
            detail += "; the same positions, but other event bodies"
    report(7, "read-wrong-result", f"{r.name} did not return exactly the committed events matching its query up "
           f"to its head {r.head}: {detail}", [], [r])


def check_heads(history: History, report: Report) -> None:
    """No process sees the head go back: a read that started after another of the same worker
    completed answers for a head at or past that one's (``head-went-back``)."""
    last: dict[int, ReadRecord] = {}
    for r in sorted(history.reads, key=lambda r: r.invoke):
        before = last.get(r.worker)
        if before is not None and before.complete <= r.invoke and r.head < before.head:
            report(7, "head-went-back", f"{r.name} answered for head {r.head}, but {before.name} of the same worker "
                   f"answered for head {before.head} before it started: the head went back", [], [before, r])
        if before is None or r.head >= before.head:
            last[r.worker] = r


def check_afters(history: History, report: Report) -> None:
    """Every conditional append's ``after`` is a head its own worker read before invoking it."""
    heads: dict[int, list[tuple[int, int]]] = {}
    for r in history.reads:
        heads.setdefault(r.worker, []).append((r.head, r.complete))
    for op in history.ops:
        if not op.conditional or op.after is None:
            continue
        if not any(h == op.after and done <= op.invoke for h, done in heads.get(op.worker, ())):
            read = sorted({h for h, done in heads.get(op.worker, ()) if done <= op.invoke})
            report(3, "after-not-read", f"{op.name} was conditioned on after={op.after}, but worker {op.worker} "
                   f"never read that head before it (heads read: {read[-5:] or 'none'}): its condition names a "
                   "point in the log no read of its process saw", [op], [])
