"""The seed's race as a named test: 8 processes, 20 rounds, exactly one winner per round."""

from __future__ import annotations

import os

from kroniko_ops import EventStore, Query, QueryItem
from kroniko_ops.harness.race import run_race
from kroniko_ops.harness.verify import check_store
from kroniko_ops.harness.worker import context, create_store
from kroniko_ops.harness.workload import Workload


def test_seed_race_first_item_added(tmp_path) -> None:
    """Each round, 8 spawned processes read and then append "the first ItemAdded for cart X",
    guarded by overlapping but different conditions (type+tag; tag only; two items). Exactly one
    wins each round; the rest are rejected or saw the winner in their read; the whole history,
    every read's result included, passes the checker."""
    path = os.path.join(tmp_path, "store")
    create_store(path, Workload((), segment_bytes=4096))
    result = run_race(path, context("spawn"), processes=8, rounds=20)
    assert [len(w) for w in result.winners] == [1] * 20, result.winners
    assert result.rejected + result.skipped == 7 * 20
    assert result.rejected >= 7 * 10  # in even rounds all 8 read before any appends: 7 rejections each
    with EventStore(path, create=False) as s:  # 4 KiB segments: the race rolls several
        for r in range(20):
            firsts = list(s.read(Query([QueryItem(types=["ItemAdded"], tags=[f"cart:{r}"])])))
            assert [e.id for e in firsts] == result.winners[r]
    violations = check_store(path, result.history)
    assert not violations, "\n".join(v.render(result.history.t0) for v in violations)
