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


class Proxy:
    """A TCP proxy on loopback in front of the S3 server that can misbehave: ``cut`` closes
    each of the next connections once it has forwarded that many request bytes (the server goes
    away mid-upload), ``delay`` holds each response chunk back (a slow server). Real sockets,
    the real server behind them."""

    def __init__(self, target: int) -> None:
        import socket
        import threading

        self.target = target
        self.cut: int | None = None
        self.cuts_left = 0
        self.cuts_done = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        """The proxy's URL."""
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import socket
        import threading

        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                limit = self.cut if self.cuts_left > 0 else None
            threading.Thread(target=self._pump, args=(client, upstream, limit, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None, True), daemon=True).start()

    def _pump(self, src: object, dst: object, limit: int | None, slow: bool) -> None:
        import socket

        s: socket.socket = src  # type: ignore[assignment]
        d: socket.socket = dst  # type: ignore[assignment]
        done = 0
        try:
            while data := s.recv(65536):
                if limit is not None and done + len(data) > limit:
                    d.sendall(data[:max(0, limit - done)])
                    with self.lock:
                        self.cuts_left -= 1
                        self.cuts_done += 1
                    break
                if slow and self.delay:
                    time.sleep(self.delay)
                d.sendall(data)
                done += len(data)
        except OSError:
            pass
        finally:
            for sock in (s, d):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        """Stop accepting (connections in flight end with their peers)."""
        import socket

        self.closed = True
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.server.close()
        self.thread.join(timeout=10)


def replica_head(url: str) -> int:
    """The head of the replica's newest manifest (-1 when there is none yet)."""
    from kroniko_ops.ops.replicate.manifest import MAX_MANIFEST_BYTES, manifest_key, manifest_seq, parse

    remote = open_url(url)
    try:
        seqs = sorted(s for k in remote.list("manifests/") if (s := manifest_seq(k)) is not None)
        return parse(remote.get(manifest_key(seqs[-1]), MAX_MANIFEST_BYTES), seqs[-1]).head if seqs else -1
    finally:
        remote.close()


def wait_for(predicate: object, timeout: float = 60, what: str = "condition") -> None:
    """Poll ``predicate()`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)
