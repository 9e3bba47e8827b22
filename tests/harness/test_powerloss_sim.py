"""The power-loss simulator: the engine keeps every acknowledged append and every event a reader
was shown in every crash state of every covered operation, and deliberately broken engines are
caught, each with the crash state that shows it."""

from __future__ import annotations

import os
import random
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops import EventStore, fileio
from kroniko_ops.harness.powerloss.model import CrashState, Model, parse_state, sampled, single_faults
from kroniko_ops.harness.powerloss.run import ACTIONS, STORE, Action
from kroniko_ops.harness.powerloss.simulate import OPERATIONS, replay, simulate
from kroniko_ops.writer import Writer

# -- the engine, every operation, CI size -------------------------------------------------------


def test_no_acknowledged_or_shown_event_is_lost_in_any_crash_state(tmp_path: os.PathLike[str]) -> None:
    figures = simulate(OPERATIONS, seed=20261201, runs=1, exhaustive_limit=260, samples=60, scratch=str(tmp_path))
    assert set(figures) >= {"append", "batch", "concurrent", "roll", "compact", "backup", "restore", "reindex",
                            "recover", "migrate"}
    for name, f in figures.items():
        print(f"power-loss {name}: {f.as_dict()}")
        assert f.runs == 1 and f.states > 100, name
        assert f.acked > 0 or name == "migrate", name
        assert (f.lost, f.violations) == (0, 0), "\n".join(x.describe() for x in f.failures)
    assert sum(f.states for f in figures.values()) >= 2000


# -- broken engines are caught ----------------------------------------------------------------


class NoCommitFsync(EventStore):
    """Acknowledges appends without the fsync that covers them."""

    def _sync_and_advance(self, fd: int | None, tail: object) -> None:
        self.synced.advance(tail.position, tail.segment, tail.end, tail.chain)  # type: ignore[attr-defined]


class AdvanceBeforeFsync(EventStore):
    """Shows readers a position before it is fsynced (the window made wide enough to be hit)."""

    def _sync_and_advance(self, fd: int | None, tail: object) -> None:
        self.synced.advance(tail.position, tail.segment, tail.end, tail.chain)  # type: ignore[attr-defined]
        time.sleep(0.005)
        if fd is not None:
            self.syncer.file(fd)


class _NoDirFsyncWriter(Writer):
    def create_next(self, first: int, spare: str) -> None:
        fileio.rename(spare, os.path.join(self.layout.log_dir, f"{first:012d}.seg"))  # log/ is not fsynced


class _FileSizeWriter(Writer):
    def quick_tail(self):  # type: ignore[no-untyped-def]
        if self.tail is not None and self.fd is not None and self.tail.segment == self.first and not self.rolled():
            # "The file is as long as when this handle last wrote, so nothing was written since":
            # true of a growing file, false of a preallocated one, whose size never changes.
            return self.tail
        return super().quick_tail()


