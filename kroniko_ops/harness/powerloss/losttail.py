"""The disk lost acknowledged records (``torture --power-loss --operation lost-tail``).

The crash model of :mod:`.model` trusts a finished fsync; a disk that lies about it (or loses a
page later) breaks that promise, and the engine must then say so, never answer with less or
other than it acknowledged. Each state of this operation: a server handle appends batches after
records already in the store (so it remembers its tail and the ids it wrote), then the disk
loses part of the active segment's synced records (a :class:`Loss`: bytes zeroed again in the
preallocated segment, at its end or in between, or the file cut short). Then:

- every read of the handle that stayed open and of a fresh handle raises ``StoreCorrupted``
  naming fsck, or returns exactly the acknowledged events; ``head()`` never names a position
  the loss took;
- ``fsck --repair --accept-loss`` salvages: exit 1, exactly the positions from the first
  damaged batch on reported ``acknowledged-lost``;
- the handle that stayed open appends after what was kept: a retry of its last (lost) batch is
  written again at the kept head + 1, not answered from its memory, and one new event follows;
  both handles then read exactly the kept events and those, and ``fsck`` exits 0.

A third handle read every record before the loss: its reads must raise ``StoreCorrupted`` too
(it reads the bytes again at the offsets it learned), but its ``head()`` is not asked, as it
re-reads nothing it has seen, as a real machine's page cache would keep those pages. After the
repair and the appends it must read exactly what the others read: the records it learned were
cut, and new ones took their bytes at other offsets. No timing is
involved: the same seed draws the same store and the same losses."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ...errors import StoreCorrupted
from ...format import segment as segfmt
from ...model import Event
from .run import STORE, Scenario, StoreFactory

Acked = list[tuple[int, str]]  # (position, id) of acknowledged events, in order
SECTOR = 512


@dataclass(frozen=True)
class Loss:
    """What the disk lost of the active segment: bytes ``lo..hi`` read as zeros again
    (``zero``), or the file ends at ``lo`` (``cut``; ``hi`` is the records' end)."""

    kind: str
    lo: int
    hi: int
    segment: str = ""

    def describe(self) -> str:
        """E.g. ``zero 4480..4560 of 000000000001.seg``."""
        what = f"zero {self.lo}..{self.hi}" if self.kind == "zero" else f"cut at {self.lo} (records end at {self.hi})"
        return f"{what} of {self.segment}"


@dataclass
class LossOutcome:
    """What one checked loss showed; ``kept`` names the folder of a failing state."""

    loss: Loss
    acked_checked: int = 0
    lost: int = 0  # events the engine lost beyond what the disk took
    problems: list[str] = field(default_factory=list)
    kept: str | None = None


@dataclass
class _Layout:
    """The active segment after the server's appends: its records' byte spans by position,
    and the batches (first, last position) in it."""

    path: str
    spans: dict[int, tuple[int, int]]
    batches: list[tuple[int, int]]
    end: int

    def batch_at(self, offset: int) -> tuple[int, int]:
        """The batch whose records hold byte ``offset``."""
        return next(b for b in self.batches if self.spans[b[0]][0] <= offset < self.spans[b[1]][1])


def _template(sc: Scenario, base: str, rng: random.Random) -> tuple[str, Acked, list[tuple[int, int]]]:
    """The store before the server: ``sc.prefill`` events in batches of 1-3 by another handle."""
    path = os.path.join(base, "template", STORE)
    acked: Acked = []
    batches = []
    with sc.factory(path, segment_bytes=sc.segment_bytes) as store:
        while len(acked) < sc.prefill:
            ids = [f"p{len(acked) + k}" for k in range(rng.randint(1, 3))]
            last = store.append([Event("P", {"pad": "p" * rng.randint(10, 200)}, ["t0"], id=i) for i in ids])
            batches.append((last - len(ids) + 1, last))
            acked += zip(range(last - len(ids) + 1, last + 1), ids, strict=True)
    return path, acked, batches


def _server_batches(sc: Scenario, rng: random.Random) -> list[list[Event]]:
    """The server's appends, the same in every state (their records then lie at the same bytes)."""
    return [[Event("E", {"b": b, "pad": "e" * rng.randint(10, 300)}, [f"t{k % 3}"], id=f"lt-{b}-{k}")
             for k in range(rng.randint(1, sc.max_batch))] for b in range(sc.appends)]


def _layout(store: str, batches: list[tuple[int, int]]) -> _Layout:
    """Where each record of the active segment lies (one line each, then the zeros)."""
    log = os.path.join(store, "log")
    name = max(n for n in os.listdir(log) if (p := segfmt.parse_name(n)) and p[1] == "seg")
    first = segfmt.parse_name(name)[0]  # type: ignore[index]
    path = os.path.join(log, name)
    with open(path, "rb") as f:
        data = f.read().rstrip(b"\0")
    spans, at = {}, 0
    for k, line in enumerate(data.split(b"\n")[:-1]):
        spans[first + k] = (at, at + len(line) + 1)
        at += len(line) + 1
    return _Layout(path, spans, [b for b in batches if b[0] >= first], at)


def losses(lay: _Layout, rng: random.Random, limit: int, samples: int) -> Iterator[Loss]:
    """Per batch of the active segment: it and all after it zeroed, the file cut where it
    starts, the newline ending its commit record zeroed, and (but for the last batch) a hole
    inside its first record with the records after it intact; then the last 7 bytes zeroed and
    the last byte cut (``limit`` of all these at most, seeded); then ``samples`` random losses,
    each of a kind drawn at random."""
    name, end = os.path.basename(lay.path), lay.end
    single: list[Loss] = []
    for first, last in lay.batches:
        start, close = lay.spans[first][0], lay.spans[last][1]
        single += [Loss("zero", start, end, name), Loss("cut", start, end, name), Loss("zero", close - 1, close, name)]
        if last != lay.batches[-1][1]:
            a, b = lay.spans[first]
            single.append(Loss("zero", (a + b) // 2, min(b, (a + b) // 2 + 16), name))
    single += [Loss("zero", end - 7, end, name), Loss("cut", end - 1, end, name)]
    yield from single if len(single) <= limit else rng.sample(single, limit)
    begin = lay.spans[lay.batches[0][0]][0]
    for _ in range(samples):
        kind = rng.choice(("tail", "between", "cut"))
        lo = rng.randrange(begin, end)
        if kind == "tail":
            yield Loss("zero", lo, end, name)
        elif kind == "between":  # a sector the disk dropped, maybe with records after it intact
            yield Loss("zero", lo, min(end, lo + rng.randint(1, SECTOR)), name)
        else:
            yield Loss("cut", lo, end, name)


def _apply(loss: Loss, path: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        if loss.kind == "zero":
            os.pwrite(fd, bytes(loss.hi - loss.lo), loss.lo)
        else:
            os.ftruncate(fd, loss.lo)
    finally:
        os.close(fd)


def run(sc: Scenario, base: str, rng: random.Random, limit: int, samples: int,
        keep: int = 3) -> Iterator[LossOutcome]:
    """Build the store, then check each loss on a copy of it (a failing copy is kept, ``keep``
    at most, under ``base``)."""
    template, prefill, pre_batches = _template(sc, base, rng)
    planned = _server_batches(sc, rng)
    state = os.path.join(base, "state")
    lay: _Layout | None = None
    draw: Iterator[Loss] | None = None
    kept = 0
    while True:
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(template, state)
        server = sc.factory(state, create=False)
        try:
            acked, batches = list(prefill), list(pre_batches)
            for batch in planned:
                last = server.append(batch)
                batches.append((last - len(batch) + 1, last))
                acked += zip(range(last - len(batch) + 1, last + 1), (e.id for e in batch), strict=True)
            if draw is None:
                lay = _layout(state, batches)
                draw = losses(lay, rng, limit, samples)
            loss = next(draw, None)
            if loss is None:
                return
            assert lay is not None
            early = sc.factory(state, create=False)
            try:
                list(early.read())  # learns every record's offsets before the loss
                _apply(loss, lay.path)
                out = _Check(sc.factory, state, server, acked, lay, loss, planned[-1]).run(early)
            finally:
                early.close()
        finally:
            server.close()
        if out.problems and kept < keep:
            kept += 1
            out.kept = os.path.join(base, f"failed-{kept}")
            shutil.move(state, out.kept)
        yield out


class _Check:
    """The checks of one loss, in order (each adds to ``out.problems``)."""

    def __init__(self, factory: StoreFactory, path: str, server, acked: Acked,  # type: ignore[no-untyped-def]
                 lay: _Layout, loss: Loss, retry: list[Event]) -> None:
        self.factory, self.path, self.server, self.acked, self.retry = factory, path, server, acked, retry
        first_lost = lay.batch_at(loss.lo)[0]
        self.kept = [a for a in acked if a[0] < first_lost]
        self.lost = list(range(first_lost, acked[-1][0] + 1))
        self.out = LossOutcome(loss)
        self.early: Any = None  # a handle that read every record before the loss (set by run)

    def problem(self, text: str) -> None:
        self.out.problems.append(text)

    def run(self, early) -> LossOutcome:  # type: ignore[no-untyped-def]
        self.reads("the handle open across the loss", self.server)
        # Its head() is not asked: it re-reads nothing it has seen (a page cache would keep it).
        self.reads("a handle that read every record before the loss", early, ask_head=False)
        self.early = early
        try:
            with self.factory(self.path, create=False) as fresh:
                self.reads("a fresh handle", fresh)
        except StoreCorrupted as exc:  # refusing to open is an answer too, if it says what to do
            self._named_fsck("a fresh handle", "opening", exc)
        except Exception as exc:
            self.problem(f"opening a fresh handle after the loss raised {type(exc).__name__}: {exc}")
        if self.salvaged():
            self.appends_after_the_cut()
        return self.out

    def _named_fsck(self, who: str, what: str, exc: StoreCorrupted) -> None:
        if "fsck" not in str(exc):
            self.problem(f"{who}: {what} raised StoreCorrupted without naming fsck: {exc}")

    def reads(self, who: str, store, ask_head: bool = True) -> None:  # type: ignore[no-untyped-def]
        """Each read raises StoreCorrupted naming fsck, or returns exactly what was acknowledged
        (and, with ``ask_head``, ``head()`` names no lost position)."""
        acked, head = self.acked, self.acked[-1][0]
        lo = self.lost[0] if self.lost else head
        reads: list[tuple[str, Callable[[], Acked], Acked]] = [
            ("read()", lambda: [(e.position, e.id) for e in store.read()], acked),
            ("read(backwards=True)", lambda: [(e.position, e.id) for e in store.read(backwards=True)], acked[::-1]),
            (f"read(start={lo}, limit=1)", lambda: [(e.position, e.id) for e in store.read(start=lo, limit=1)],
             [a for a in acked if a[0] == lo]),
        ]
        for what, call, want in reads:
            try:
                got = call()
            except StoreCorrupted as exc:
                self._named_fsck(who, what, exc)
                continue
            except Exception as exc:
                self.problem(f"{who}: {what} raised {type(exc).__name__}, not StoreCorrupted: {exc}")
                continue
            if got != want:
                self.problem(f"{who}: {what} returned {len(got)} events {_brief(got)} without raising "
                             f"StoreCorrupted, where {len(want)} were acknowledged {_brief(want)}")
        if not ask_head:
            return
        try:
            named = store.head()
        except StoreCorrupted as exc:
            self._named_fsck(who, "head()", exc)
            return
        if self.lost and named >= self.lost[0]:
            self.problem(f"{who}: head() names position {named}, which the loss took (the log keeps "
                         f"1..{self.lost[0] - 1})")

    def salvaged(self) -> bool:
        """``fsck --repair --accept-loss`` exits 1 naming exactly the lost positions."""
        from ... import fsck

        try:
            report = fsck(self.path, repair=True, accept_loss=True)
        except Exception as exc:
            self.problem(f"fsck --repair --accept-loss raised {type(exc).__name__}: {exc}")
            return False
        named = sorted(f.position for f in report.findings if f.code == "acknowledged-lost")
        if report.exit_code != 1 or named != self.lost:
            codes = sorted({f.code for f in report.findings if f.severity != "info"})
            self.problem(f"fsck --repair --accept-loss exits {report.exit_code} naming {_ranges(named)} "
                         f"acknowledged-lost, not exit 1 naming {_ranges(self.lost)} ({codes})")
            return report.exit_code == 1
        return True

    def appends_after_the_cut(self) -> None:
        """The handle that stayed open appends after what was kept; the store is then clean."""
        from ... import fsck

        base = self.kept[-1][0] if self.kept else 0
        retried = [e.id for e in self.retry]
        want = self.kept + list(zip(range(base + 1, base + len(retried) + 2), [*retried, "lt-after"], strict=True))
        self.out.acked_checked = len(self.kept)
        try:
            got = self.server.append(self.retry)
            if got != base + len(retried):
                self.problem(f"the handle open across the cut answered a retry of the lost batch {retried[0]}.. with "
                             f"{got}, not {base + len(retried)} (the kept head {base} + {len(retried)}): it was "
                             "answered from what the handle remembered, not written again")
            self.server.append(Event("AfterTheLoss", {}, ["t0"], id="lt-after"))
        except Exception as exc:
            self.problem(f"the handle open across the cut could not append after it: {type(exc).__name__}: {exc}")
            return
        for who, read in (("the handle open across the cut", self.server.read),
                          ("a handle that read every record before the loss", self.early.read),
                          ("a fresh handle", None)):
            try:
                if read is None:
                    with self.factory(self.path, create=False) as fresh:
                        log = [(e.position, e.id) for e in fresh.read()]
                else:
                    log = [(e.position, e.id) for e in read()]
            except Exception as exc:
                self.problem(f"after the repair and the appends, {who} cannot read: {type(exc).__name__}: {exc}")
                continue
            if log != want:
                self.out.lost += sum(1 for a in self.kept if a not in log)
                self.problem(f"after the repair and the appends, {who} reads {_brief(log)}, not the kept events "
                             f"then the retried batch and one more {_brief(want)}")
        report = fsck(self.path)
        if report.exit_code:
            codes = sorted({f.code for f in report.findings if f.severity != "info"})
            self.problem(f"after the handle open across the cut appended, fsck exits {report.exit_code}: {codes}")


def _brief(events: Acked) -> str:
    if not events:
        return "(none)"
    return f"at {events[0][0]}..{events[-1][0]} ({events[-1][1]} last)"


def _ranges(positions: list[int]) -> str:
    return f"{positions[0]}..{positions[-1]}" if positions else "none"
