"""Several processes on one store: positions gap-free, batches contiguous, one winner per race,
a conditional counter never overshoots, and readers see the head only ever grow."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import engine_mp_workers as workers
import pytest
from engine_helpers import segments

from kroniko_ops import Event, EventStore, Query, QueryItem

JOIN_TIMEOUT = 120.0  # a guard against a hang, not a speed assertion
Job = tuple[Callable[..., None], tuple[Any, ...]]


def _run(jobs: list[Job]) -> dict[int, Any]:
    """Start ``target(path, worker, *rest, barrier, results)`` for each job in its own spawned
    process, all released by one barrier; return each worker's report. Every child is reaped
    (killed if it outlives the guard)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(args[0], w, *args[1:], barrier, results), daemon=True)
             for w, (target, args) in enumerate(jobs)]
    reports: dict[int, Any] = {}
    try:
        for p in procs:
            p.start()
        for _ in procs:
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
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return reports


def _check_batches(path: str, n: int, sizes: list[int], watchers: int = 0) -> None:
    """``n`` processes append batches of ``sizes`` at once (4 KiB segments, so they roll while
    racing), ``watchers`` more read the head meanwhile; check positions and contiguity."""
    EventStore(path, segment_bytes=4096).close()
    total = n * sum(sizes)
    jobs: list[Job] = [(workers.append_batches, (path, sizes)) for _ in range(n)]
    jobs += [(workers.watch_heads, (path, total)) for _ in range(watchers)]
    reports = _run(jobs)
    with EventStore(path) as store:
        events = list(store.read())
        assert store.head() == total
        assert [e.position for e in events] == list(range(1, total + 1))
        where = {e.id: e.position for e in events}
        assert len(where) == total
        for w in range(n):
            lasts = []
            for ids, last in reports[w]:
                got = [where[i] for i in ids]
                assert got == list(range(last - len(ids) + 1, last + 1)), f"worker {w} batch not contiguous: {got}"
                lasts.append(last)
            assert lasts == sorted(lasts), "one writer's appends are in the order it made them"
            mine = [(e.data["b"], e.data["i"]) for e in store.read(Query([QueryItem(tags=[f"w:{w}"])]))]
            assert mine == sorted(mine) and len(mine) == sum(sizes)
    assert len(segments(path)) > 3
    for w in range(n, n + watchers):
        heads, exact = reports[w]
        assert heads == sorted(heads), f"watcher {w} saw the head go back: {heads}"
        assert heads[-1] == total and exact


def test_concurrent_batches_are_gap_free_and_heads_only_grow(tmp_path: Path) -> None:
    _check_batches(str(tmp_path / "store"), 4, [1, 2, 3, 4, 1, 2, 5, 1], watchers=2)


@pytest.mark.soak
def test_soak_concurrent_batches(tmp_path: Path) -> None:
    _check_batches(str(tmp_path / "store"), 8, [1 + (k * 7) % 10 for k in range(60)], watchers=3)


def test_a_conditional_counter_never_overshoots(tmp_path: Path) -> None:
    path, limit, n = str(tmp_path / "store"), 12, 4
    with EventStore(path) as store:
        store.append(Event("SeatTaken", {"by": "other show"}, ["show:2"]))
    reports = _run([(workers.bounded_counter, (path, limit)) for _ in range(n)])
    won = sum(r[0] for r in reports.values())
    assert won == limit
    with EventStore(path) as store:
        seats = list(store.read(Query([QueryItem(types=["SeatTaken"], tags=["show:1"])])))
        assert len(seats) == limit
        assert store.head() == 1 + 2 * limit
        assert [e.position for e in store.read()] == list(range(1, store.head() + 1))
        by = [e.data["by"] for e in seats]
        assert sorted(by.count(w) for w in range(n)) == sorted(r[0] for r in reports.values())


def test_racing_for_the_first_event_has_exactly_one_winner_per_round(tmp_path: Path) -> None:
    _check_race(str(tmp_path / "store"), 6, 4)


@pytest.mark.soak
def test_soak_racing_for_the_first_event(tmp_path: Path) -> None:
    _check_race(str(tmp_path / "store"), 8, 60)


def _check_race(path: str, n: int, rounds: int) -> None:
    """``n`` processes race for the first event of a cart, ``rounds`` times; one winner each."""
    with EventStore(path) as store:
        store.append(Event("Noise", 0, ["cart:other"]))
    reports = _run([(workers.race_first_event, (path, rounds)) for _ in range(n)])
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
    reports = _run([(workers.open_new_and_append, (path,)) for _ in range(6)])
    assert sorted(reports.values()) == list(range(1, 7))
    with EventStore(path) as store:
        assert store.head() == 6
