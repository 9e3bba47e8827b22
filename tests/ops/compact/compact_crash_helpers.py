"""Children of the compaction crash tests: forked, killed at a chosen file operation or at a
random moment, and reaped under a timeout."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from kroniko_ops import fileio


def reap(pid: int, timeout: float, what: str) -> int:
    """Wait for child ``pid`` at most ``timeout`` seconds (then kill it and fail); return its exit
    code, or ``-signal`` when a signal ended it."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"{what} did not finish within {timeout}s")
        time.sleep(0.002)


def fork(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a forked child that exits 0 when it returns, 3 when it raises."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()
        except BaseException:
            code = 3
        os._exit(code)
    return pid


def count_ops(fn: Callable[[], None]) -> list[tuple[str, str]]:
    """The mutating file operations ``fn`` makes, in order."""
    ops: list[tuple[str, str]] = []
    previous = fileio.set_fault_injector(lambda op, path: ops.append((op, path)))
    try:
        fn()
    finally:
        fileio.set_fault_injector(previous)
    return ops


def die_at(n: int, fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` that dies as abruptly as SIGKILL (no cleanup, no flush) at its ``n``-th operation."""
    def run() -> None:
        seen = [0]

        def die(op: str, path: str) -> None:
            seen[0] += 1
            if seen[0] == n:
                os._exit(9)

        fileio.set_fault_injector(die)
        fn()

    return run
