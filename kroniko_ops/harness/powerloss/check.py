"""Checking one crash state: open the store as a fresh boot would (the engine re-verifies what was
never synced), then require, of what happened before the cut:

- every acknowledged append at its position with its id (idempotent retries included), and every
  event a reader was shown;
- for every rejection, the event it named as the conflict, at that position (a rejection is an
  answer about the log: it must still hold after a power cut);
- positions 1..head with no gap;

and of the store as it opens: queries by type and by tag (through the index) return what a scan
of the log finds, before and after appending; an idempotent retry of a batch the cut took back
appends it anew at the end, and one of a batch still there returns where it is; a conditional
append fails exactly when the log holds a matching event after its ``after``, naming the first;
and the next append lands at head + 1. What a maintenance operation made under its final name is
checked by its :class:`~.run.Action`."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property

from ...errors import AppendConditionFailed, KronikoError
from ...model import AppendCondition, Event, Query, QueryItem
from . import materialize
from .model import CrashState
from .promises import Promises
from .run import STORE, Recorded


@dataclass
class Outcome:
    """What one checked state showed."""

    state: CrashState
    acked_checked: int = 0
    lost: int = 0
    problems: list[str] = field(default_factory=list)


def check(rec: Recorded, state: CrashState, scratch: str, full_fsck: bool = False) -> Outcome:
    """Build ``state`` under ``scratch`` and check it; ``full_fsck`` also runs ``fsck``."""
    dest = os.path.join(scratch, "state")
    shutil.rmtree(dest, ignore_errors=True)
    materialize.build(rec.model, state, rec.base, dest, [os.path.join(STORE, "index")])
    store_dir = os.path.join(dest, STORE)
    materialize.as_rebooted(store_dir)
    out = Outcome(state)
    cut = rec.model.cut_time(state.cut)
    try:
        with rec.factory(store_dir, create=False, durable=False) as store:
            _Opened(store, rec.promises, cut, out).run()
    except KronikoError as exc:
        out.problems.append(f"the store does not open and recover: {type(exc).__name__}: {exc}")
    except Exception as exc:  # a crash of the engine on a state a power cut can leave is a finding too
        out.problems.append(f"the engine failed on this state: {type(exc).__name__}: {exc}")
    action = next((h for h in rec.history if h["ev"] == "action-start"), None)
    if action is not None and not out.problems:
        from .run import ACTIONS

        try:
            out.problems.extend(ACTIONS[action["name"]].verify(dest))
        except Exception as exc:  # e.g. a published store that lost a folder: a finding, not a traceback
            out.problems.append(f"what the {action['name']} operation made does not open: {type(exc).__name__}: {exc}")
    if full_fsck and not out.problems:
        from ... import fsck

        report = fsck(store_dir)
        if report.exit_code:
            codes = sorted({f.code for f in report.findings if f.severity != "info"})
            out.problems.append(f"fsck after recovery exits {report.exit_code}: {codes}")
    return out


QUERIES = (Query([QueryItem(types=["E"])]), Query([QueryItem(types=["P", "O"])]),
           *(Query([QueryItem(tags=[f"t{j}"])]) for j in range(3)), Query([QueryItem(types=["E"], tags=["t1"])]))


class _Opened:
    """The checks of one opened crash state, in order (each appends to ``out.problems``)."""

    def __init__(self, store, promises: Promises, cut: int, out: Outcome) -> None:  # type: ignore[no-untyped-def]
        self.store, self.promises, self.cut, self.out = store, promises, cut, out

    @cached_property
    def log(self) -> list:  # type: ignore[type-arg]
        return list(self.store.read())

    def problem(self, text: str) -> None:
        self.out.problems.append(text)

    def run(self) -> None:
        found = {e.position: e.id for e in self.log}
        head = self.store.head()
        if sorted(found) != list(range(1, head + 1)):
            self.problem(f"positions are not 1..{head}: {sorted(found)[:10]}...")
        self.kept(found)
        self.queries("as opened")
        self.retries(found, head)
        self.fresh()
        self.conditional()
        head = self.store.head()
        last = self.store.append(Event("AfterTheCut", {}, tags=["t0"]))
        if last != head + 1:
            self.problem(f"the first append after recovery got {last}, not {head + 1}")
        self.fresh()
        self.queries("after appending")

    def fresh(self) -> None:
        """Forget the scan: the log changed."""
        self.__dict__.pop("log", None)

    def kept(self, found: dict[int, str]) -> None:
        """Acknowledged, shown and conflicting events promised before the cut are there."""
        out, p = self.out, self.promises
        for what, entries in (("acknowledged", p.acked), ("shown to a reader", p.shown)):
            for t1, pos, eid, who in entries:
                if t1 > self.cut:
                    continue
                out.acked_checked += what == "acknowledged"
                if found.get(pos) != eid:
                    out.lost += 1
                    out.problems.append(f"{what} {eid} at {pos} ({who}) is "
                                        f"{'missing' if pos not in found else found[pos]}")
        tags = {e.position: e.tags for e in self.log}
        for t1, pos, tag, ids, who in p.rejected:
            if t1 <= self.cut and tag not in tags.get(pos, ()):
                out.lost += 1
                out.problems.append(f"{who} was rejected (batch {ids[0]}..) citing the {tag} event at {pos}, which "
                                    f"is {'missing' if pos not in found else found[pos]}: the conflict was not durable")

    def queries(self, when: str) -> None:
        """Reads through the index agree with a scan of the log."""
        for q in QUERIES:
            want = [(e.position, e.id) for e in self.log if q.matches(e.type, e.tags)]
            got = [(e.position, e.id) for e in self.store.read(q)]
            if got != want:
                self.problem(f"{when}, a read of {q!r} returned {_diff(got, want)}")
                return

    def retries(self, found: dict[int, str], head: int) -> None:
        """An idempotent retry of a batch still there returns its place and appends nothing; one
        of a batch the cut took back appends it anew, after the head."""
        where = {eid: pos for pos, eid in found.items()}
        kept = next((ids for ids in reversed(self.promises.tried) if ids[0] in where), None)
        if kept is not None:
            got = self.store.append([Event("Retry", {}, id=i) for i in kept])
            if got != where[kept[-1]] or self.store.head() != head:
                self.problem(f"retrying the batch {kept[0]}.. (at {where[kept[0]]}..{where[kept[-1]]}) returned "
                             f"{got} and moved the head from {head} to {self.store.head()}")
        gone = [ids for ids in self.promises.tried if not any(i in where for i in ids)]
        lost = next((ids for ids in gone if ids[0] in self.promises.written), gone[0] if gone else None)
        if lost is not None:
            got = self.store.append([Event("Retry", {}, tags=["t2"], id=i) for i in lost])
            lo = head + 1
            at = [e.id for e in self.store.read(start=lo, limit=len(lost))]
            if got != head + len(lost) or at != lost:
                self.problem(f"retrying the batch {lost[0]}.., which this state lost, returned {got} and the log "
                             f"holds {at} at {lo}.., not that batch: the retry was taken for one of events that "
                             "are not in the log")

    def conditional(self) -> None:
        """A conditional append fails exactly when a scan finds a match after ``after``."""
        log = self.log
        after = max(0, len(log) - 4)
        for tag in ("t0", "t1", "t2"):
            query = Query([QueryItem(tags=[tag])])
            first = next((e.position for e in log[after:] if query.matches(e.type, e.tags)), None)
            try:
                got = self.store.append(Event("C", {}, tags=["c"]), AppendCondition(query, after=after))
                verdict = f"succeeded at {got}"
            except AppendConditionFailed as exc:
                if exc.position == first:
                    return
                verdict = f"failed naming {exc.position}"
            if first is not None or verdict.startswith("failed"):
                self.problem(f"an append conditioned on no {tag} after {after} {verdict}; a scan of the log "
                             f"finds {first or 'none'}")
                return
            self.fresh()
            log = self.log


def _diff(got: list[tuple[int, str]], want: list[tuple[int, str]]) -> str:
    extra = [x for x in got if x not in want]
    missing = [x for x in want if x not in got]
    return (f"{len(got)} events where a scan of the log finds {len(want)} (extra {extra[:4]}, missing "
            f"{missing[:4]})")
