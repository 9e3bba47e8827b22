"""The synced position: the highest position known to be fsynced, which readers stop at.

It lives in ``locks/synced``, one fixed-width line rewritten in place (``pwrite`` of well under
one sector) and checked by a CRC-32, so a torn or stale read is detected and read again::

    synced <position:12> <segment first:12> <end offset:12> <chain:64> <boot id:36> <poison:1> <crc:8>
    logend <position:12> <segment first:12> <end offset:12> <chain:64> <boot id:36> - <crc:8>

``segment``/``end`` say where the record at ``position`` ends, ``chain`` is its chain hash,
``boot`` the Linux boot id of the writer (after a reboot the value is re-verified, never
trusted), ``poison`` is ``P`` once an fsync failed in any process: then no process appends or
advances it until ``recover`` has re-read the unsynced part. Updates take ``flock`` on the file
itself, so the value only ever grows (a writer whose fsync finished late cannot lower it).

The second line, ``logend``, is where the log's committed records end as last written: each
writer puts its new tail there under the writer lock, after its ``write()`` returned (when
other writers are about: an older value still names only written records). It makes
group commit work: a writer reads it before its fsync and then advances the synced position to
it (every write it names returned before that fsync began, so the fsync covers them), and the
writers of those batches find them synced and return without an fsync of their own. A
``logend`` of another boot, or in another segment, is ignored; recovery rewrites it with the
synced position. Readers never use it.

With other writers about, a writer holds the file's ``flock`` from before it reads the two lines
until it has advanced the value (a writer alone fsyncs without it): one fsync at a time among
writers that saw each other, and those queued behind it find their batches covered when their
turn comes. (Parallel fsyncs of a preallocated segment do not merge: an overwrite needs no
journal commit, so each one flushes the disk itself; measured with eight writers, nearly one
fsync per append in parallel against 0.45 queued.) The wait for the turn is a blocking
``flock`` with no timeout, as the update of the value always was: a writer stopped (SIGSTOP, a
debugger) inside its fsync holds the others' acknowledgments until it runs again or dies. A
wait that could time out (polling with short sleeps) cost a quarter of the throughput of eight
writers (6.1-6.6k against 8.3-8.4k appends/s).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from . import fileio
from .format.record import GENESIS

_LINE = b"%s %012d %012d %012d %s %-36s %c "
SIZE = _SIZE = 159  # bytes of one line
FILE_BYTES = 2 * SIZE  # the synced line, then the logend line: the file never holds more


def boot_id() -> str:
    """This boot's id (Linux); a constant elsewhere, where a reboot cannot be told apart."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read(64).strip().decode("ascii")[:36]
    except OSError:
        return "unknown-boot"


@dataclass(frozen=True)
class SyncedState:
    """One value of the synced position."""

    position: int = 0
    segment: int = 1
    end: int = 0
    chain: bytes = GENESIS
    boot: str = ""
    poisoned: bool = False

    def encode(self, word: bytes = b"synced") -> bytes:
        """The file's line for this value (``word`` ``logend`` for the second line)."""
        head = _LINE % (word, self.position, self.segment, self.end, self.chain.hex().encode(),
                        self.boot.encode("ascii"), ord("P") if self.poisoned else ord("-"))
        return b"%s%08x\n" % (head, zlib.crc32(head))


def decode(data: bytes, word: bytes = b"synced") -> SyncedState | None:
    """Parse a line of the file (the first by default; ``word`` ``logend`` and the bytes from
    :data:`SIZE` on for the second); None when it is missing, torn or damaged."""
    line = data[:_SIZE]
    if len(line) != _SIZE or not line.startswith(word + b" ") or line[-1:] != b"\n":
        return None
    try:
        if zlib.crc32(line[:-9]) != int(line[-9:-1], 16):
            return None
        return SyncedState(int(line[7:19]), int(line[20:32]), int(line[33:45]),
                           bytes.fromhex(line[46:110].decode("ascii")), line[111:147].decode("ascii").rstrip(),
                           line[148:149] == b"P")
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


