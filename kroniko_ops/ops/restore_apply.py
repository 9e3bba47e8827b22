"""Building a store from a chain of verified backups: the copying half of ``restore``.

Every backup is a folder by now (an archive is first extracted safely, see
:func:`extract_archive`). The new store is written into a temp folder through ``fileio``: the
full backup's ``FORMAT``, then for each backup in order the log lines up to the restore point,
each event (a loose copy, or a whole pack when the pack lies below the restore point, else the
event read out of its pack), and the index lines cut to the restore point.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from dataclasses import dataclass

from .. import fileio
from ..errors import StoreCorrupted
from ..log import LINE_LEN
from ..packs import Pack, parse_name
from ..progress import progress
from .archive import check_members, open_archive
from .backup_index import checkpoint_bytes, cut_lines
from .backup_verify import fd_chunks
from .manifest import Manifest

LOG_CHUNK = 16384 * LINE_LEN  # whole lines per read
STORE_DIRS = ("events", "index", "index/ids", "index/tags", "index/types", "locks", "log", "lost-found", "packs")


@dataclass
class Link:
    """One backup of a restore chain: where its files are (a folder) and its manifest."""

    path: str
    manifest: Manifest

    def upto(self, target: int) -> int:
        """The last position this backup contributes to a restore to ``target``."""
        return min(self.manifest.head, target)


def extract_archive(path: str, manifest: Manifest, into: str) -> None:
    """Extract a verified backup archive into the new folder ``into``, refusing anything but
    layout files and folders (:func:`check_members`, before writing a byte) and checking each
    file's SHA-256 as it is written."""
    tar, members = open_archive(path)
    try:
        check_members(path, members, into)  # checked before the restore began; again, cheaply
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fileio.makedirs(into)
            for m in members:
                target = os.path.join(into, *m.name.split("/"))
                if m.isdir():
                    fileio.makedirs(target)
                    continue
                fileio.makedirs(os.path.dirname(target))
                out = fileio.open_write(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                h = hashlib.sha256()
                try:
                    for chunk in fd_chunks(fd, m.offset_data, m.size):
                        h.update(chunk)
                        fileio.write_all(out, chunk, target)
                finally:
                    os.close(out)
                entry = manifest.files.get(m.name)
                if m.name != "MANIFEST.json" and (entry is None or entry.sha256 != h.hexdigest()):
                    raise StoreCorrupted(f"archive {path}: member {m.name} changed since it was verified")
        finally:
            os.close(fd)
    finally:
        tar.close()


class Builder:
    """Writes the new store into ``root`` (a temp folder), backup after backup."""

    def __init__(self, root: str, target: int, quiet: bool) -> None:
        self.root, self.target, self.quiet = root, target, quiet
        self.events = 0
        self.bytes = 0
        self.index_ok = True

    def start(self, full: Link) -> None:
        """Lay out the folders and copy ``FORMAT`` from the full backup."""
        for d in STORE_DIRS:
            fileio.makedirs(os.path.join(self.root, d))
        self._write("FORMAT", fileio.read_file(os.path.join(full.path, "FORMAT")))
        fd = fileio.open_write(os.path.join(self.root, "log", "append.log"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.close(fd)

    def _write(self, rel: str, data: bytes, mode: int = 0o644, append: bool = False) -> None:
        path = os.path.join(self.root, *rel.split("/"))
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_EXCL)
        fd = fileio.open_write(path, flags, mode)
        try:
            fileio.write_all(fd, data, path)
        finally:
            os.close(fd)
        self.bytes += len(data)

    def _copy_file(self, src: str, rel: str, mode: int = 0o644) -> None:
        path = os.path.join(self.root, *rel.split("/"))
        out = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for chunk in fd_chunks(fd, 0, os.fstat(fd).st_size):
                fileio.write_all(out, chunk, path)
                self.bytes += len(chunk)
        finally:
            os.close(fd)
            os.close(out)

    def apply(self, link: Link) -> None:
        """Add one backup's positions up to the restore point: log, events, index."""
        m = link.manifest
        last = link.upto(self.target)
        if last < m.first:
            return
        packs = self._copy_packs(link, last)
        ranges = sorted(packs)
        starts = [a for a, _ in ranges]
        log_path = os.path.join(self.root, "log", "append.log")
        out = fileio.open_write(log_path, os.O_WRONLY | os.O_APPEND)
        src = os.open(os.path.join(link.path, *m.log_name.split("/")), os.O_RDONLY | os.O_CLOEXEC)
        size = (last - m.first + 1) * LINE_LEN
        chunks = fd_chunks(src, 0, size, LOG_CHUNK)
        try:
            pos = m.first
            for chunk in progress(chunks, -(-size // LOG_CHUNK), "restore", self.quiet):
                fileio.write_all(out, chunk, log_path)
                self.bytes += len(chunk)
                pos = self._events(link, chunk, pos, packs, ranges, starts)
        finally:
            os.close(src)
            os.close(out)
            for pack in packs.values():
                if pack is not None:
                    pack.close()
        self.events += last - m.first + 1
        self._copy_index(link, last)

    def _events(self, link: Link, chunk: bytes, pos: int, packs: dict[tuple[int, int], Pack | None],
                ranges: list[tuple[int, int]], starts: list[int]) -> int:
        for off in range(0, len(chunk), LINE_LEN):
            raw = chunk[off : off + LINE_LEN]
            i = bisect.bisect_right(starts, pos) - 1
            packed = i >= 0 and ranges[i][1] >= pos
            if packed and packs[ranges[i]] is None:
                pos += 1
                continue  # the whole pack was copied
            eid = raw[13:77].rstrip(b" ").decode("ascii")
            if packed:
                pack = packs[ranges[i]]
                assert pack is not None
                data = pack.read(pos, pos)[0]
            else:
                data = fileio.read_file(os.path.join(link.path, "events", eid + ".json"))
            if hashlib.sha256(data).hexdigest() != raw[78:142].decode("ascii"):
                raise StoreCorrupted(f"{link.path}: the event at position {pos} changed since it was verified")
            self._write(f"events/{eid}.json", data, 0o444)
            pos += 1
        return pos

    def _copy_packs(self, link: Link, last: int) -> dict[tuple[int, int], Pack | None]:
        """Copy the packs lying wholly below the restore point; open the others for reading.
        Maps each pack's range to None (copied) or the open pack."""
        out: dict[tuple[int, int], Pack | None] = {}
        for rel, (a, b) in link.manifest.packs.items():
            if a > last:
                continue
            parsed = parse_name(os.path.basename(rel))
            if parsed is None or parsed[:2] != (a, b):
                raise StoreCorrupted(f"{link.path}: pack file {rel} does not name its range {a}..{b}")
            if b <= last:
                for suffix in (".pack", ".idx"):
                    name = rel[:-5] + suffix
                    self._copy_file(os.path.join(link.path, *name.split("/")), name, 0o444)
                out[(a, b)] = None
            else:
                out[(a, b)] = Pack(os.path.join(link.path, "packs"), a, b)
        return out

    def _copy_index(self, link: Link, last: int) -> None:
        m = link.manifest
        for rel in sorted(m.files):
            if not rel.startswith("index/") or rel == "index/CHECKPOINT":
                continue
            data = fileio.read_file(os.path.join(link.path, *rel.split("/")))
            if rel.endswith(".name"):
                if not os.path.exists(os.path.join(self.root, *rel.split("/"))):
                    self._write(rel, data)
                continue
            try:
                kept = cut_lines(data, m.first - 1, last, fixed=rel.endswith(".pos"))
            except ValueError:
                self.index_ok = False  # rebuilt from the events after the copy
                continue
            if kept:
                self._write(rel, kept, append=True)

    def finish(self) -> None:
        """Write the index checkpoint: the index covers every restored position."""
        self._write("index/CHECKPOINT", checkpoint_bytes(self.target))
