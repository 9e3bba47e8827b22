"""Shared by the interrupted-operation tests (issue 13, second half): the CLI run in a child
that is stopped by a real signal at a chosen point of its work.

The point is counted, not timed: the child counts every disk-changing call it makes through
:mod:`kroniko_ops.fileio` (the fault-injector hook) and, for commands that only read, every
:func:`kroniko_ops.fileio.open_read`. A first run counts the points of a whole run
(:func:`count_points`); later runs stop at the Nth: the child either signals itself (SIGKILL,
SIGTERM: the default action, no Python cleanup runs) or parks there and tells the parent,
which sends the signal from outside (SIGINT, like Ctrl-C). Every child is reaped under a
timeout; a hang fails the test.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

TIMEOUT = 120.0

_CHILD = """
import atexit, errno, os, signal, sys, time
mode, how, nth, ready_fd, trace = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
from kroniko_ops import fileio
hits = [0]
ops = []

def point(op, path):
    hits[0] += 1
    if mode == "count":
        ops.append(f"{op} {path}")
    if mode == "count" or hits[0] != nth:
        return
    if mode == "self":
        os.kill(os.getpid(), getattr(signal, how))
        time.sleep(60)  # the signal ends the process before this returns
    elif mode == "fail":
        code = getattr(errno, how)
        raise OSError(code, os.strerror(code), path)
    else:  # park: say where we are, let the parent's signal arrive
        os.write(ready_fd, b"ready\\n")
        time.sleep(60)

fileio.set_fault_injector(point)
_open_read = fileio.open_read

def open_read(path, *args, **kwargs):
    point("read", path)
    return _open_read(path, *args, **kwargs)

fileio.open_read = open_read

def said():
    with open(trace, "w") as f:
        f.write("".join(o.replace("\\n", " ") + "\\n" for o in ops))
    os.write(ready_fd, f"points {hits[0]}\\n".encode())

if mode == "count":
    atexit.register(said)
from kroniko_ops.cli import cli
cli(sys.argv[6:], prog_name="kroniko-ops")
"""


@dataclass
class Stopped:
    """How one child run ended."""

    code: int  # the exit status; -N for a process ended by signal N
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout: {self.out[-2000:]}\nstderr: {self.err[-3000:]}"


def _spawn(mode: str, how: str, nth: int, args: list[str],
           trace: str = "-") -> tuple[subprocess.Popen[bytes], int, object, object]:
    read_fd, write_fd = os.pipe()
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, mode, how, str(nth), str(write_fd), trace, *args],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(write_fd,))
    os.close(write_fd)
    return proc, read_fd, out, err


def _finish(proc: subprocess.Popen[bytes], read_fd: int, out: object, err: object) -> tuple[Stopped, bytes]:
    try:
        code = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the child hung: {proc.args[6:]}") from None
    said = b""
    while select.select([read_fd], [], [], 0)[0]:
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        said += chunk
    os.close(read_fd)
    texts = []
    for f in (out, err):
        f.seek(0)  # type: ignore[attr-defined]
        texts.append(f.read().decode(errors="replace"))  # type: ignore[attr-defined]
        f.close()  # type: ignore[attr-defined]
    return Stopped(code, texts[0], texts[1]), said


def trace_points(args: list[str]) -> tuple[list[str], Stopped]:
    """Run ``kroniko-ops ARGS`` to the end in a child; return its points in order, each as
    ``"<op> <path>"`` (``op``: a :mod:`fileio` operation, or ``read``)."""
    with tempfile.NamedTemporaryFile("r", suffix=".trace") as trace:
        result, said = _finish(*_spawn("count", "-", 0, args, trace.name))
        lines = [ln for ln in said.decode().splitlines() if ln.startswith("points ")]
        assert lines, f"the counting child said nothing: {result}"
        ops = trace.read().splitlines()
    assert len(ops) == int(lines[-1].split()[1])
    return ops, result


def count_points(args: list[str]) -> tuple[int, Stopped]:
    """Run ``kroniko-ops ARGS`` to the end in a child; return how many points it passed."""
    ops, result = trace_points(args)
    return len(ops), result


def fail_at(args: list[str], nth: int, errname: str) -> Stopped:
    """Run ``kroniko-ops ARGS`` in a child whose ``nth`` point fails with ``OSError(errname)``
    (``"ENOSPC"``, ``"EACCES"``, ``"EMFILE"``), as a full disk, a permission or the open-files
    limit would make it fail."""
    result, _said = _finish(*_spawn("fail", errname, nth, args))
    return result


def stop_at(args: list[str], nth: int, signame: str = "SIGKILL") -> Stopped:
    """Run ``kroniko-ops ARGS`` in a child that sends itself ``signame`` at its ``nth`` point."""
    result, _said = _finish(*_spawn("self", signame, nth, args))
    return result


def interrupt_at(args: list[str], nth: int, sig: int = signal.SIGINT) -> Stopped:
    """Run ``kroniko-ops ARGS`` in a child that parks at its ``nth`` point; send it ``sig``
    from here (a real signal from another process, like Ctrl-C) and return how it ended."""
    proc, read_fd, out, err = _spawn("park", "-", nth, args)
    try:
        ready, _, _ = select.select([read_fd], [], [], TIMEOUT)
        assert ready, "the child never reached its point"
        line = os.read(read_fd, 64)
        assert line.startswith(b"ready"), "the child ended before its point"
        proc.send_signal(sig)
    except BaseException:
        proc.kill()
        raise
    result, _said = _finish(proc, read_fd, out, err)
    return result


def spread(points: int, count: int = 3) -> list[int]:
    """``count`` points spread over a run of ``points`` (never the first nor past the last)."""
    assert points >= 2, f"a run of {points} point(s) cannot be stopped half-way"
    picks = {max(1, min(points - 1, points * (i + 1) // (count + 1))) for i in range(count)}
    return sorted(picks)


def temp_names(folder: str) -> list[str]:
    """Every ``.tmp-*`` name anywhere under ``folder`` (and beside it: its parent's entries)."""
    found = []
    parent = os.path.dirname(os.path.abspath(folder))
    if os.path.isdir(parent):
        found += [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(".tmp-")]
    for root, dirs, names in os.walk(folder):
        if "lost-found" in os.path.relpath(root, folder).split(os.sep):
            continue
        found += [os.path.join(root, n) for n in dirs + names if n.startswith(".tmp-")]
    return sorted(found)
