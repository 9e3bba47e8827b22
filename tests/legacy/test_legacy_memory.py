"""Migration memory does not grow with the events it copies: only a fingerprint per id does."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from kroniko_ops.legacy.migrate import migrate
from kroniko_ops.legacy.synth import write_shop_store


def _peak(root: str, target: str) -> int:
    tracemalloc.start()
    try:
        migrate(root, target, durable=False, batch_events=200, segment_bytes=256 * 1024)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_per_event_is_a_fingerprint_not_the_event(tmp_path: Path) -> None:
    # The batch and the active segment's offsets are constant caps; small ones make a small store
    # already show the asymptotic growth, which must be the id fingerprints alone (~75-100 bytes,
    # plus the new store's index terms for the values that keep appearing, such as cart ids).
    peaks = {}
    for n in (1000, 4000):
        root = str(tmp_path / f"legacy-{n}")
        write_shop_store(root, n, seed=n)
        peaks[n] = _peak(root, str(tmp_path / f"new-{n}"))
    per_event = (peaks[4000] - peaks[1000]) / 3000
    assert per_event < 250, (peaks, per_event)


_CHILD = """
import resource, sys
from kroniko_ops.legacy.migrate import migrate
report = migrate(sys.argv[1], sys.argv[2], quiet=False)
print(report.head, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, report.figures["events_per_second"])
"""


@pytest.mark.soak
def test_a_million_events_migrate_in_bounded_memory(tmp_path: Path) -> None:
    n = int(os.environ.get("KRONIKO_SOAK_EVENTS", "1000000"))
    root = str(tmp_path / "legacy")
    write_shop_store(root, n, seed=1)
    out = subprocess.run([sys.executable, "-c", _CHILD, root, str(tmp_path / "new")], check=True,
                         capture_output=True, text=True, timeout=3600).stdout.split()
    head, max_rss_kb = int(out[0]), int(out[1])
    assert head == n
    assert max_rss_kb * 1024 < 120 * 1024 * 1024 + n * 250, (max_rss_kb, out)
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >= max_rss_kb
