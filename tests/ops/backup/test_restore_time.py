"""restore --to-time on folder backups and archives: the last batch committed at or before the
timestamp, on every batch boundary and between them; timestamps in any zone; bad ones refused
(exit 2, nothing written). The rule itself holds for any log (hypothesis)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore
from kroniko_ops.errors import InvalidArgument
from kroniko_ops.format import record as recfmt
from kroniko_ops.ops.backup import backup, restore
from kroniko_ops.ops.backup.pit import format_time, parse_time, position_at


def _store(path: str, batches: int) -> list[tuple[int, int]]:
    """A store of ``batches`` batches; ``(last position, commit time)`` of each."""
    with EventStore(path, durable=False, segment_bytes=4096) as s:
        for b in range(batches):
            s.append([Event("T", {"b": b, "k": k}) for k in range(1 + b % 3)])
        return [(e.position, e.commit_us) for e in s.read() if e.batch_end]


def _head(path: str) -> int:
    with EventStore(path, create=False) as s:
        return s.head()


def _expected(ends: list[tuple[int, int]], when: int) -> int:
    return max((end for end, t in ends if t <= when), default=0)


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "archive"])
def test_to_time_on_batch_boundaries(tmp_path: Path, archive: bool) -> None:
    src, bk = str(tmp_path / "src"), str(tmp_path / ("b.tar" if archive else "b"))
    ends = _store(src, 40)
    backup(src, bk, archive=archive, durable=False)
    picks = [ends[0], ends[7], ends[19], ends[-1]]
    for i, (end, t) in enumerate(picks):
        for when, label in ((t, "on"), (t - 1, "before")):
            target = str(tmp_path / f"r{i}-{label}")
            report = restore(bk, target, to_time=format_time(when), durable=False)
            assert report.exit_code == 0
            assert _head(target) == _expected(ends, when)
            if label == "on":
                assert _head(target) >= end
    early = restore(bk, str(tmp_path / "early"), to_time=format_time(ends[0][1] - 10**6), durable=False)
    assert early.head == 0 and _head(str(tmp_path / "early")) == 0
    late = restore(bk, str(tmp_path / "late"), to_time="2999-01-01T00:00:00Z", durable=False)
    assert late.head == ends[-1][0]


def test_to_time_takes_any_zone_and_a_fraction(tmp_path: Path) -> None:
    src, bk = str(tmp_path / "src"), str(tmp_path / "b")
    ends = _store(src, 12)
    backup(src, bk, durable=False)
    _end, t = ends[5]
    utc = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)
    paris = utc.astimezone(timezone(timedelta(hours=1))).isoformat()  # +01:00, with its microseconds
    assert restore(bk, str(tmp_path / "r"), to_time=paris, durable=False).head == _expected(ends, t)
    whole_seconds = utc.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert restore(bk, str(tmp_path / "s"), to_time=whole_seconds, durable=False).head == \
        _expected(ends, parse_time(whole_seconds))


@pytest.mark.parametrize("bad", ["2026-12-06T02:15:00", "yesterday", "2026-13-01T00:00:00Z", "2026-12-06"])
def test_bad_timestamps_are_refused_nothing_written(tmp_path: Path, bad: str) -> None:
    src, bk, target = str(tmp_path / "src"), str(tmp_path / "b"), str(tmp_path / "r")
    _store(src, 3)
    backup(src, bk, durable=False)
    with pytest.raises(InvalidArgument):
        restore(bk, target, to_time=bad)
    assert not os.path.exists(target)
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "kroniko-ops"), "restore", bk, target,
                           "--to-time", bad], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--to-time" in done.stderr
    assert not os.path.exists(target)


def test_to_time_and_to_position_together_are_refused(tmp_path: Path) -> None:
    src, bk = str(tmp_path / "src"), str(tmp_path / "b")
    ends = _store(src, 3)
    backup(src, bk, durable=False)
    with pytest.raises(InvalidArgument, match="not both"):
        restore(bk, str(tmp_path / "r"), to_position=ends[0][0], to_time="2999-01-01T00:00:00Z")


def _rec(position: int, commit: bool, time_us: int) -> recfmt.Record:
    return recfmt.Record(position, "", b"", b"", commit, b"", 0, 1, time_us)


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 5)), min_size=0, max_size=30),
       st.integers(0, 4), st.integers(-3, 200))
def test_position_at_is_the_last_batch_end_at_or_before(batches: list[tuple[int, int]], untimed: int,
                                                        when: int) -> None:
    """For any log: batches of 1-3 records whose commit times never decrease, the first
    ``untimed`` written before times were recorded."""
    recs, pos, t = [], 0, 10
    ends: list[tuple[int, int]] = []
    for i, (size, step) in enumerate(batches):
        t += step
        stamp = 0 if i < untimed else t
        for k in range(size):
            pos += 1
            recs.append(_rec(pos, k == size - 1, stamp))
        ends.append((pos, stamp))
    timed = [(e, s) for e, s in ends if s]
    first_untimed_only = any(not s for _e, s in ends) and not any(s <= when for _e, s in timed)
    if first_untimed_only:
        with pytest.raises(InvalidArgument, match="before commit times were recorded"):
            position_at([recs], iter, when)
        return
    assert position_at([recs[:7], recs[7:]], iter, when) == max((e for e, s in timed if s <= when), default=0)
