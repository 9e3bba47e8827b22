"""The synced position: the highest position known to be fsynced, which readers stop at.

It lives in ``locks/synced``, one fixed-width line rewritten in place (``pwrite`` of well under
one sector) and checked by a CRC-32, so a torn or stale read is detected and read again::

    synced <position:12> <segment first:12> <end offset:12> <chain:64> <boot id:36> <poison:1> <crc:8>

``segment``/``end`` say where the record at ``position`` ends, ``chain`` is its chain hash,
``boot`` the Linux boot id of the writer (after a reboot the value is re-verified, never
trusted), ``poison`` is ``P`` once an fsync failed in any process: then no process appends or
advances it until ``recover`` has re-read the unsynced part. Updates take ``flock`` on the file
itself, so the value only ever grows (a writer whose fsync finished late cannot lower it).
"""

from __future__ import annotations

import fcntl
import os
import stat
import zlib
from dataclasses import dataclass

from . import fileio
from .format.record import GENESIS

_LINE = b"synced %012d %012d %012d %s %-36s %c "
SIZE = _SIZE = 159  # bytes of the one line; the file never holds more


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

    def encode(self) -> bytes:
        """The file's bytes for this value."""
        head = _LINE % (self.position, self.segment, self.end, self.chain.hex().encode(),
                        self.boot.encode("ascii"), ord("P") if self.poisoned else ord("-"))
        return b"%s%08x\n" % (head, zlib.crc32(head))


def decode(data: bytes) -> SyncedState | None:
    """Parse the file's bytes; None when they are missing, torn or damaged."""
    line = data[:_SIZE]
    if len(line) != _SIZE or not line.startswith(b"synced ") or line[-1:] != b"\n":
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
        self.fd = fileio.open_write(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise OSError(f"{path} is not a regular file")
        self.boot = boot_id()
        self._last: tuple[bytes, SyncedState | None] = (b"", None)  # parsing costs more than comparing

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
        Returns False when poisoned (the caller's append may not be reported durable). One
        ``flock``, one read and at most one write: a caller that may have been covered by
        another writer's fsync looks first with :meth:`read`."""
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
        poison flag and stamps this boot."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            self._write(SyncedState(state.position, state.segment, state.end, state.chain, self.boot, False))
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
