"""Running the simulator over a set of operations and summing up what it found.

Each operation is recorded a few times (each run seeded), then its crash states are checked:
every state with at most one fault at every cut point when a run is small enough
(``exhaustive_limit``), plus ``samples`` random states per run. A failing state keeps its run's
folder and says how to rebuild it (``kroniko-ops torture --power-loss --replay``)."""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from ...errors import InvalidArgument
from ...report import Report
from ...store import EventStore
from ..mutants import MUTANTS, applied
from . import (
    actions,  # noqa: F401  (registers the maintenance operations)
    losttail,
)
from .check import Outcome, check
from .model import CrashState, Model, sampled, single_faults
from .run import Recorded, Scenario, StoreFactory, record

# One scenario per operation the simulator covers; the maintenance operations add their own.
# Every operation with writers has a reader beside them (an event shown, then lost, is a finding).
# A maintenance operation starts as a writer pauses before an fsync of the log (unsynced records are
# there), and the writers go on appending, pausing so, until it ends; a backup's writers pause long
# enough for its whole snapshot to meet the unsynced records.
BUSY = (2000, 5000)
OPERATIONS: dict[str, Scenario] = {
    "append": Scenario("append", workers=1, appends=6, readers=1, fsync_pause_us=(1000, 4000)),
    "batch": Scenario("batch", workers=1, appends=5, max_batch=6, readers=1, fsync_pause_us=(1000, 4000)),
    "concurrent": Scenario("concurrent", workers=4, appends=4, max_batch=2, readers=1, orphans=4),
    "roll": Scenario("roll", workers=2, appends=8, max_batch=3, readers=1, segment_bytes=4096, orphans=2),
    "compact": Scenario("compact", workers=2, appends=3, readers=1, prefill=40, segment_bytes=4096, action="compact",
                        fsync_pause_us=BUSY),
    "backup": Scenario("backup", workers=2, appends=3, readers=1, prefill=30, segment_bytes=8192, action="backup",
                        fsync_pause_us=(20000, 30000)),
    "restore": Scenario("restore", prefill=30, segment_bytes=4096, action="restore"),
    "reindex": Scenario("reindex", workers=2, appends=3, readers=1, prefill=30, segment_bytes=4096, action="reindex",
                        fsync_pause_us=BUSY),
    "recover": Scenario("recover", prefill=20, segment_bytes=4096, action="recover"),
    "migrate": Scenario("migrate", action="migrate"),
    # Not a power cut the model allows: the disk loses synced records (a lying or failing disk);
    # a server handle stays open across the loss and fsck --repair --accept-loss (:mod:`.losttail`).
    "lost-tail": Scenario("lost-tail", appends=5, max_batch=3, prefill=30, segment_bytes=8192, lost_tail=True),
}


@dataclass
class Failure:
    """A state that broke a rule, where to find its run and how to rebuild it."""

    operation: str
    run_dir: str
    state: CrashState | str | None  # None: a problem of the recorded run itself (:mod:`.trace`); str: a loss
    problems: list[str]

    def describe(self) -> str:
        """Human-readable, with the replay command."""
        if isinstance(self.state, str):  # lost-tail: no recording to replay, the seed draws the same losses
            return (f"{self.operation}: {self.state}: {'; '.join(self.problems[:3])}\n"
                    f"  the store as checked: {self.run_dir} (the same --seed draws the same losses)")
        if self.state is None:
            return (f"{self.operation}: the recorded run: {'; '.join(self.problems[:3])}\n"
                    f"  recorded in {self.run_dir} (changes in ops/, calls in hist/)")
        state = self.state.describe()
        return (f"{self.operation}: {state}: {'; '.join(self.problems[:3])}\n"
                f"  rebuild: kroniko-ops torture --power-loss --replay {self.run_dir} --state '{state}'")


@dataclass
class Figures:
    """Per operation: recorded runs, crash states checked, acknowledged events checked, events
    lost and invariant violations (the last two must be 0)."""

    runs: int = 0
    states: int = 0
    acked: int = 0
    lost: int = 0
    violations: int = 0
    failures: list[Failure] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """The counts (for JSON)."""
        return {"runs": self.runs, "crash_states": self.states, "acknowledged_checked": self.acked,
                "events_lost": self.lost, "violations": self.violations}


