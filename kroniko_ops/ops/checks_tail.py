"""Log checks, part one: the tail after the last commit mark.

The tail is what follows the last committed line (see :func:`kroniko_ops.log.find_head`). A
writer that died mid-append leaves whole lines without a commit mark (``log-uncommitted-tail``)
or an incomplete or garbled last line (``log-torn-tail``); both are safe to cut. Anything else
after the head (a line that carries a commit mark but fails its checksum, a valid line off the
219-byte grid, a line with the wrong position) means committed lines were damaged, or bytes
were inserted or removed mid-log: that is never cut, it is reported as ``log-bad-line``.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from ..log import CLEAN, DAMAGED, LINE_LEN, TORN, UNCOMMITTED, classify_tail, find_head
from .checks_common import LOG_PATH, Context

LIVE = "in-progress"


@dataclass
class LogState:
    """A snapshot of the log: the committed head and what follows it, fixed when the check
    started, so that appends made during the check are simply not looked at."""

    head: int
    chain: str
    size: int
    committed_bytes: int
    tail: str = CLEAN
    note: str = ""

    @property
    def lines(self) -> int:
        """Complete lines in the snapshot."""
        return self.size // LINE_LEN

    @property
    def last_named(self) -> int:
        """The last line whose event counts as named by the log: the head, or every complete
        line when the tail is damage rather than a dead writer's batch."""
        return self.lines if self.tail == DAMAGED else self.head


def _append_lock_free(lock_path: str) -> int | None:
    """Take the append lock without waiting; return its fd, or None when a writer holds it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1  # never taken: no writer can be mid-append
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def snapshot(fd: int, lock_path: str, writer_may_be_live: bool) -> LogState:
    """Fix the head to check against. When the tail is not clean and a writer may be appending
    right now, look again while holding the append lock for a moment: a tail that a live writer
    is writing is not damage (``in-progress``), and one that committed meanwhile is not a tail."""
    tail = find_head(fd)
    state = LogState(tail.head, tail.chain, tail.file_size, tail.committed_bytes)
    if tail.clean:
        return state
    raw = os.pread(fd, tail.file_size - tail.committed_bytes, tail.committed_bytes)
    state.tail, state.note = classify_tail(raw, tail.head)
    if not writer_may_be_live or state.tail == DAMAGED:
        return state
    lock_fd = _append_lock_free(lock_path)
    if lock_fd is None:
        state.tail, state.note = LIVE, "an append is in progress (the append lock is held)"
        return state
    try:
        again = find_head(fd)
        if again.head > tail.head:
            # It was an append in progress that has committed since: check up to the old head.
            state.size, state.tail, state.note = tail.committed_bytes, CLEAN, ""
        else:
            state.size = again.file_size
            raw = os.pread(fd, again.file_size - again.committed_bytes, again.committed_bytes)
            state.tail, state.note = classify_tail(raw, again.head)
    finally:
        if lock_fd >= 0:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
    return state


def report_tail(ctx: Context, state: LogState) -> None:
    """Add the finding that describes the tail (if it is not clean)."""
    at = state.head + 1
    if state.tail == UNCOMMITTED:
        ctx.add("log-uncommitted-tail", "error", LOG_PATH,
                f"{state.note}: a writer died before committing; recovery cuts them into lost-found/",
                at)
    elif state.tail == TORN:
        ctx.add("log-torn-tail", "error", LOG_PATH,
                f"{state.note}: a writer died mid-write; recovery cuts it into lost-found/", at)
    elif state.tail == LIVE:
        ctx.add("log-uncommitted-tail", "info", LOG_PATH, f"lines after position {state.head}: {state.note}",
                at)
    elif state.tail == DAMAGED:
        ctx.add("log-bad-line", "error", LOG_PATH,
                f"after position {state.head}: {state.note}. This is damage to committed data, never "
                "cut automatically: restore the store from a backup", at)
