"""Derived indexes: per-type and per-tag position lists, id buckets, and their checkpoint.

Layout under ``index/``::

    types/<name>.pos   tags/<name>.pos   one position per line, "%012d\\n", ascending
    ids/<xyz>.ids      "%012d <id>\\n" for ids whose SHA-256 starts with xyz (4096 buckets)
    CHECKPOINT         written=N durable=N boot=<boot id>

``<name>`` is :func:`encode_name` of the type or tag. Index lines are appended after the log
commit and not fsynced; ``written`` says how far they were written, ``durable`` how far they were
also fsynced. ``written`` is trusted only on the boot that wrote it (a power loss may drop
unsynced lines), otherwise ``durable``. Past the trusted checkpoint, readers use the log.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from . import fileio

POS_LEN = 13
MAX_LITERAL_NAME = 180
DURABLE_EVERY = 1024
SYNCFS_OVER = 32
_LITERAL = re.compile(r"[A-Za-z0-9_:-]|(?<=.)\.")
_ENCODED = re.compile(r"\A(?:[A-Za-z0-9_:-]|%[0-9A-F]{2}|(?<=.)\.)+\Z")
KINDS = ("types", "tags")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


BOOT_ID = _boot_id()


def encode_name(name: str) -> str:
    """File name (without suffix) for a type or tag: safe and reversible.

    ``A-Z a-z 0-9 _ - :`` stay as they are, ``.`` too except in front; every other byte of
    the UTF-8 text becomes ``%XX``; ``""`` is ``=``. No result contains ``/`` or NUL or is
    ``.``/``..``. Names whose encoding is over 180 characters become ``~`` + SHA-256 of the name,
    with the name itself kept beside it in ``~<hash>.name``.
    """
    if name == "":
        return "="
    out = []
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.isalnum() or ch in "_:-" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    enc = "".join(out)
    if len(enc) > MAX_LITERAL_NAME:
        return "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return enc


def decode_name(encoded: str) -> str | None:
    """The name behind :func:`encode_name` output, or None if ``encoded`` is not a valid one.

    Hashed names (``~<hash>``) return None: their name is in the ``.name`` file beside them.
    """
    if encoded == "=":
        return ""
    if not _ENCODED.match(encoded):
        return None
    raw = bytearray()
    i = 0
    while i < len(encoded):
        if encoded[i] == "%":
            raw.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(encoded[i].encode())
            i += 1
    try:
        name = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    return name if encode_name(name) == encoded else None


def id_bucket(event_id: str) -> str:
    """The bucket file name of an id."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:3] + ".ids"


@dataclass(frozen=True)
class Checkpoint:
    """How far the index was written and fsynced, and on which boot."""

    written: int = 0
    durable: int = 0
    boot: str = ""

    @property
    def trusted(self) -> int:
        """The last position whose index lines are certainly all present."""
        return self.written if self.boot == BOOT_ID and BOOT_ID != "unknown" else self.durable

    def render(self) -> bytes:
        """The file's text: fixed width, with a CRC so a torn in-place rewrite is detected."""
        body = f"written={self.written:012d} durable={self.durable:012d} boot={self.boot[:36]:<36}"
        return f"{body} crc={zlib.crc32(body.encode()):08x}\n".encode()


CHECKPOINT_LEN = len(Checkpoint().render())


def parse_checkpoint(raw: bytes) -> Checkpoint:
    """Parse :meth:`Checkpoint.render` output; raises ``ValueError`` when damaged."""
    text = raw.decode("ascii")
    body, _, crc = text.rstrip("\n").rpartition(" crc=")
    if len(raw) != CHECKPOINT_LEN or int(crc, 16) != zlib.crc32(body.encode()):
        raise ValueError("checkpoint fails its CRC")
    fields = dict(part.split("=", 1) for part in body.split(" ", 2))
    return Checkpoint(int(fields["written"]), int(fields["durable"]), fields["boot"].strip())


