"""The crash model: which of a run's recorded changes a power cut may keep, drop, tear or reorder.

A change is *durable* once a sync that covers it started after it finished and finished before
the cut: for file data (``write``, ``truncate``) an ``fsync``/``fdatasync`` of the same file (the
same inode, followed across renames) or a ``syncfs``; for names (``create``, ``mkdir``, ``link``,
``rename``, ``unlink``) an fsync of the folder holding them (the same folder, followed across
renames: a folder renamed whole takes its files and subfolders along), or a ``syncfs``. Durable changes are
always kept. Every other change made before the cut is *volatile*: a power cut may keep or drop
each one on its own (writeback reorders pages within a file and names within a folder), and may
tear one write at a 512-byte sector boundary or leave it zero-filled. Changes in flight at the
cut count as not made. This is the model of SQLite's ``test6.c`` crash simulation and of ALICE's
"application-level crash states", applied to a journalling file system that promises nothing
without fsync (ext4 ``data=writeback``) and to a plain disk cache alike.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

SECTOR = 512
DATA_OPS = frozenset({"write", "truncate"})
NAME_OPS = frozenset({"create", "mkdir", "link", "rename", "unlink", "exchange", "rmdir"})
FILE_SYNCS = frozenset({"fsync", "fdatasync"})
AFTER_THE_RUN = 1 << 62


def is_folder(path: str, names: dict[str, int], folders: dict[str, int]) -> bool:
    """Whether ``path`` names a folder: one made or seen as a parent, or holding a known name."""
    prefix = path + "/"
    return path in folders or any(p.startswith(prefix) for p in names) or any(p.startswith(prefix) for p in folders)


def _move_tree(src: str, dst: str, table: dict[str, int]) -> None:
    """Rename every entry under the folder ``src`` to the same place under ``dst``."""
    prefix = src + "/"
    for p in [p for p in table if p.startswith(prefix)]:
        table[dst + p[len(src):]] = table.pop(p)


@dataclass
class Change:
    """One recorded change, with the inode it touched and when it became durable."""

    i: int
    op: dict
    ino: int = -1  # the file's (or, for mkdir, rmdir, fsync_dir and a folder's rename, the folder's) identity
    folders: frozenset[int] = frozenset()  # for a name: the folder(s) whose fsync makes it durable
    moved: tuple[tuple[str, int, bool], ...] = ()  # a folder's rename: (path under it, identity, is a folder)
    durable_at: int | None = None  # index of the completed sync that makes it durable

    @property
    def kind(self) -> str:
        """The operation's name."""
        return self.op["op"]


@dataclass(frozen=True)
class CrashState:
    """One state a power cut may leave: the changes ``0..cut-1`` happened; of the volatile ones,
    ``dropped`` were lost and ``torn`` (change, bytes kept or -1 for zero-filled) was torn."""

    cut: int
    dropped: frozenset[int] = frozenset()
    torn: tuple[int, int] | None = None
    index: str = "final"  # the SQLite index: "final" (ahead of the cut), "initial" or "none"

    def describe(self) -> str:
        """A one-line name for reports."""
        tear = "" if self.torn is None else f" torn={self.torn[0]}:{self.torn[1]}"
        dropped = ",".join(map(str, sorted(self.dropped)))
        return f"cut={self.cut} dropped=[{dropped}]{tear} index={self.index}"


