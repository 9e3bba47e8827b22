"""One batch of 100,000 small events with only 64 file descriptors: committed whole, read back,
indexed, with memory bounded (the process's peak RSS grows well under 200 MB)."""

from __future__ import annotations

from pathlib import Path

import engine_mp_workers as workers
from engine_helpers import run_child

from kroniko_ops import EventStore, Query, QueryItem

N = 100_000


def test_a_batch_of_100k_small_events_under_low_limits(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    report = run_child(workers.big_batch_low_limits, path, N)
    assert not isinstance(report, str), report
    last, count, tagged, grown = report
    assert (last, count, tagged) == (N, N, N // 100)
    assert grown < 200 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.0f} MiB"
    with EventStore(path, durable=False) as store:
        assert store.head() == N
        assert [e.data for e in store.read(Query([QueryItem(tags=["t:42"])]), limit=3)] == [42, 142, 242]
        assert store.index.checkpoint()[0] == N  # indexed when the writer closed
