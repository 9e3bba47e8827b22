"""The power-loss simulator: the engine keeps every acknowledged append and every event a reader
was shown in every crash state of every covered operation, and deliberately broken engines are
caught, each with the crash state that shows it."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops.harness.mutants import applied
from kroniko_ops.harness.powerloss import losttail, materialize
from kroniko_ops.harness.powerloss.model import CrashState, Model, parse_state, sampled, single_faults
from kroniko_ops.harness.powerloss.simulate import OPERATIONS, replay, simulate
from kroniko_ops.harness.powerloss.trace import trace_problems

# -- the engine, every operation, CI size -------------------------------------------------------


def test_no_acknowledged_or_shown_event_is_lost_in_any_crash_state(sweep_dir: str) -> None:
    """Every operation, CI size: no state loses an acknowledged, shown or conflicting event, no
    check of a state or of a run finds anything (the model does not depend on the disk below:
    the folder is in RAM when it can be)."""
    recorded = {name: sc for name, sc in OPERATIONS.items() if not sc.lost_tail}  # lost-tail: its own test below
    figures = simulate(recorded, seed=20261201, runs=1, exhaustive_limit=260, samples=60, scratch=sweep_dir)
    assert set(figures) >= {"append", "batch", "concurrent", "roll", "compact", "backup", "restore", "reindex",
                            "recover", "migrate"}
    for name, f in figures.items():
        print(f"power-loss {name}: {f.as_dict()}")
        assert f.runs == 1 and f.states > 100, name
        assert f.acked > 0 or name == "migrate", name
        assert (f.lost, f.violations) == (0, 0), "\n".join(x.describe() for x in f.failures)
    assert sum(f.states for f in figures.values()) >= 2000


def test_a_disk_that_lost_acknowledged_records_is_named_and_salvaged(sweep_dir: str) -> None:
    """lost-tail, CI size (each state runs fsck --repair --accept-loss, which waits for a torn tail
    to settle: about 0.3 s a state): every read raises StoreCorrupted naming fsck or returns what
    was acknowledged, head() names no lost position, fsck salvages exactly the lost positions, and
    the handle open across the cut appends after what was kept."""
    figures = simulate({"lost-tail": OPERATIONS["lost-tail"]}, seed=20261201, exhaustive_limit=8, samples=4,
                       scratch=sweep_dir)["lost-tail"]
    print(f"power-loss lost-tail: {figures.as_dict()}")
    assert figures.runs == 1 and figures.states == 12 and figures.acked > 0
    assert (figures.lost, figures.violations) == (0, 0), "\n".join(x.describe() for x in figures.failures)


def test_the_losses_cover_the_end_the_middle_and_a_file_cut_short() -> None:
    """The drawn losses: zeros at the end of the records and in between (records after them
    intact), and files cut short, from the seed alone."""
    lay = losttail._Layout("log/000000000005.seg", {p: ((p - 5) * 100, (p - 4) * 100) for p in range(5, 15)},
                           [(5, 6), (7, 7), (8, 10), (11, 14)], 1000)
    draw = list(losttail.losses(lay, random.Random(1), 100, 30))
    assert draw == list(losttail.losses(lay, random.Random(1), 100, 30))
    assert {loss.kind for loss in draw} == {"zero", "cut"}
    assert any(loss.kind == "zero" and loss.hi < 1000 for loss in draw)  # a hole with records after it
    assert any(loss.kind == "zero" and loss.hi == 1000 and loss.lo % 100 for loss in draw)  # part of a record
    assert len(list(losttail.losses(lay, random.Random(1), 5, 0))) == 5


# -- broken engines are caught ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["no-log-fsync", "synced-before-fsync", "roll-no-dir-fsync", "compact-no-fsync",
                                  "index-ahead-unchecked", "tail-from-file-size"])
def test_a_broken_engine_is_caught_with_the_state_that_shows_it(sweep_dir: str, name: str) -> None:
    """Each state-level finding names the state, and replaying that state alone (with the same
    broken engine) shows the same damage."""
    with applied(name) as mutant:
        assert mutant is not None
        figures = simulate({mutant.operation: OPERATIONS[mutant.operation]}, seed=7, runs=1, exhaustive_limit=300,
                           samples=60, factory=mutant.store, scratch=sweep_dir)[mutant.operation]
        assert figures.violations > 0, figures.as_dict()
        first = next(f for f in figures.failures if f.state is not None)
        print(f"{name} caught:\n{first.describe()}")
        assert "--state" in first.describe() and first.problems
    again = replay(first.run_dir, parse_state(first.state.describe()), os.path.join(sweep_dir, "replay"), name)
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


def test_a_folder_renamed_whole_takes_its_files_and_needs_each_name_synced(tmp_path) -> None:
    """A store built under a temp name and published by renaming the folder: the published name
    holds the files; a file whose name in the folder was not fsynced before the rename may be
    lost (and the run's trace check says so), and so is everything in a subfolder whose own
    name was lost."""
    ops = [_op("mkdir", "tmp", 0), _op("mkdir", "tmp/log", 1), _op("create", "tmp/log/s", 2),
           _op("write", "tmp/log/s", 3, offset=0, data=b"abc"), _op("fdatasync", "tmp/log/s", 4),
           _op("fsync_dir", "tmp/log", 5), _op("fsync_dir", "tmp", 6), _op("create", "tmp/F", 7),
           _op("rename", "final", 8, src="/r/tmp"), _op("fsync_dir", ".", 9)]
    model = Model.build(ops, "/r", set())
    assert {c.i for c in model.changes if c.durable_at is not None} == {0, 1, 2, 3, 8}
    (tmp_path / materialize.SNAPSHOT).mkdir()

    def build(state: CrashState) -> set[str]:
        dest = tmp_path / f"s{state.cut}-{sorted(state.dropped)}"
        materialize.build(model, state, str(tmp_path), str(dest), [])
        return {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}

    assert build(CrashState(len(ops))) == {"final/log/s", "final/F"}
    assert build(CrashState(len(ops), frozenset({7}))) == {"final/log/s"}
    assert build(CrashState(5, frozenset({1}))) == set()  # tmp/log's name lost: its file with it
    assert trace_problems(model, []) == [
        "final/F was published (rename at change 8) before its name was made durable (no fsync of its folder "
        "after change 7)"]


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
