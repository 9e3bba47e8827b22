"""A verdict survives a reader that closes stdout (issue 16 item 8): ``kroniko-ops fsck DAMAGED |
head -0`` under ``set -o pipefail`` must not exit 0. The command exits with the verdict it was
printing (4 for damage), or 141 (128 + SIGPIPE) when it had none, and prints no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kroniko_ops import Event, EventStore, backup

CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]


def _closed_stdout(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout a pipe whose reader is already gone (every write fails: EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*CLI, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)


def _store(path: str) -> str:
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for b in range(20):
            store.append([Event("T", {"b": b, "pad": "x" * 300}, [f"t:{b}"]) for _ in range(3)])
    return path


def _damage_a_sealed_segment(path: str) -> None:
    seg = Path(path, "log", "000000000001.seg")
    data = bytearray(seg.read_bytes())
    data[300] ^= 0x01
    seg.write_bytes(bytes(data))


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_fsck_of_a_damaged_store_keeps_exit_4(tmp_path: Path, as_json: bool) -> None:
    path = _store(str(tmp_path / "store"))
    _damage_a_sealed_segment(path)
    done = _closed_stdout(["fsck", path] + (["--json"] if as_json else []))
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def test_fsck_of_a_clean_store_still_says_clean(tmp_path: Path) -> None:
    path = _store(str(tmp_path / "store"))
    assert _closed_stdout(["fsck", path]).returncode == 0


def test_verify_backup_of_a_damaged_backup_keeps_exit_4(tmp_path: Path) -> None:
    path = _store(str(tmp_path / "store"))
    dest = str(tmp_path / "backup")
    backup(path, dest)
    _damage_a_sealed_segment(dest)
    done = _closed_stdout(["verify-backup", dest])
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def test_a_command_without_a_verdict_exits_141(tmp_path: Path) -> None:
    path = _store(str(tmp_path / "store"))
    done = _closed_stdout(["read", path])
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