def states_of(model: Model, rng: random.Random, exhaustive_limit: int, samples: int,
              promises: list[int] = ()) -> Iterator[CrashState]:  # type: ignore[assignment]
    """The states to check for one run: every single-fault state when there are at most
    ``exhaustive_limit`` of them, else that many, first those of the cuts just after a promise
    (the moments in ``promises``: an append acknowledged, a conflict named), where what was
    promised but not yet durable would show, then a seeded sample of the others; plus
    ``samples`` random ones."""
    single = [s for cut in range(len(model.changes) + 1) for s in single_faults(model, cut)]
    if len(single) > exhaustive_limit:
        first = {next((k for k in range(len(model.changes) + 1) if model.cut_time(k) >= t), None) for t in promises}
        # Tiers: every volatile change lost just after a promise (whatever was promised but not
        # yet durable goes), then each one lost alone there, then every other state.
        tiers: list[list[CrashState]] = [[], [], []]
        for s in single:
            urgent = s.cut in first
            tiers[0 if urgent and s.index == "initial" else 1 if urgent and s.torn is None else 2].append(s)
        chosen: list[CrashState] = []
        for tier in tiers:
            room = exhaustive_limit - len(chosen)
            chosen += tier if len(tier) <= room else rng.sample(tier, room)
        single = chosen
    yield from single
    for _ in range(samples):
        yield sampled(model, rng)


def simulate(operations: dict[str, Scenario], *, seed: int = 0, runs: int = 1, exhaustive_limit: int = 600,
             samples: int = 100, factory: StoreFactory | None = None, scratch: str | None = None,
             keep_failures: int = 3, on_state: Callable[[str, Outcome], None] | None = None) -> dict[str, Figures]:
    """Record each operation ``runs`` times and check its crash states; return the figures."""
    logging.getLogger("kroniko_ops").setLevel(logging.CRITICAL)  # damage found is the point here
    out: dict[str, Figures] = {}
    for name, scenario in operations.items():
        figures = out[name] = Figures()
        for r in range(runs):
            run_seed = seed * 7919 + r * 104729 + sum(map(ord, name))
            sc = replace(scenario, seed=run_seed, factory=factory or scenario.factory)
            base = tempfile.mkdtemp(prefix=f"kroniko-powerloss-{name}-", dir=scratch)
            keep = False
            try:
                if sc.lost_tail:
                    keep = _lost_tail(name, sc, base, random.Random(run_seed), exhaustive_limit, samples,
                                      keep_failures - len(figures.failures), figures)
                    continue
                rec = record(sc, base)
                figures.runs += 1
                if rec.problems:
                    figures.violations += len(rec.problems)
                    figures.failures.append(Failure(name, base, None, rec.problems))
                    keep = True
                promises = [h["t1"] for h in rec.history if h["ev"] in ("append", "reject") and h["t1"]]
                for state in states_of(rec.model, random.Random(run_seed), exhaustive_limit, samples, promises):
                    outcome = check(rec, state, base)
                    figures.states += 1
                    figures.acked += outcome.acked_checked
                    figures.lost += outcome.lost
                    if on_state is not None:
                        on_state(name, outcome)
                    if outcome.problems:
                        figures.violations += 1
                        if len(figures.failures) < keep_failures:
                            figures.failures.append(Failure(name, base, state, outcome.problems))
                            keep = True
            finally:
                if not keep:
                    shutil.rmtree(base, ignore_errors=True)
    return out


def _lost_tail(name: str, sc: Scenario, base: str, rng: random.Random, limit: int, samples: int, keep: int,
               figures: Figures) -> bool:
    """One run of the lost-tail operation (:mod:`.losttail`) into ``figures``; whether a failing
    state was kept under ``base``."""
    figures.runs += 1
    for outcome in losttail.run(sc, base, rng, limit, samples, max(0, keep)):
        figures.states += 1
        figures.acked += outcome.acked_checked
        figures.lost += outcome.lost
        if outcome.problems:
            figures.violations += 1
            if outcome.kept is not None:
                figures.failures.append(Failure(name, outcome.kept, outcome.loss.describe(), outcome.problems))
    return any(f.operation == name for f in figures.failures)


MUTANT_FILE = "mutant"  # in a kept run's folder: the broken engine it was recorded with


def replay(run_dir: str, state: CrashState, scratch: str, mutant: str | None = None) -> Outcome:
    """Rebuild and check one state of a kept run (the folder a failure names), with the engine
    it was recorded with (the mutant named in its folder, if any; ``mutant`` overrides)."""
    import os

    from .run import load_recorded

    marker = os.path.join(run_dir, MUTANT_FILE)
    if mutant is None and os.path.exists(marker):
        with open(marker, encoding="ascii") as f:
            mutant = f.read().strip()
    with applied(mutant) as broken:
        rec: Recorded = load_recorded(run_dir, broken.store or EventStore) if broken else load_recorded(run_dir)
        return check(rec, state, scratch)