class SyncedFile:
    """``locks/synced`` of one store, opened once per handle."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.writable = True
        try:
            self.fd = fileio.open_write(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or os.access(path, os.W_OK):
                raise
            # A user who may read the store but not write it (monitoring, backups): it reads
            # the value; every update needs the append lock first, which refuses such a user.
            # A store without the file yet is treated as a writer would (EACCES again).
            self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            self.writable = False
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise OSError(f"{path} is not a regular file")
        self.boot = boot_id()
        self._last: tuple[bytes, SyncedState | None] = (b"", None)  # parsing costs more than comparing
        self._end: tuple[bytes, SyncedState | None] = (b"", None)  # the same for the logend line

    def close(self) -> None:
        """Close the descriptor (the file stays)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self) -> SyncedState | None:
        """The current value; None when the file is empty or damaged. A read racing an update
        can see a mix of both; the CRC catches that and the read is retried."""
        for _ in range(20):
            data = os.pread(self.fd, _SIZE, 0)
            if not data:
                return None
            if data == self._last[0]:
                return self._last[1]
            state = decode(data)
            if state is not None:
                self._last = (data, state)
                return state
        return None

    def current(self, state: SyncedState | None) -> bool:
        """Whether ``state`` was written in this boot (else it must be re-verified)."""
        return state is not None and state.boot == self.boot

    def _write(self, state: SyncedState) -> None:
        data = state.encode()
        fileio.pwrite_all(self.fd, data, 0, self.path)
        self._last = (data, state)

    def advance(self, position: int, segment: int, end: int, chain: bytes) -> bool:
        """Raise the value to ``position`` unless it is already at or past it, or poisoned.
        Returns False when poisoned (the caller's append may not be reported durable)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            cur = self.read()
            if cur is not None and cur.poisoned:
                return False
            if cur is None or not self.current(cur) or position > cur.position:
                self._write(SyncedState(position, segment, end, chain, self.boot, False))
            return True
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def publish_end(self, position: int, segment: int, end: int, chain: bytes) -> None:
        """Under the writer lock, after the ``write()`` of a batch returned: the ``logend`` line."""
        fileio.pwrite_all(self.fd, SyncedState(position, segment, end, chain, self.boot).encode(b"logend"), _SIZE,
                          self.path)

    def peek(self) -> tuple[SyncedState | None, SyncedState | None]:
        """Both lines, read once: the synced position and the ``logend``."""
        data = os.pread(self.fd, FILE_BYTES, 0)
        head, tail = data[:_SIZE], data[_SIZE:]
        if head == self._last[0]:
            cur = self._last[1]
        else:
            cur = decode(head)
            if cur is not None:
                self._last = (head, cur)  # the read under the flock that follows finds it unchanged
        if tail != self._end[0]:
            self._end = (tail, decode(tail, b"logend"))
        return cur, self._end[1]

    def commit(self, position: int, segment: int, end: int, chain: bytes, sync: Callable[[], None],
               others: bool) -> bool:
        """Group commit: make ``position`` (ending at ``end`` of ``segment``) durable and visible.

        When other writers are active (``others``), read both lines first: if the synced
        position already covers ``position`` (another writer's fsync, begun after this batch
        was written, did), return at once; else remember the ``logend``. Then call ``sync()``
        (the fsync of ``segment``; a failure poisons the store before its error propagates) and
        raise the synced position to the larger of ``position`` and that ``logend`` (same boot
        and segment: every write it names returned before this fsync began), so that writers
        behind find their batches synced. With others, all of it runs under the file's
        ``flock``: fsyncs queue, and each covers every batch written before it began. Returns
        False when the store is poisoned."""
        target = (position, end, chain)
        if others:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            if others:
                cur, ahead = self.peek()
                if cur is not None and self.current(cur) and cur.position >= position and not cur.poisoned:
                    return True
                if (ahead is not None and ahead.boot == self.boot and ahead.segment == segment
                        and ahead.position > position):
                    target = (ahead.position, ahead.end, ahead.chain)
            try:
                sync()
            except OSError:
                self.poison()
                raise
            return self.advance(target[0], segment, target[1], target[2])
        finally:
            if others:  # (advance and poison take and drop the same flock: it is this file's)
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def poison(self) -> None:
        """Mark the store: an fsync failed, so what was written since the last good one may be
        lost while the page cache still shows it. Only ``recover`` clears this."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            cur = self.read() or SyncedState(boot=self.boot)
            self._write(SyncedState(cur.position, cur.segment, cur.end, cur.chain, cur.boot, True))
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def reset(self, state: SyncedState) -> None:
        """Set the value outright (recovery, after verifying and syncing the log); clears the
        poison flag, stamps this boot, and sets the ``logend`` line to the same value (one it
        held before may name records recovery has just cut)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            fresh = SyncedState(state.position, state.segment, state.end, state.chain, self.boot, False)
            data = fresh.encode()
            fileio.pwrite_all(self.fd, data + fresh.encode(b"logend"), 0, self.path)
            self._last = (data, fresh)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
