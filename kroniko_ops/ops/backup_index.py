"""The index part of backups: copy a store's index cut to a position range, or build its lines.

The index is derived data, so a backup could rebuild it from the events; copying the source's
files and cutting them is much cheaper (it reads no event). Lines in ``(after, upto]`` are kept:
``.pos`` lines are fixed width and found by bisection, ``.ids`` lines are scanned from the ends.
Anything that does not parse raises :class:`IndexDamaged`, and the caller builds the lines from
the events instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

from .. import fileio
from ..index import BOOT_ID, POS_LEN, Checkpoint, Index, encode_name, id_bucket
from .manifest import FILE_RE

Entry = tuple[int, str, str, Iterable[str]]
_ALL_POS = re.compile(rb"(?:\d{12}\n)*")
_ALL_IDS = re.compile(rb"(?:\d{12} [A-Za-z0-9._-]{1,64}\n)*")
KINDS = ("types", "tags", "ids")


class IndexDamaged(ValueError):
    """An index file whose lines do not parse where they must."""


def _bisect(data: bytes, n: int, value: int) -> int:
    """Index of the first fixed-width line whose position is > ``value``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if int(data[mid * POS_LEN : mid * POS_LEN + 12]) <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def cut_lines(data: bytes, after: int, upto: int, fixed: bool) -> bytes:
    """The lines of an index file for positions in ``(after, upto]``.

    Only a torn tail is dropped (a partial last line, or zeros a power loss left where unsynced
    lines were): those are lines a writer is appending right now or a dead writer left past the
    checkpoint. Every other line must parse, else :class:`IndexDamaged`: a damaged index is
    rebuilt from the events rather than copied.
    """
    end = len(data.rstrip(b"\0"))
    end = data.rfind(b"\n", 0, end) + 1
    whole = _ALL_POS if fixed else _ALL_IDS
    if not whole.fullmatch(data, 0, end):
        raise IndexDamaged("a line does not parse")
    if fixed:
        n = end // POS_LEN
        if n and int(data[:12]) > after and int(data[end - POS_LEN : end - 1]) <= upto:
            return data[:end] if end < len(data) else data  # the common case: all of it
        return data[_bisect(data, n, after) * POS_LEN : _bisect(data, n, upto) * POS_LEN]
    while end > 0:  # positions ascend: drop lines past upto from the end ...
        start = data.rfind(b"\n", 0, end - 1) + 1
        if int(data[start : start + 12]) <= upto:
            break
        end = start
    begin = 0
    while after and begin < end:  # ... and lines up to after from the front
        if int(data[begin : begin + 12]) > after:
            break
        begin = data.index(b"\n", begin) + 1
    return data[begin:end]


def index_lines(entries: Iterable[Entry]) -> tuple[dict[str, bytearray], dict[str, bytes]]:
    """The index lines of ``entries`` (as :meth:`Index.add` writes them), by backup-relative path,
    and the ``.name`` files of hashed names."""
    files: dict[str, bytearray] = {}
    names: dict[str, bytes] = {}
    for pos, eid, type_, tags in entries:
        line = b"%012d\n" % pos
        for kind, name in (("types", type_), *(("tags", t) for t in dict.fromkeys(tags))):
            enc = encode_name(name)
            rel = f"index/{kind}/{enc}.pos"
            files.setdefault(rel, bytearray()).extend(line)
            if enc.startswith("~"):
                names[f"index/{kind}/{enc}.name"] = name.encode("utf-8", "surrogatepass")
        files.setdefault(f"index/ids/{id_bucket(eid)}", bytearray()).extend(b"%012d %s\n" % (pos, eid.encode()))
    return files, names


def read_index(src_index: str, after: int, upto: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The lines for positions in ``(after, upto]`` of every index file of a store, by
    backup-relative path (files left empty are left out), and its ``.name`` files.

    Raises :class:`IndexDamaged` when a file does not parse or has an unexpected name.
    """
    out: dict[str, bytes] = {}
    names: dict[str, bytes] = {}
    for kind in KINDS:
        try:
            dir_fd = os.open(os.path.join(src_index, kind), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            _read_folder(kind, dir_fd, after, upto, out, names)
        finally:
            os.close(dir_fd)
    return out, names


def _read_folder(kind: str, dir_fd: int, after: int, upto: int, out: dict[str, bytes],
                 names: dict[str, bytes]) -> None:
    fixed = kind != "ids"
    prefix = f"index/{kind}/"
    for name in os.listdir(dir_fd):
        rel = prefix + name
        if name.startswith(".tmp-"):
            continue
        if not FILE_RE.match(rel):
            raise IndexDamaged(f"unexpected index file {rel}")
        try:
            data = fileio.read_file(name, dir_fd)
        except FileNotFoundError:
            raise IndexDamaged(f"{rel} vanished while it was copied") from None
        if name.endswith(".name"):
            names[rel] = data
            continue
        kept = cut_lines(data, after, upto, fixed)
        if kept:
            out[rel] = kept


def merge_index(cut: dict[str, bytes], names: dict[str, bytes], extra: dict[str, bytearray],
                extra_names: dict[str, bytes]) -> Iterator[tuple[str, bytes]]:
    """``(relative path, content)`` of the index files of a backup: the copied lines of ``cut``
    followed by the ``extra`` lines (positions the source index did not hold yet), sorted, plus
    the ``.name`` file of every hashed name used. Raises :class:`IndexDamaged` when one is missing."""
    rels = sorted(set(cut) | set(extra))
    for rel in rels:
        more = extra.get(rel)
        yield rel, cut[rel] if more is None else cut.get(rel, b"") + bytes(more)
    for rel in rels:
        if rel.endswith(".pos") and os.path.basename(rel).startswith("~"):
            name_rel = rel[:-4] + ".name"
            raw = extra_names.get(name_rel, names.get(name_rel))
            if raw is None:
                raise IndexDamaged(f"{name_rel} is missing beside its hashed index file")
            yield name_rel, raw


def checkpoint_bytes(head: int) -> bytes:
    """A ``CHECKPOINT`` saying the index is written and durable through ``head``."""
    return Checkpoint(head, head, BOOT_ID).render()


def rebuild_index(root: str, entries: Iterable[Entry], head: int, durable: bool, chunk: int = 50_000) -> None:
    """Replace the index of the (new, unpublished) store at ``root`` by one built from ``entries``.

    Only used on a store restore is still building in its temp folder: its index files are
    copies, so removing them loses nothing.
    """
    index_root = os.path.join(root, "index")
    for kind in KINDS:
        folder = os.path.join(index_root, kind)
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            fileio.unlink(os.path.join(folder, name))
    index = Index(index_root)
    cp = Checkpoint(0, 0, BOOT_ID)
    batch: list[Entry] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) >= chunk:
            cp = index.add(batch, cp.written, cp)
            batch = []
    if batch:
        cp = index.add(batch, cp.written, cp)
    if durable:
        for kind in KINDS:
            folder = os.path.join(index_root, kind)
            for name in os.listdir(folder) if os.path.isdir(folder) else ():
                fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    fileio.fsync(fd, name)
                finally:
                    os.close(fd)
            if os.path.isdir(folder):
                fileio.fsync_dir(folder)
    fileio.write_file_atomic(index.checkpoint_path, checkpoint_bytes(head), durable)
