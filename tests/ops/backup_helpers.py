"""Helpers for the backup and restore tests: sample stores, store checks, byte-level comparison,
and a child process killed at the Nth file operation."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable

from kroniko_ops import Event, EventStore, fileio
from kroniko_ops.log import LINE_LEN, iter_lines

KILLED = 77


def fill(path: str, batches: int, start: int = 0, durable: bool = False) -> int:
    """Append ``batches`` batches of 1-3 events (types A/B/C, a few tags, a tag whose index file
    name is hashed and one whose path is over 100 bytes, as in a pax tar header) to the store at
    ``path``; return the head."""
    with EventStore(path, durable=durable) as s:
        head = s.head()
        for b in range(start, start + batches):
            size = 1 + b % 3
            head = s.append([
                Event("ABC"[(b + k) % 3], {"b": b, "k": k, "text": "é" * (b % 5)},
                      [f"cart:{b % 4}", "long:" + "x" * 200, "mid:" + "y" * 110] if k == 0 else [f"cart:{b % 4}"],
                      {"by": "test"} if k == 1 else None)
                for k in range(size)
            ])
    return head


def problems(path: str) -> list[str]:
    """Problems of the store at ``path``: kroniko_ops fsck (full) when it is there, else the
    restore's own complete check. Empty means clean."""
    try:
        from kroniko_ops.ops.fsck import fsck
    except ImportError:
        from kroniko_ops.ops.restore import _self_check

        with EventStore(path, create=False) as s:
            head = s.head()
        return [f"{code}: {msg}" for code, msg in _self_check(path, head)]
    return [f"{f.code} {f.path}: {f.message}" for f in fsck(path).problems]


def event_bytes(path: str, upto: int) -> list[bytes]:
    """The stored bytes of positions 1..upto (loose or packed), in order."""
    with EventStore(path, create=False) as s:
        return [s._load(line) for line in iter_lines(s._read_fd, 1, upto)]


def log_bytes(path: str, upto: int) -> bytes:
    """The first ``upto`` lines of the store's log."""
    with open(os.path.join(path, "log", "append.log"), "rb") as f:
        return f.read(upto * LINE_LEN)


def same_prefix(source: str, restored: str, upto: int) -> None:
    """Assert that ``restored`` holds exactly positions 1..upto of ``source``, byte for byte."""
    with EventStore(restored, create=False) as s:
        assert s.head() == upto
    assert log_bytes(restored, upto + 1) == log_bytes(source, upto)
    assert event_bytes(restored, upto) == event_bytes(source, upto)


def tree_digest(root: str) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative paths), lock files left out."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if rel.startswith("locks" + os.sep):
                continue
            with open(full, "rb") as f:
                out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def count_ops(fn: Callable[[], object]) -> int:
    """How many fileio operations ``fn`` makes."""
    n = 0

    def counter(op: str, path: str) -> None:
        nonlocal n
        n += 1

    previous = fileio.set_fault_injector(counter)
    try:
        fn()
    finally:
        fileio.set_fault_injector(previous)
    return n


def killed_at(fn: Callable[[], object], n: int, timeout: float = 60.0) -> int:
    """Run ``fn`` in a forked child that dies (``os._exit``, like a kill) at its ``n``-th fileio
    operation; return the child's exit status (KILLED when it died there, 0 when it finished)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        count = 0

        def die(op: str, path: str) -> None:
            nonlocal count
            count += 1
            if count == n:
                os._exit(KILLED)

        fileio.set_fault_injector(die)
        try:
            fn()
        except BaseException:
            os._exit(1)
        os._exit(0)
    return reap(pid, timeout, f"child killed at op {n}")


def reap(pid: int, timeout: float, what: str) -> int:
    """Wait for the forked child ``pid`` and return its exit status; SIGKILL and fail if it
    outlives ``timeout`` seconds (a hang must not hang the suite)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"{what} hung")
        time.sleep(0.002)
