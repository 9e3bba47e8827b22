"""Point-in-time restores from a replica: on batch boundaries by position and by commit time,
a position inside a batch refused (exit 2, nothing written), and a URL naming one manifest of
the history restores that state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from replica_helpers import cli, contents, fill

from kroniko_ops import compact
from kroniko_ops.errors import InvalidArgument
from kroniko_ops.ops.backup.pit import format_time
from kroniko_ops.ops.replicate import replicate, restore


def test_restore_to_position_and_time_on_batch_boundaries(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 30)
    replicate(src, url, once=True)
    fill(src, 30, start=30)  # a second round: the cut may fall in any range of any segment
    replicate(src, url, once=True)
    rows = contents(src)
    ends = [(r[0], r[6]) for r in rows if r[5]]
    for i, (end, t) in enumerate([ends[0], ends[31], ends[-1]]):
        by_pos = str(tmp_path / f"p{i}")
        assert restore(url, by_pos, to_position=end, durable=False).head == end
        assert contents(by_pos) == [r for r in rows if r[0] <= end]
        by_time = str(tmp_path / f"t{i}")
        expected = max(e for e, s in ends if s <= t)
        assert restore(url, by_time, to_time=format_time(t), durable=False).head == expected
        assert contents(by_time) == [r for r in rows if r[0] <= expected]
    inside = next(r[0] for r in rows if not r[5])
    with pytest.raises(InvalidArgument, match="inside a batch"):
        restore(url, str(tmp_path / "inside"), to_position=inside)
    assert not os.path.exists(tmp_path / "inside")
    done = cli("restore", url, str(tmp_path / "cli"), "--to-time", format_time(ends[13][1]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert contents(str(tmp_path / "cli"))[-1][0] == max(e for e, s in ends if s <= ends[13][1])


def test_a_manifest_url_restores_that_state(url: str, tmp_path: Path) -> None:
    """Compaction makes the replica keep the manifest before it (its objects differ): that
    manifest, named in the URL, restores and verifies on its own."""
    src = str(tmp_path / "src")
    fill(src, 40)
    old = replicate(src, url, once=True)
    compact(src, durable=False)
    fill(src, 5, start=40)
    replicate(src, url, once=True)
    one = f"{url.rstrip('/')}/manifests/{old.figures['manifest']:012d}.json"
    assert cli("verify-backup", one).returncode == 0
    assert restore(one, str(tmp_path / "old")).head == old.head
    assert contents(str(tmp_path / "old")) == [r for r in contents(src) if r[0] <= old.head]