@dataclass
class Model:
    """The changes of one recorded run, relative to ``root`` (the folder holding every store the
    run touched), and the files that existed before it (durable)."""

    root: str
    initial: set[str]
    changes: list[Change] = field(default_factory=list)

    @classmethod
    def build(cls, ops: list[dict], root: str, initial: set[str]) -> Model:
        """Resolve inodes, folders and durability for ``ops`` (ordered by completion)."""
        model = cls(root, set(initial))
        names: dict[str, int] = {p: n for n, p in enumerate(sorted(initial))}
        folders: dict[str, int] = {}  # a folder's identity, followed across renames like a file's
        counter = [len(names)]

        def new_id() -> int:
            counter[0] += 1
            return counter[0]

        def folder(path: str) -> int:
            if path not in folders:
                folders[path] = new_id()
            return folders[path]

        for i, raw in enumerate(ops):
            op = dict(raw)
            op["path"] = model.rel(op["path"])
            if "src" in op:
                op["src"] = model.rel(op["src"])
            ch = Change(i, op)
            kind, path = op["op"], op["path"]
            if kind in NAME_OPS:
                ch.folders = frozenset(folder(os.path.dirname(p) or ".") for p in (path, op.get("src", path)))
            if kind == "create":
                names[path] = ch.ino = new_id()
            elif kind == "mkdir":
                ch.ino = folders[path] = new_id()
            elif kind == "rename" and op["src"] not in names and is_folder(op["src"], names, folders):
                ch.ino = folders.pop(op["src"]) if op["src"] in folders else new_id()
                prefix = op["src"] + "/"
                ch.moved = (*((p, n, False) for p, n in names.items() if p.startswith(prefix)),
                            *((p, n, True) for p, n in folders.items() if p.startswith(prefix)))
                _move_tree(op["src"], path, names)
                _move_tree(op["src"], path, folders)
                folders[path] = ch.ino
            elif kind == "rename":
                ch.ino = names.pop(op["src"], -1)
                names[path] = ch.ino
            elif kind == "exchange":
                a, b = names.get(op["src"], -1), names.get(path, -1)
                names[op["src"]], names[path] = b, a
            elif kind == "link":
                ch.ino = names[path] = names.get(op["src"], -1)
            elif kind == "unlink":
                ch.ino = names.pop(path, -1)
            elif kind == "fsync_dir":
                ch.ino = folder(path)
            elif kind == "rmdir":
                ch.ino = folders.pop(path, -1)
            else:
                ch.ino = names.get(path, -1)
            model.changes.append(ch)
        model._durability()
        return model

    def rel(self, path: str) -> str:
        """``path`` relative to the run's root ("" for paths outside it)."""
        r = os.path.relpath(path, self.root)
        return "" if r.startswith("..") else r

    def _durability(self) -> None:
        for ch in self.changes:
            if ch.kind in DATA_OPS:
                ch.durable_at = self._first_sync(ch, lambda s, c=ch: s.kind in FILE_SYNCS and s.ino == c.ino)
            elif ch.kind in NAME_OPS:
                ch.durable_at = self._first_sync(
                    ch, lambda s, f=ch.folders: s.kind == "fsync_dir" and s.ino in f, len(ch.folders))

    def _first_sync(self, ch: Change, covers: object, need: int = 1) -> int | None:
        done: set[int] = set()
        for s in self.changes[ch.i + 1:]:
            if s.op["t0"] < ch.op["t1"]:
                continue  # a sync that started before the change finished may not cover it
            if s.kind == "syncfs":
                return s.i
            if covers(s):  # type: ignore[operator]
                done.add(s.ino)
                if len(done) >= need or s.kind in FILE_SYNCS:
                    return s.i
        return None

    def volatile(self, cut: int) -> list[Change]:
        """The changes before ``cut`` that a power cut at ``cut`` may still lose."""
        return [c for c in self.changes[:cut]
                if (c.kind in DATA_OPS or c.kind in NAME_OPS) and (c.durable_at is None or c.durable_at >= cut)]

    def cut_time(self, cut: int) -> int:
        """The latest moment of a cut after change ``cut - 1`` and before change ``cut``: just
        before change ``cut`` completed (a change in flight counts as not made). Every call that
        returned by then happened before the power failed."""
        if cut >= len(self.changes):
            return AFTER_THE_RUN  # the power failed after the run: everything it acknowledged counts
        return max(self.changes[cut].op["t1"] - 1, self.changes[cut - 1].op["t1"] if cut else 0)


def single_faults(model: Model, cut: int) -> Iterator[CrashState]:
    """Every state with at most one fault at ``cut``: all volatile changes kept, all lost, each one
    lost alone, each write torn at its middle sector or zero-filled; the index as it ended, as
    it began, and missing."""
    vol = model.volatile(cut)
    yield CrashState(cut)
    if vol:
        yield CrashState(cut, frozenset(c.i for c in vol), index="initial")
    for c in vol:
        yield CrashState(cut, frozenset({c.i}))
        if c.kind == "write" and len(c.op["data"]) > 1:
            size = len(c.op["data"])
            keep = max(0, (size // 2) // SECTOR * SECTOR) or size // 2
            yield CrashState(cut, torn=(c.i, keep))
            yield CrashState(cut, torn=(c.i, -1), index="none")


def sampled(model: Model, rng: random.Random) -> CrashState:
    """A random state: a random cut, each volatile change lost with probability 1/2, maybe one
    write torn, the index in one of its three states."""
    cut = rng.randint(0, len(model.changes))
    vol = model.volatile(cut)
    dropped = frozenset(c.i for c in vol if rng.random() < 0.5)
    writes = [c for c in vol if c.kind == "write" and c.i not in dropped]
    torn = None
    if writes and rng.random() < 0.5:
        w = rng.choice(writes)
        size = len(w.op["data"])
        torn = (w.i, rng.choice([-1, rng.randrange(0, size + 1, SECTOR) if size > SECTOR else rng.randrange(size + 1)]))
    return CrashState(cut, dropped, torn, rng.choice(["final", "initial", "none"]))


def parse_state(text: str) -> CrashState:
    """The inverse of :meth:`CrashState.describe` (for replaying a reported state)."""
    fields = dict(part.split("=", 1) for part in text.split())
    dropped = fields.get("dropped", "[]").strip("[]")
    torn = fields.get("torn")
    return CrashState(int(fields["cut"]), frozenset(int(x) for x in dropped.split(",") if x.strip()),
                      tuple(int(x) for x in torn.split(":")) if torn else None,  # type: ignore[arg-type]
                      fields.get("index", "final"))
