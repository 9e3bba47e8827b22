"""Walking a log's chain for verification: :class:`LogWalker`, :class:`TrailerHash` for pack
files, and :func:`walk_log`, which runs a long walk in a forked child process so that it
overlaps with hashing the backup's files on another core (the walk is Python, one line at a
time; a thread would fight the hashing for the GIL).
"""

from __future__ import annotations

import binascii
import hashlib
import os
import pickle
import threading
import zlib
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..log import LINE_LEN, BadLine, decode_line

FORK_MIN_BYTES = 4 << 20  # below this a fork costs more than it saves
T = TypeVar("T")


class LogWalker:
    """Checks log lines fed chunk by chunk: position field, CRC, chain hash.

    ``events`` (when given) maps ``events/<id>.json`` to its SHA-256; a line whose event is not
    there with the line's hash, and whose position no pack range covers, is reported.
    """

    def __init__(self, first: int, prev_chain: str, events: dict[str, str] | None = None,
                 packs: list[tuple[int, int]] | None = None) -> None:
        self.pos = first
        self.prev = bytes.fromhex(prev_chain)
        self.rest = b""
        self.events = events
        self.packs = sorted(packs or [])
        self.problems: list[tuple[str, int, str]] = []  # (code, position, message)
        self.last_commit = True
        self.named: set[str] = set()
        self.unnamed: list[str] = []
        self.dropped = 0
        self.pi = 0

    def feed(self, chunk: bytes) -> None:
        """Check the complete lines in ``chunk`` (with what was left over from the last one)."""
        data = self.rest + chunk if self.rest else chunk
        n = len(data) // LINE_LEN
        self.rest = data[n * LINE_LEN :]
        sha, unhex, crc32, events = hashlib.sha256, binascii.unhexlify, zlib.crc32, self.events
        pos, prev, packs, pi = self.pos, self.prev, self.packs, self.pi
        for off in range(0, n * LINE_LEN, LINE_LEN):
            try:
                ok = (data[off : off + 12] == b"%012d" % pos
                      and b"%08x" % crc32(data[off : off + 209]) == data[off + 210 : off + 218])
                nxt = sha(prev + unhex(data[off + 78 : off + 142])).digest()
                if not ok or nxt != unhex(data[off + 143 : off + 207]):
                    self._bad(data[off : off + LINE_LEN], pos)
            except (binascii.Error, ValueError):
                self._bad(data[off : off + LINE_LEN], pos)
                nxt = prev
            if events is not None:
                while pi < len(packs) and packs[pi][1] < pos:
                    pi += 1
                if pi == len(packs) or packs[pi][0] > pos:  # not packed: the loose file must match
                    self._loose(data[off : off + LINE_LEN], pos)
            prev = nxt
            pos += 1
        if n:
            self.last_commit = data[(n - 1) * LINE_LEN + 208] == ord("C")
        self.pos, self.prev, self.pi = pos, prev, pi

    def _loose(self, raw: bytes, pos: int) -> None:
        assert self.events is not None
        name = "events/" + raw[13:77].rstrip(b" ").decode("ascii", "replace") + ".json"
        self.named.add(name)
        have = self.events.get(name)
        if have is None:
            self._add("backup-event-missing", pos, f"the log names {name}, which the backup does not hold")
        elif have != raw[78:142].decode("ascii", "replace"):
            self._add("backup-hash-mismatch", pos, f"{name} does not match the hash the log gives it")

    def _bad(self, raw: bytes, pos: int) -> None:
        try:
            line = decode_line(raw)
            why = "its position field says " + str(line.position) if line.position != pos else \
                "its chain hash does not follow from the previous line"
        except BadLine as exc:
            why = f"the line is damaged ({exc})"
        self._add("backup-chain-mismatch", pos, why)

    def _add(self, code: str, pos: int, message: str) -> None:
        if len(self.problems) < 1000:
            self.problems.append((code, pos, message))
        else:
            self.dropped += 1

    def finish(self) -> None:
        """Note the event files no line named (after the last chunk)."""
        self.unnamed = sorted(rel for rel in self.events or () if rel not in self.named)

    def state(self) -> tuple[object, ...]:
        """What a parent needs from a walk done in a child process."""
        return (self.pos, self.prev, self.rest, self.problems, self.dropped, self.last_commit, self.unnamed)

    def load(self, state: tuple[object, ...]) -> None:
        """Take over the :meth:`state` of a walk done elsewhere."""
        (self.pos, self.prev, self.rest, self.problems, self.dropped,  # type: ignore[assignment]
         self.last_commit, self.unnamed) = state

    @property
    def chain(self) -> str:
        """The chain hash after the last line fed."""
        return self.prev.hex()


class TrailerHash:
    """Checks a pack or idx file's trailer (its last 65 bytes: SHA-256 hex of everything before,
    and a newline) while the file is hashed for the manifest, so each byte is read once."""

    def __init__(self, size: int) -> None:
        self.size, self.done, self.prefix, self.tail = size, 0, hashlib.sha256(), b""

    def feed(self, chunk: bytes) -> None:
        """Account for the next chunk of the file."""
        cut = self.size - 65
        if self.done < cut:
            self.prefix.update(chunk[: cut - self.done])
        if self.done + len(chunk) > cut:
            self.tail += chunk[max(0, cut - self.done) :]
        self.done += len(chunk)

    def ok(self) -> bool:
        """Whether the trailer holds the checksum of what precedes it."""
        return self.size >= 65 and self.tail[:64] == self.prefix.hexdigest().encode() and self.tail[64:] == b"\n"


def run_forked(fn: Callable[[], T], fork: bool = True) -> Callable[[], T]:
    """Start ``fn()`` in a forked child process (when ``fork`` and the OS can) and return the
    function that waits for it and returns its result, pickled through a pipe.

    For work that is Python bytecode or many small system calls, which threads would serialise
    on the GIL. The child only computes and leaves with ``os._exit``; if it fails in any way,
    ``fn()`` runs again in this process, where its exception (if any) is raised normally. A
    process running other threads does not fork (a lock one of them holds would stay locked in
    the child): ``fn`` then runs here, which is only slower.
    """
    if not fork or not hasattr(os, "fork") or threading.active_count() > 1:
        return fn
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: compute, send, leave without any cleanup
        code = 1
        try:
            os.close(r)
            data = memoryview(pickle.dumps(fn(), protocol=pickle.HIGHEST_PROTOCOL))
            while data:
                data = data[os.write(w, data) :]
            code = 0
        finally:
            os._exit(code)
    os.close(w)

    def wait() -> T:
        parts = []
        try:
            while chunk := os.read(r, 1 << 22):
                parts.append(chunk)
        finally:
            os.close(r)
            _pid, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            try:
                return pickle.loads(b"".join(parts))  # type: ignore[no-any-return]
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
                pass
        return fn()

    return wait


def walk_log(walker: LogWalker, chunks: Callable[[str], Iterable[bytes]], log_name: str,
             size: int) -> Callable[[], None]:
    """Start walking ``log_name`` (read through ``chunks``) and return the function that waits
    for the walk to be complete in ``walker``. A big log is walked in a forked child, beside
    the hashing of the other files."""
    def walk() -> tuple[object, ...]:
        for chunk in chunks(log_name):
            walker.feed(chunk)
        walker.finish()
        return walker.state()

    wait = run_forked(walk, size >= FORK_MIN_BYTES)
    return lambda: walker.load(wait())
