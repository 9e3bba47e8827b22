"""The long-running driver behind ``kroniko-ops torture``: round after round of concurrent
workers, SIGKILLs at random moments and in the middle of commits, recovery, and the checker.

Each round draws a workload from the run's seeded RNG (so ``--seed`` replays the same
schedules), runs it with ``workers`` processes, kills some of them, then — when anything was
killed — runs ``recover`` and ``fsck`` (property 6) and checks properties 1-5 and 7 (reads)
over the round's part of the log, with a summary of the earlier rounds' part (:class:`Prior`)
for reads and rejections that reach back. ``recover`` + ``fsck`` also run at the end. Across
rounds the committed prefix must stay exactly as it was: the chain hash at the previous round's
head is compared each round.

The store must be new, empty, or one torture wrote before (its position 1 is torture's marker
event): torture appends thousands of events and must never touch a store holding real data.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InvalidArgument
from ..model import Event
from ..postgres import display, open_store
from ..report import Report
from .checker import Prior, Violation, check
from .crash import random_kills
from .history import COMMITTED, REJECTED, UNKNOWN
from .mutants import MUTANTS
from .verify import chain_at, entry_reader, read_log, recover_and_fsck
from .worker import HarnessError, RunResult, context, run_workload
from .workload import Limits, generate

MARKER_TYPE = "kroniko-ops.torture"


@dataclass
class Figures:
    """Running totals of a torture run."""

    rounds: int = 0
    operations: int = 0
    appends: int = 0
    commits: int = 0
    rejections: int = 0
    unknown: int = 0
    reads: int = 0
    kills: int = 0
    recoveries: int = 0
    violations: list[Violation] = field(default_factory=list)
    failing_round: int | None = None
    failing_seed: int | None = None
    interrupted: bool = False


def _claim(path: str, durable: bool, segment_bytes: int | None) -> int:
    """Make sure the store is torture's own (marking a new one); return its head."""
    with open_store(path, durable=durable, segment_bytes=segment_bytes) as s:
        head = s.head()
        if head == 0:
            return s.append(Event(MARKER_TYPE, {"note": "written by kroniko-ops torture"}, id="torture-marker"))
        first = next(iter(s.read(limit=1)), None)
        if first is None or first.type != MARKER_TYPE:
            raise InvalidArgument(
                f"{display(path)} holds events torture did not write; torture appends many test events, so "
                "give it a new folder (or one an earlier torture run used)"
            )
        return head