def power_loss(folder: str, *, seed: int | None = None, runs: int = 1, exhaustive_limit: int = 600,
               samples: int = 150, operations: list[str] | None = None, io_stride: int = 1,
               mutant: str | None = None) -> Report:
    """``kroniko-ops torture --power-loss``: record every operation (or those named) ``runs``
    times in ``folder`` and check their crash states; the report's figures hold, per operation,
    the runs, crash states, acknowledged events checked, events lost and violations, and each
    failing state (or run) is an error finding with the command that rebuilds it. Then (unless
    ``io_stride`` is 0) the I/O-error sweeps: of the append path for append, batch and roll (every
    call site failed once, figures under ``append_io_errors``), and of the maintenance operations
    among them, failing every ``io_stride``-th file operation (figures under ``io_errors``).

    ``mutant`` names a broken engine of :mod:`kroniko_ops.harness.mutants`, run instead of the
    real one (in this process and the ones it starts), on its own operation unless ``operations``
    name others, without the I/O-error sweeps unless the mutant is one they catch: the report
    must then hold a violation."""
    import os
    import time

    if seed is None:
        seed = int(time.time()) % 1_000_000
    if mutant is not None and mutant not in MUTANTS:
        raise InvalidArgument(f"no mutant {mutant!r}; kroniko-ops torture --mutant list prints them")
    if mutant is not None and MUTANTS[mutant].operation == "torture" and not operations:
        raise InvalidArgument(f"the mutant {mutant} is one the kill harness catches: run kroniko-ops torture STORE "
                              f"--mutant {mutant} (without --power-loss), or name an --operation")
    names = operations or ([MUTANTS[mutant].operation] if mutant is not None else list(OPERATIONS))
    unknown = [n for n in names if n not in OPERATIONS]
    if unknown:
        raise InvalidArgument(f"unknown operation(s) {unknown}; choose from {sorted(OPERATIONS)}")
    os.makedirs(folder, exist_ok=True)
    report = Report("torture --power-loss", os.path.abspath(folder))
    with applied(mutant) as broken:
        figures = simulate({n: OPERATIONS[n] for n in names}, seed=seed, runs=runs, exhaustive_limit=exhaustive_limit,
                           samples=samples, scratch=folder, factory=broken.store if broken is not None else None)
        if io_stride and (broken is None or broken.io_sweep):
            _append_faults(names, folder, report)
    for name, f in figures.items():
        report.figures[name] = f.as_dict()
        for failure in f.failures:
            report.add("powerloss-violation", "error", failure.run_dir, failure.describe())
            if mutant is not None:  # so that the printed rebuild command replays it as it was recorded
                with open(os.path.join(failure.run_dir, MUTANT_FILE), "w", encoding="ascii") as out:
                    out.write(mutant)
    if io_stride and mutant is None:
        from .iofaults import io_sweep

        sweep = io_sweep({n: OPERATIONS[n] for n in names}, stride=io_stride, scratch=folder)
        report.figures["io_errors"] = {n: f.as_dict() for n, f in sweep.items()}
        for f in sweep.values():
            for failure in f.failures[:3]:
                report.add("io-error-damage", "error", folder, failure)
    report.figures["seed"] = seed
    report.figures["mutant"] = mutant
    report.figures["crash_states"] = sum(f.states for f in figures.values())
    report.figures["events_lost"] = sum(f.lost for f in figures.values())
    report.figures["violations"] = sum(f.violations for f in figures.values())
    return report.finish()


# The append path's I/O errors, swept at every call site (a power cut model cannot fail an
# fsync): for each operation, the shapes of :mod:`..scenarios` that take its path.
APPEND_FAULT_SHAPES = {"append": ("some-1", "some-3-pass", "reboot-2"), "batch": ("some-20",), "roll": ("roll-1",)}


def _append_faults(names: list[str], folder: str, report: Report) -> None:
    """Fail each file operation of those appends once (EIO or ENOSPC): every rule of
    :mod:`kroniko_ops.harness.faults` must hold; a broken one is an ``io-error-damage`` error."""
    from .. import scenarios
    from ..faults import fault_sweep

    wanted = [n for name in names for n in APPEND_FAULT_SHAPES.get(name, ())]
    if not wanted:
        return
    shapes = [s for s in scenarios.default_shapes() if s.name in wanted]
    work = tempfile.mkdtemp(prefix="kroniko-append-faults-", dir=folder)
    try:
        sweep = fault_sweep(shapes, work, per_site=True, cycle=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.figures["append_io_errors"] = {"cases": sweep.cases, "call_sites": len(sweep.sites),
                                          "violations": len(sweep.violations)}
    for label, violation in sweep.violations[:3]:
        report.add("io-error-damage", "error", folder, f"{label}: {violation.code}: {violation.message}")
