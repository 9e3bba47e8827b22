"""Helpers for the replication tests: sample stores, what a store holds, the replica's objects,
the CLI in a child process (with the AWS environment), reaping children under a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import orjson

from kroniko_ops import Event, EventStore
from kroniko_ops.objstore import open_url

SEGMENT = 4096


def fill(path: str, batches: int, start: int = 0, durable: bool = False) -> list[int]:
    """Append ``batches`` batches of 1-3 events to the store at ``path`` (4 KiB segments: many
    seals); return each batch's last position."""
    ends = []
    with EventStore(path, durable=durable, segment_bytes=SEGMENT) as s:
        for b in range(start, start + batches):
            ends.append(s.append([Event("ABC"[(b + k) % 3], {"b": b, "k": k, "pad": "x" * (b % 50)}, [f"b:{b % 4}"])
                                  for k in range(1 + b % 3)]))
    return ends


def contents(path: str) -> list[tuple[Any, ...]]:
    """Every event a reader sees in the store at ``path``, with its batch end and commit time."""
    with EventStore(path, create=False) as s:
        return [(e.position, e.type, e.data, tuple(e.event.tags), e.event.id, e.batch_end, e.commit_us)
                for e in s.read()]


def batches(path: str) -> list[tuple[int, int]]:
    """``(last position, commit time in microseconds)`` of every batch of the store."""
    return [(row[0], row[6]) for row in contents(path) if row[5]]


def objects(url: str) -> dict[str, int]:
    """Every object of the replica at ``url`` with its size."""
    remote = open_url(url)
    try:
        return remote.list()
    finally:
        remote.close()


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``kroniko-ops ARGS`` in a child process (with ``env`` added) and return what it did."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "kroniko-ops"), *args],
                          env=full, capture_output=True, text=True, timeout=timeout)


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The ``--json`` summary line of a finished command."""
    lines = [orjson.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["kind"] == "summary", (proc.returncode, proc.stdout, proc.stderr)
    return lines[-1]


def findings(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The ``--json`` findings of a finished command."""
    return [f for f in (orjson.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))
            if f["kind"] == "finding"]


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``kroniko-ops ARGS`` in its own process group."""
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "kroniko-ops"), *args],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen[str], sig: int | None = signal.SIGTERM, timeout: float = 60) -> tuple[int, str, str]:
    """Send ``sig`` (if any) to ``proc`` and reap it within ``timeout`` (SIGKILL after that)."""
    if sig is not None and proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"kroniko-ops {proc.args} did not end within {timeout} s: {err}") from None
    return proc.returncode, out, err


def reap(pid: int, timeout: float, what: str) -> int:
    """Wait for the forked child ``pid``; SIGKILL it and fail when it outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"{what} hung")
        time.sleep(0.005)