def torture(path: str, workers: int = 4, duration: float | None = 60.0, kill_rate: float = 0.2,
            seed: int | None = None, durable: bool = True, max_ops: int = 8, max_batch: int = 20,
            rounds: int | None = None, segment_bytes: int | None = None, recover: bool = True,
            method: str = "forkserver", on_round: Callable[[Figures], None] | None = None,
            mutant: str | None = None) -> Report:
    """Run the harness against the store at ``path`` for ``duration`` seconds and/or ``rounds``
    rounds (whichever ends first; at least one must be given); return a report whose figures
    hold the totals and whose findings are the violations (exit 4 when any).

    ``kill_rate`` (0..1) is the chance that a worker is SIGKILLed during a round; besides, about
    a quarter of that many appends kill their own process at a random file operation of the
    commit. ``segment_bytes`` applies when torture creates the store (small segments roll and
    seal under the workers). ``recover=False`` skips recover + fsck (property 6). Stops at the
    first round with a violation and names its seed (property 0 marks a round the harness could
    not finish, e.g. a worker that hung: possibly a deadlock). Ctrl-C stops after reaping the
    round's workers; the store is then recovered and checked as usual. ``mutant`` names a broken
    engine of :mod:`.mutants` for the workers to run (the run must then find a violation).
    """
    if not 1 <= workers <= 64:
        raise InvalidArgument(f"workers must be between 1 and 64, got {workers}")
    if duration is None and rounds is None:
        raise InvalidArgument("give a duration, a number of rounds, or both")
    if duration is not None and not duration > 0:
        raise InvalidArgument(f"duration must be a positive number of seconds, got {duration}")
    if rounds is not None and rounds < 1:
        raise InvalidArgument(f"rounds must be at least 1, got {rounds}")
    if not 0.0 <= kill_rate <= 1.0:
        raise InvalidArgument(f"kill rate must be between 0 and 1, got {kill_rate}")
    if mutant is not None and mutant not in MUTANTS:
        raise InvalidArgument(f"no mutant {mutant!r}; kroniko-ops torture --mutant list prints them")
    path = os.fspath(path)  # a folder, or a postgresql:// URL (docs/POSTGRES.md)
    seed = random.SystemRandom().getrandbits(32) if seed is None else seed
    report = Report("torture", display(path))
    figures = Figures()
    base = _claim(path, durable, segment_bytes)
    prior = Prior(entry_at=entry_reader(path))
    prior.advance(read_log(path, 0))
    chain = chain_at(path, base)
    rng = random.Random(seed)
    limits = Limits(min_workers=workers, max_workers=workers, min_ops=max(1, max_ops // 2), max_ops=max_ops,
                    max_batch=max_batch, kill_chance=kill_rate / 4, small_segments=0.0)
    ctx = context(method)
    horizon = 0.05
    started = time.monotonic()
    while (rounds is None or figures.rounds < rounds) and (duration is None or time.monotonic() - started < duration):
        round_seed = rng.getrandbits(32)
        workload = generate(round_seed, limits, durable)
        kills = random_kills(random.Random(round_seed), workers, kill_rate, horizon)
        t = time.monotonic()
        try:
            result = run_workload(path, workload, kills, ctx=ctx, mutant=mutant)
        except HarnessError as exc:  # a hung worker may be a deadlock: report it, do not crash
            figures.violations.append(Violation(0, "harness-error", str(exc)))
            figures.failing_round, figures.failing_seed = figures.rounds, round_seed
            break
        except KeyboardInterrupt:  # Ctrl-C: the round's workers are reaped; report what was done
            figures.interrupted = True
            break
        if not result.kills:
            horizon = 0.8 * horizon + 0.2 * (time.monotonic() - t)
        _count(figures, result)
        try:
            found: list[Violation] = []
            if chain_at(path, base) != chain:
                found.append(Violation(2, "prefix-changed", f"the log up to position {base} changed during the round"))
            if result.kills and recover:
                found += recover_and_fsck(path, quick=True)
                figures.recoveries += 1
            log = read_log(path, base)
            found += check(result.history, log, base, prior)
            prior.advance(log)
            base = log[-1].position if log else base
            chain = chain_at(path, base)
        except Exception as exc:  # a store the engine cannot read back is a finding, never a traceback
            found.append(Violation(2, "unreadable-store", f"reading the store back after the round failed: "
                                   f"{type(exc).__name__}: {exc}", list(result.history.ops)[:6]))
        if found:
            figures.violations += found
            figures.failing_round, figures.failing_seed = figures.rounds, round_seed
            break
        if on_round is not None:
            on_round(figures)
    if not figures.violations and recover:
        figures.violations += recover_and_fsck(path)
        figures.recoveries += 1
    return _report(report, figures, path, seed, workers, duration, kill_rate, recover, mutant)


def _count(figures: Figures, result: RunResult) -> None:
    history = result.history
    paired = {(op.worker, op.index) for op in history.ops}  # reads that began a conditional append
    figures.rounds += 1
    figures.appends += len(history.ops)
    figures.reads += len(history.reads)
    figures.operations += len(history.ops) + sum((r.worker, r.index) not in paired for r in history.reads)
    figures.commits += history.count(COMMITTED)
    figures.rejections += history.count(REJECTED)
    figures.unknown += history.count(UNKNOWN)
    figures.kills += result.kills


def _report(report: Report, figures: Figures, path: str, seed: int, workers: int, duration: float | None,
            kill_rate: float, have_p6: bool, mutant: str | None) -> Report:
    try:
        with open_store(path, create=False, durable=False) as s:
            report.head = s.head()
    except Exception as exc:  # already reported as a violation when the store was damaged
        report.add("store-unreadable", "error", display(path), f"the store does not open: {type(exc).__name__}: {exc}")
    for v in figures.violations:
        report.add(f"violation-p{v.prop}-{v.code}", "error", display(path), v.render(), None)
    report.figures.update(
        seed=seed, workers=workers, duration=duration, kill_rate=kill_rate, rounds=figures.rounds,
        operations=figures.operations, commits=figures.commits, rejections=figures.rejections,
        unknown=figures.unknown, reads=figures.reads, kills=figures.kills, recoveries=figures.recoveries,
        violations=len(figures.violations), property6=have_p6,
        interrupted=figures.interrupted, mutant=mutant,
    )
    if figures.failing_round is not None:
        report.figures.update(failing_round=figures.failing_round, failing_round_seed=figures.failing_seed)
    return report.finish()
