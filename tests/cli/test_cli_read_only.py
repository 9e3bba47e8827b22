"""A user who may read a store but not write it (issue 16 item 5): as ``nobody``, on a store
owned by root with files 644 and folders 755, ``head``, ``read``, ``stats``, ``fsck`` (without
--repair), ``backup`` and ``verify-backup`` work; what cannot be checked read-only (the index,
whose WAL needs its -shm written) is an ``info`` finding, never damage. Before, every one of
them but verify-backup exited 8 ("opening locks/synced failed: Permission denied") and fsck
reported ``index-corrupt`` on a healthy store.

The commands run as ``nobody`` through ``setpriv`` (root only; skipped otherwise)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kroniko_ops import Event, EventStore, fsck

CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]
EVENTS = 90


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Path]:
    """A folder every user may enter (pytest's own temp folder is private to root)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running commands as nobody needs root and setpriv")
    folder = Path(tempfile.mkdtemp(prefix="kroniko-ro-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _store(world: Path) -> str:
    path = str(world / "store")
    with EventStore(path, segment_bytes=4096) as store:
        for b in range(EVENTS // 3):
            store.append([Event("T", {"b": b, "pad": "x" * 200}, [f"t:{b}", f"u:{b % 3}"],
                                {"causation_id": None}) for _ in range(3)])
    for folder, _dirs, names in os.walk(path):
        os.chmod(folder, 0o755)
        for n in names:
            os.chmod(os.path.join(folder, n), 0o644)
    return path


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *CLI, *args],
                          capture_output=True, text=True, timeout=120, cwd="/")


def _check_reads(path: str, outbox: Path) -> list[dict]:
    done = _as_nobody("head", path)
    assert (done.returncode, done.stdout.strip()) == (0, str(EVENTS)), done.stderr
    done = _as_nobody("read", path, "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(ln)["position"] for ln in done.stdout.splitlines() if '"event"' in ln] == list(
        range(1, EVENTS + 1))
    done = _as_nobody("read", path, "--tag", "u:1", "--json")
    assert done.returncode == 0, done.stderr
    got = [json.loads(ln)["position"] for ln in done.stdout.splitlines() if '"event"' in ln]
    assert got == [p for p in range(1, EVENTS + 1) if ((p - 1) // 3) % 3 == 1]
    done = _as_nobody("stats", path, "--json")
    assert done.returncode == 0, done.stderr
    findings = []
    for level in ([], ["--quick"], ["--refs-only"]):
        done = _as_nobody("fsck", path, "--json", *level)
        assert done.returncode == 0, (level, done.stdout, done.stderr)
        lines = [json.loads(ln) for ln in done.stdout.splitlines()]
        assert all(f["severity"] == "info" for f in lines if f["kind"] == "finding"), lines
        findings += [f for f in lines if f["kind"] == "finding"]
    done = _as_nobody("backup", path, str(outbox / "backup"))
    assert done.returncode == 0, done.stderr
    done = _as_nobody("verify-backup", str(outbox / "backup"))
    assert done.returncode == 0, done.stderr
    return findings


def test_a_read_only_user_reads_checks_and_backs_up(world: Path) -> None:
    path = _store(world)
    outbox = world / "outbox"
    outbox.mkdir()
    shutil.chown(outbox, "nobody")
    before = {p: p.stat().st_mtime_ns for p in Path(path).rglob("*")}
    findings = _check_reads(path, outbox)
    # No writer has the index open: SQLite would have to create its -shm, so it goes unchecked
    # (said as info) and reads answer from the log.
    assert "index-unchecked" in {f["code"] for f in findings}
    assert {p: p.stat().st_mtime_ns for p in Path(path).rglob("*")} == before, "a read-only user changed the store"
    assert fsck(path).exit_code == 0


def test_with_a_writer_holding_the_store_open_the_index_is_checked_too(world: Path) -> None:
    path = _store(world)
    outbox = world / "outbox"
    outbox.mkdir()
    shutil.chown(outbox, "nobody")
    with EventStore(path) as writer:  # keeps the index open: its -wal and -shm exist
        writer.head()
        for n in os.listdir(Path(path, "index")):
            os.chmod(Path(path, "index", n), 0o644)
        findings = _check_reads(path, outbox)
    assert "index-unchecked" not in {f["code"] for f in findings}


@pytest.mark.parametrize("unreadable", ["FORMAT", "active segment", "sealed segment", "pack"])
def test_a_file_this_user_may_not_read_is_exit_8_never_damage(world: Path, unreadable: str) -> None:
    # A monitoring account with the wrong rights must hear "could not run" (8), not "the store
    # is damaged" (4) with advice to run the very fsck that says it.
    path = _store(world)
    if unreadable == "pack":
        assert fsck(path).exit_code == 0
        from kroniko_ops import compact
        assert compact(path).exit_code == 0
        for folder, _dirs, names in os.walk(path):
            os.chmod(folder, 0o755)
            for n in names:
                os.chmod(os.path.join(folder, n), 0o644)
    log = sorted(n for n in os.listdir(os.path.join(path, "log")) if n.endswith(".seg"))
    target = {"FORMAT": os.path.join(path, "FORMAT"),
              "active segment": os.path.join(path, "log", log[-1]),
              "sealed segment": os.path.join(path, "log", log[0]),
              "pack": os.path.join(path, "packs", next(iter(os.listdir(os.path.join(path, "packs"))), "none"))
              if unreadable == "pack" else ""}[unreadable]
    os.chmod(target, 0o600)
    for args in (["fsck", path, "--json"], ["fsck", path, "--quick", "--json"], ["read", path]):
        done = _as_nobody(*args)
        assert done.returncode == 8, (args, done.returncode, done.stdout[-500:], done.stderr)
        assert "Permission denied" in done.stderr + done.stdout, done.stderr
        assert "fsck" not in done.stderr.split("Permission denied", 1)[1], done.stderr
