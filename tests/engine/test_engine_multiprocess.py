"""Several processes on one store: positions gap-free, batches contiguous, one winner per race."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import engine_mp_workers as workers
import pytest

from kroniko_ops import Event, EventStore, Query, QueryItem

JOIN_TIMEOUT = 120.0  # a guard against a hang, not a speed assertion


def _run(target: Callable[..., None], n: int, *args: Any) -> dict[int, Any]:
    """Run ``target(path..., worker, ..., barrier, results)`` in ``n`` spawned processes; return
    each worker's report. Kills every child that outlives the guard."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(args[0], w, *args[1:], barrier, results), daemon=True)
             for w in range(n)]
    reports: dict[int, Any] = {}
    try:
        for p in procs:
            p.start()
        for _ in range(n):
            worker, report = results.get(timeout=JOIN_TIMEOUT)
            reports[worker] = report
        for p in procs:
            p.join(JOIN_TIMEOUT)
    except queue.Empty:
        pytest.fail(f"workers did not report within {JOIN_TIMEOUT}s: got {sorted(reports)}")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
    for w, report in reports.items():
        assert not isinstance(report, str), f"worker {w} failed:\n{report}"
    assert [p.exitcode for p in procs] == [0] * n
    return reports


def test_concurrent_unconditional_batches_are_gap_free_and_contiguous(tmp_path: Path) -> None:
    _check_batches(str(tmp_path / "store"), 4, [1, 2, 3, 4, 1, 2])


@pytest.mark.soak
def test_soak_concurrent_batches(tmp_path: Path) -> None:
    _check_batches(str(tmp_path / "store"), 8, [1 + (k * 7) % 10 for k in range(60)])


def _check_batches(path: str, n: int, sizes: list[int]) -> None:
    """``n`` processes append batches of ``sizes`` at once; check positions and contiguity."""
    EventStore(path).close()
    reports = _run(workers.append_batches, n, path, sizes)
    with EventStore(path) as store:
        events = list(store.read())
        head = store.head()
    total = sum(len(ids) for rep in reports.values() for ids, _ in rep)
    assert total == n * sum(sizes)  # every worker wrote all its batches
    assert head == total
    assert [e.position for e in events] == list(range(1, total + 1))
    where = {e.id: e.position for e in events}
    assert len(where) == total
    for w, rep in reports.items():
        lasts = []
        for ids, last in rep:
            got = [where[i] for i in ids]
            assert got == list(range(last - len(ids) + 1, last + 1)), f"worker {w} batch not contiguous: {got}"
            lasts.append(last)
        assert lasts == sorted(lasts), "one writer's appends are in the order it made them"
    # Each worker's events are readable by its tag, in its own order.
    with EventStore(path) as store:
        for w in range(n):
            mine = [(e.data["b"], e.data["i"]) for e in store.read(Query([QueryItem(tags=[f"w:{w}"])]))]
            assert mine == sorted(mine)


def test_racing_for_the_first_event_has_exactly_one_winner_per_round(tmp_path: Path) -> None:
    _check_race(str(tmp_path / "store"), 8, 4)


@pytest.mark.soak
def test_soak_racing_for_the_first_event(tmp_path: Path) -> None:
    _check_race(str(tmp_path / "store"), 8, 60)


def _check_race(path: str, n: int, rounds: int) -> None:
    """``n`` processes race for the first event of a cart, ``rounds`` times; one winner each."""
    with EventStore(path) as store:
        store.append(Event("Noise", 0, ["cart:other"]))
    reports = _run(workers.race_first_event, n, path, rounds)
    with EventStore(path) as store:
        for r in range(rounds):
            outcomes = [(w, o, p) for w, rep in reports.items() for (rr, o, p) in rep if rr == r]
            assert len(outcomes) == n
            winners = [(w, p) for w, o, p in outcomes if o == "won"]
            assert len(winners) == 1, f"round {r}: {outcomes}"
            (winner, pos), = winners
            stored = list(store.read(Query([QueryItem(tags=[f"cart:{r}"])])))
            assert [(e.position, e.data["by"]) for e in stored] == [(pos, winner)]
            for w, o, p in outcomes:
                if o == "conflict":
                    assert p == pos, f"round {r}: worker {w} conflicted at {p}, the winner is at {pos}"
        assert store.head() == 1 + rounds


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    # The first to get the lock creates the layout (FORMAT last); the others must wait for it,
    # not mistake a half-made layout for a damaged store.
    path = str(tmp_path / "new")
    reports = _run(workers.open_new_and_append, 8, path)
    assert sorted(reports.values()) == list(range(1, 9))
    with EventStore(path) as store:
        assert store.head() == 8