class TailFromFileSize(EventStore):
    """Tells whether other writers appended from the file's size instead of the bytes at its
    tail (it never sees them, and writes over their records)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._writer.__class__ = _FileSizeWriter


class NewSegmentWithoutFolderFsync(EventStore):
    """Rolls to a new segment without making its name (and the sealed index's) durable."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._writer.__class__ = _NoDirFsyncWriter


def _compact_publishing_unsynced_packs(root: str) -> None:
    from kroniko_ops import compact

    compact(os.path.join(root, STORE), durable=False)  # packs renamed into place before any fsync


ACTIONS["compact-unsynced"] = Action(ACTIONS["compact"].prepare, _compact_publishing_unsynced_packs,
                                     ACTIONS["compact"].verify)
OPERATIONS_FOR_MUTANTS = {**OPERATIONS, "compact-unsynced": replace(OPERATIONS["compact"], action="compact-unsynced")}


@pytest.mark.parametrize(("factory", "operation"), [
    (NoCommitFsync, "append"),
    (AdvanceBeforeFsync, "concurrent"),
    (NewSegmentWithoutFolderFsync, "roll"),
    (TailFromFileSize, "concurrent"),
    (EventStore, "compact-unsynced"),
])
def test_a_broken_engine_is_caught_with_the_state_that_shows_it(tmp_path: os.PathLike[str], factory: type,
                                                                 operation: str) -> None:
    ops = {operation: OPERATIONS_FOR_MUTANTS[operation]}
    if factory is AdvanceBeforeFsync:  # more readers, so that one reads inside the widened window
        ops = {operation: replace(OPERATIONS[operation], readers=3, appends=8)}
    figures = simulate(ops, seed=7, runs=1, exhaustive_limit=400, samples=100, factory=factory,
                       scratch=str(tmp_path))[operation]
    assert figures.violations > 0, figures.as_dict()
    first = figures.failures[0]
    print(f"{factory.__name__} caught:\n{first.describe()}")
    assert "--state" in first.describe() and first.problems
    again = replay(first.run_dir, parse_state(first.state.describe()), str(tmp_path / "replay"))
    assert again.problems, "replaying the reported state must show the same damage"


# -- the crash model itself ------------------------------------------------------------------


def _op(kind: str, path: str, t: int, **kw: object) -> dict:
    return {"op": kind, "path": f"/r/{path}", "t0": t * 10, "t1": t * 10 + 5, **kw}


@st.composite
def runs(draw: st.DrawFn) -> list[dict]:
    """A file created, written in pieces, with fsyncs and folder fsyncs sprinkled in."""
    ops, t, size = [_op("create", "d/f", 0)], 1, 0
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["write", "write", "fsync", "fsync_dir"]))
        if kind == "write":
            data = draw(st.binary(min_size=1, max_size=1500))
            ops.append(_op("write", "d/f", t, offset=size, data=data))
            size += len(data)
        elif kind == "fsync":
            ops.append(_op("fdatasync", "d/f", t))
        else:
            ops.append(_op("fsync_dir", "d", t))
        t += 1
    return ops


@given(runs(), st.integers(0, 2**32))
@settings(max_examples=150, deadline=None)
def test_a_state_keeps_every_durable_change_and_drops_only_volatile_ones(ops: list[dict], seed: int) -> None:
    model = Model.build(ops, "/r", set())
    rng = random.Random(seed)
    for state in [*(s for c in range(len(ops) + 1) for s in single_faults(model, c)), sampled(model, rng)]:
        volatile = {c.i for c in model.volatile(state.cut)}
        assert state.dropped <= volatile
        if state.torn is not None:
            assert state.torn[0] in volatile
        for c in model.changes[: state.cut]:
            if c.durable_at is not None and c.durable_at < state.cut:
                assert c.i not in volatile
                assert c.op["t1"] <= model.changes[c.durable_at].op["t0"]


def test_a_write_is_durable_only_after_a_sync_that_started_after_it() -> None:
    ops = [_op("create", "d/f", 0), _op("write", "d/f", 1, offset=0, data=b"x"), _op("fdatasync", "d/f", 2),
           _op("write", "d/f", 3, offset=1, data=b"y")]
    ops[2]["t0"] = ops[1]["t1"] - 1  # started before the write finished: covers nothing
    model = Model.build(ops, "/r", set())
    assert [c.i for c in model.volatile(4)] == [0, 1, 3]
    ops[2]["t0"] = ops[1]["t1"]
    model = Model.build(ops, "/r", set())
    assert [c.i for c in model.volatile(4)] == [0, 3]  # the create still needs its folder's fsync


def test_a_state_description_round_trips() -> None:
    state = CrashState(12, frozenset({3, 5}), (7, 512), "none")
    assert parse_state(state.describe()) == state


# -- the command line ------------------------------------------------------------------------


def test_torture_power_loss_prints_the_figures_per_operation(tmp_path: os.PathLike[str]) -> None:
    import orjson
    from click.testing import CliRunner

    from kroniko_ops.cli import cli

    args = ["torture", str(tmp_path / "pl"), "--power-loss", "--operation", "batch", "--states", "40", "--samples",
            "5", "--seed", "3"]
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.stdout.splitlines()[-1])
    assert summary["kind"] == "summary" and summary["exit_code"] == 0
    assert summary["batch"]["crash_states"] >= 40 and summary["batch"]["events_lost"] == 0
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0 and "batch" in text.stdout and "0 events lost, 0 violations" in text.stdout
    bad = CliRunner().invoke(cli, ["torture", str(tmp_path / "pl"), "--power-loss", "--operation", "fly"])
    assert bad.exit_code == 2 and "unknown operation" in bad.stderr
