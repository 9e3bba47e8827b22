"""replicate into S3 and a folder, then verify-backup and restore from it: every event back,
byte for byte, and each byte appended uploaded once."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from replica_helpers import cli, contents, fill, findings, objects, summary

from kroniko_ops import EventStore
from kroniko_ops.ops.replicate import replicate, restore, verify_backup
from kroniko_ops.ops.replicate.manifest import part_range


def _log_bytes(store: str) -> int:
    log = os.path.join(store, "log")
    # The records' bytes: the active segment is preallocated, its zeros are no log.
    return sum(len(Path(log, n).read_bytes().rstrip(b"\0")) for n in os.listdir(log) if n.endswith(".seg"))


def test_replicate_verify_restore_every_event(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 120)
    report = replicate(src, url, once=True)
    assert report.exit_code == 0 and report.head == contents(src)[-1][0]
    fill(src, 60, start=120)  # the active segment grows, new segments seal
    again = replicate(src, url, once=True)
    assert again.head == contents(src)[-1][0]
    checked = verify_backup(url)
    assert checked.exit_code == 0, [f.message for f in checked.problems]
    restored = restore(url, str(tmp_path / "restored"))
    assert restored.exit_code == 0, [f.message for f in restored.problems]
    assert contents(str(tmp_path / "restored")) == contents(src)
    # Nothing went up twice: the segment ranges never overlap, and the bytes uploaded are the
    # log's bytes (plus FORMAT and the .idx files).
    ranges: dict[str, list[tuple[int, int]]] = {}
    for key in objects(url):
        r = part_range(key)
        if r is not None:
            ranges.setdefault(r[0], []).append((r[1], r[2]))
    for spans in ranges.values():
        spans.sort()
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)), spans
    shipped = report.figures["uploaded_bytes"] + again.figures["uploaded_bytes"]
    assert sum(e - s for spans in ranges.values() for s, e in spans) == _log_bytes(src)
    assert shipped < _log_bytes(src) * 1.2


def test_replica_restores_into_a_store_that_appends_on(url: str, tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    fill(src, 30)
    replicate(src, url, once=True)
    restore(url, dst)
    fill(dst, 5, start=30)
    fill(src, 5, start=30)
    assert [row[:4] for row in contents(dst)] == [row[:4] for row in contents(src)]


def test_cli_replicate_verify_restore(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 40)
    done = cli("replicate", src, url, "--once", "--json")
    assert done.returncode == 0, done.stderr
    assert summary(done)["head"] == contents(src)[-1][0]
    checked = cli("verify-backup", url, "--json")
    assert checked.returncode == 0, checked.stdout
    notes = [f for f in findings(checked) if f["code"] == "replica-manifest"]
    assert notes and notes[-1]["position"] == contents(src)[-1][0]
    restored = cli("restore", url, str(tmp_path / "r"), "--json")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert contents(str(tmp_path / "r")) == contents(src)


def test_backup_to_url_is_one_snapshot_into_an_empty_prefix(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 25)
    if not url.startswith("s3://"):
        url = url  # a folder path is a folder backup: covered by the backup tests
        return
    done = cli("backup", src, url, "--json")
    assert done.returncode == 0, done.stderr
    assert cli("verify-backup", url).returncode == 0
    again = cli("backup", src, url)
    assert again.returncode == 2 and "not empty" in again.stderr
    restored = cli("restore", url, str(tmp_path / "r"))
    assert restored.returncode == 0, restored.stdout
    assert contents(str(tmp_path / "r")) == contents(src)
    assert cli("backup", src, url + "-x", "--archive").returncode == 2


def test_empty_store_replicates_and_restores(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    EventStore(src).close()
    assert replicate(src, url, once=True).head == 0
    assert verify_backup(url).exit_code == 0
    assert restore(url, str(tmp_path / "r")).head == 0
