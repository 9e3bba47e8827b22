"""A full disk during recover, reindex and backup --archive (issue 16 items 9 and 11): exit 8
with a message that says so, never a traceback and never exit 1 (fsck's "all repaired"); the
store checks clean once space is freed.

Exercised for real: the store lives on a small tmpfs mounted for the test (root only; skipped
otherwise) that is then filled with a file, so SQLite and the tar stream meet the kernel's own
ENOSPC; nothing is injected."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kroniko_ops import Event, EventStore, fsck

CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_full_disk_exits_8_with_a_message(small_disk: Path) -> None:
    store = str(small_disk / "store")
    # Segments small enough that the preallocated ones (each written at its full size) fit the disk,
    # with room to spare: a store that itself fills the disk leaves no room for the filler file.
    with EventStore(store, durable=False, segment_bytes=256 * 1024) as s:
        for b in range(20):
            s.append([Event("T", {"b": b, "pad": "x" * 200}, [f"t:{b}-{k}", f"u:{k % 7}"]) for k in range(50)])
    filler = _fill(small_disk)
    for args in (["reindex", store], ["recover", store], ["backup", store, str(small_disk / "b.tar"), "--archive"]):
        done = _run(*args)
        assert done.returncode == 8, (args, done.stderr)
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, (args, done.stderr)
        assert "disk is full" in done.stderr or "No space left" in done.stderr, (args, done.stderr)
    # Nothing half-written is left, and once space is freed the store is whole.
    assert not any(n.startswith(".tmp-") for n in os.listdir(small_disk))
    filler.unlink()
    assert _run("reindex", store).returncode == 0
    assert fsck(store).exit_code == 0
