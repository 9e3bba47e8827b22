"""Helpers for the backup and restore tests: sample stores, what a store holds, a child process
killed at its Nth file operation, reaping children under a timeout."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable

from kroniko_ops import Event, EventStore, Query, QueryItem, fileio

KILLED = 77
SEGMENT = 4096


def fill(path: str, batches: int, start: int = 0, durable: bool = False) -> list[int]:
    """Append ``batches`` batches of 1-3 events (types A/B/C, a few tags) to the store at
    ``path`` (created with 4 KiB segments, so many segments); return each batch's last position."""
    ends = []
    with EventStore(path, durable=durable, segment_bytes=SEGMENT) as s:
        for b in range(start, start + batches):
            ends.append(s.append([
                Event("ABC"[(b + k) % 3], {"b": b, "k": k, "text": "é" * (b % 7)}, [f"cart:{b % 4}", f"n:{b}"])
                for k in range(1 + b % 3)
            ]))
    return ends


def contents(path: str, upto: int | None = None) -> list[tuple[int, str, dict, tuple[str, ...], str | None]]:
    """Everything a reader sees in the store at ``path`` (positions 1..upto)."""
    with EventStore(path, create=False) as s:
        out = [(e.position, e.type, e.data, tuple(e.event.tags), e.event.id) for e in s.read()]
    return out if upto is None else [row for row in out if row[0] <= upto]


def tagged(path: str, tag: str) -> list[int]:
    """Positions of the events carrying ``tag`` (through the index)."""
    with EventStore(path, create=False) as s:
        return [e.position for e in s.read(Query([QueryItem(tags=[tag])]))]


def head(path: str) -> int:
    """The store's head."""
    with EventStore(path, create=False) as s:
        return s.head()


def tree_digest(root: str) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative paths), lock and index files left out."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if rel.startswith(("locks" + os.sep, "index" + os.sep)):
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