class Index:
    """The index folder of one store."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.checkpoint_path = os.path.join(root, "CHECKPOINT")

    def path(self, kind: str, name: str) -> str:
        """Path of the position list of a type (``kind="types"``) or tag (``"tags"``)."""
        return os.path.join(self.root, kind, encode_name(name) + ".pos")

    def read_checkpoint(self) -> Checkpoint:
        """The checkpoint; an absent or unreadable one counts as nothing indexed."""
        for _attempt in range(3):
            try:
                with open(self.checkpoint_path, "rb") as f:
                    return parse_checkpoint(f.read(CHECKPOINT_LEN + 1))
            except FileNotFoundError:
                return Checkpoint()
            except ValueError:
                continue  # read while a writer rewrote it in place: read again
        return Checkpoint()

    def write_checkpoint(self, cp: Checkpoint, durable: bool) -> None:
        """Rewrite the checkpoint in place (one fixed-width pwrite: no new inode per append)."""
        data = cp.render()
        try:
            fd = fileio.open_write(self.checkpoint_path, os.O_WRONLY)
        except FileNotFoundError:
            fileio.makedirs(self.root)
            fileio.write_file_atomic(self.checkpoint_path, data, durable)
            return
        try:
            fileio.pwrite_all(fd, data, 0, self.checkpoint_path)
            if durable:
                fileio.fsync(fd, self.checkpoint_path)
        finally:
            os.close(fd)

    # -- reading --------------------------------------------------------------------------

    def positions(self, kind: str, name: str, after: int, upto: int) -> list[int]:
        """Positions in ``(after, upto]`` listed for ``name``, ascending.

        Finds the range by bisection over the fixed-width lines, so the cost follows the
        matches returned. Raises ``ValueError`` on a damaged line.
        """
        try:
            fd = os.open(self.path(kind, name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        try:
            n = os.fstat(fd).st_size // POS_LEN
            lo = _bisect(fd, n, after)
            hi = _bisect(fd, n, upto)
            if hi <= lo:
                return []
            raw = os.pread(fd, (hi - lo) * POS_LEN, lo * POS_LEN)
        finally:
            os.close(fd)
        return _parse_positions(raw)

    def count(self, kind: str, name: str) -> int:
        """How many positions the list of ``name`` holds (from its size: no read)."""
        try:
            return os.stat(self.path(kind, name)).st_size // POS_LEN
        except FileNotFoundError:
            return 0

    def contains(self, kind: str, name: str, position: int) -> bool:
        """Whether the list of ``name`` holds ``position`` (by bisection)."""
        try:
            fd = os.open(self.path(kind, name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            i = _bisect(fd, os.fstat(fd).st_size // POS_LEN, position - 1)
            raw = os.pread(fd, 12, i * POS_LEN)
            return len(raw) == 12 and int(raw) == position
        finally:
            os.close(fd)

    def id_position(self, event_id: str, upto: int) -> int | None:
        """The position of ``event_id`` if the index lists it at or below ``upto``."""
        path = os.path.join(self.root, "ids", id_bucket(event_id))
        try:
            raw = fileio.read_file(path)
        except FileNotFoundError:
            return None
        needle = b" " + event_id.encode() + b"\n"
        at = raw.find(needle)
        while at >= 0:
            start = raw.rfind(b"\n", 0, at) + 1
            if at - start == 12:
                pos = int(raw[start:at])
                if pos <= upto:
                    return pos
            at = raw.find(needle, at + 1)
        return None

    # -- writing (under the append lock) ---------------------------------------------------

    def add(self, entries: Iterable[tuple[int, str, str, Iterable[str]]], base: int,
            cp: Checkpoint, pending: dict[str, int] | None = None) -> Checkpoint:
        """Index ``(position, id, type, tags)`` entries that follow ``base`` and advance the
        checkpoint (not fsynced) to the last of them.

        Lines a dead writer may have left past ``base`` in the touched files are cut first (a
        one-line look at each file's end), so catching up twice never lists a position twice.
        """
        files: dict[str, tuple[str | None, list[bytes]]] = {}
        last = base
        for pos, eid, type_, tags in entries:
            line = b"%012d\n" % pos
            for kind, name in (("types", type_), *(("tags", t) for t in dict.fromkeys(tags))):
                files.setdefault(self.path(kind, name), (name, []))[1].append(line)
            bucket = os.path.join(self.root, "ids", id_bucket(eid))
            files.setdefault(bucket, (None, []))[1].append(b"%012d %s\n" % (pos, eid.encode()))
            last = pos
        if last == base:
            return cp
        for path, (name, lines) in files.items():
            self._append(path, b"".join(lines), base, name, pending)
        new = Checkpoint(last, min(cp.durable, base), BOOT_ID)
        self.write_checkpoint(new, durable=False)
        return new

    def mark_durable(self, cp: Checkpoint, paths: Iterable[str]) -> Checkpoint:
        """fsync ``paths`` (every index file written since ``cp.durable``) and record that the
        index is durable through ``cp.written``. Many files are flushed with one ``syncfs``
        instead: distinct tags make one list per event, and an fsync each would cost more than
        the appends that wrote them."""
        paths = list(paths)
        if len(paths) > SYNCFS_OVER:
            fileio.syncfs(self.root)
        else:
            for path in paths:
                _fsync_path(path)
        for kind in (*KINDS, "ids"):
            if os.path.isdir(os.path.join(self.root, kind)):
                fileio.fsync_dir(os.path.join(self.root, kind))
        new = Checkpoint(cp.written, cp.written, BOOT_ID)
        self.write_checkpoint(new, durable=True)
        return new

    def touched_paths(self, entries: Iterable[tuple[int, str, str, Iterable[str]]]) -> set[str]:
        """The index files that ``entries`` write to."""
        out: set[str] = set()
        for _pos, eid, type_, tags in entries:
            out.add(self.path("types", type_))
            out.update(self.path("tags", t) for t in tags)
            out.add(os.path.join(self.root, "ids", id_bucket(eid)))
        return out

    def prepare(self, types: Iterable[str], tags: Iterable[str]) -> dict[str, int]:
        """Make unnamed files for the lists a batch would create, before the writer lock is taken.

        Creating a file costs far more than naming one, so writers do it in parallel, outside the
        lock; :meth:`add` names them under the lock, and a refused batch leaves nothing behind.
        Returns path -> descriptor; hand it to :meth:`add`, then :meth:`release`.
        """
        pending: dict[str, int] = {}
        for kind, names in (("types", types), ("tags", tags)):
            for name in names:
                path = self.path(kind, name)
                if path in pending or os.path.exists(path):
                    continue
                folder = os.path.dirname(path)
                if not os.path.isdir(folder):
                    fileio.makedirs(folder)
                fd = fileio.open_anonymous(folder)
                if fd is None:
                    return pending  # no O_TMPFILE here: lists get created under the lock
                pending[path] = fd
        return pending

    @staticmethod
    def release(pending: dict[str, int]) -> None:
        """Close the descriptors of :meth:`prepare` (unnamed ones vanish with them)."""
        for fd in pending.values():
            os.close(fd)
        pending.clear()

    def _open(self, path: str, name: str, pending: dict[str, int] | None = None) -> int:
        """Open a list for appending, creating it (and its folder, and the ``.name`` of a hashed
        file name, which keeps the index reversible) when missing."""
        try:
            return fileio.open_write(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            pass
        fileio.makedirs(os.path.dirname(path))
        if os.path.basename(path).startswith("~") and path.endswith(".pos"):
            fileio.write_file_atomic(path[:-4] + ".name", name.encode("utf-8", "surrogatepass"), durable=False)
        fd = pending.pop(path, None) if pending else None
        if fd is not None:
            try:
                fileio.link_anonymous(fd, path)
            except FileExistsError:
                pass  # named meanwhile by a catch-up of ours: append to that one
            finally:
                os.close(fd)
        return fileio.open_write(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)

    def _append(self, path: str, data: bytes, cut_after: int | None, name: str | None,
                pending: dict[str, int] | None) -> None:
        fd = self._open(path, name or "", pending)
        try:
            if cut_after is not None and _tail_after(fd, cut_after):
                # A writer died (or its index write failed) between these lines and the checkpoint.
                cut_tail(fd, path, cut_after)
            fileio.write_all(fd, data, path)
        finally:
            os.close(fd)


def _bisect(fd: int, n: int, value: int) -> int:
    """Index of the first line whose position is > ``value``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if int(os.pread(fd, 12, mid * POS_LEN)) <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _parse_positions(raw: bytes) -> list[int]:
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [int(x) for x in lines]


def _line_position(line: bytes) -> int | None:
    head = line.split(b" ", 1)[0]
    return int(head) if len(head) == 12 and head.isdigit() else None


def _tail_after(fd: int, base: int) -> bool:
    """Whether the file's last line is torn or lists a position past ``base`` (cheap: one pread)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    raw = os.pread(fd, min(size, 128), max(0, size - 128))
    if not raw.endswith(b"\n"):
        return True
    start = raw.rfind(b"\n", 0, len(raw) - 1) + 1
    pos = _line_position(raw[start:-1])
    return pos is None or pos > base


def cut_tail(fd: int, path: str, base: int) -> None:
    """Drop trailing lines for positions > ``base``, and any torn or garbled tail."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    keep = data.rfind(b"\n") + 1
    while keep > 0:
        start = data.rfind(b"\n", 0, keep - 1) + 1
        pos = _line_position(data[start : keep - 1])
        if pos is not None and pos <= base:
            break
        keep = start
    if keep != len(data):
        fileio.truncate(fd, keep, path)


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fileio.fsync(fd, path)
    finally:
        os.close(fd)
