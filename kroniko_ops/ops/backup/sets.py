"""Backups as a managed set: one folder (ROOT) per store holding its backups side by side.

``backup STORE --into ROOT`` picks full or incremental, names the run by its start time in UTC
to the microsecond (``20261206T021500.123456Z-full``, ``...-incr``; names sort as times do, and
a name is never reused: under the set's lock each new name is later than every name there),
publishes it as :func:`~kroniko_ops.ops.backup.backup` does (a temp name renamed into place),
then points the ``latest`` symlink at it (a new link renamed over the old one). The set's lock
(``ROOT/.lock``, never deleted) serialises runs, so two started at once make two backups, the
second an incremental on the first. ``restore ROOT`` restores the newest; :mod:`.prune` deletes
what no kept backup needs. ``docs/RUNBOOK.md`` describes the jobs built on it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ... import fileio, locking
from ...errors import InvalidArgument, StoreNotFound
from ...layout import pid_alive
from ...report import Report
from ...store import EventStore
from .chain import BaseProblem
from .container import Container
from .make import _check_base, _read_base, backup
from .manifest import MANIFEST, Manifest, ManifestError
from .sink import remove_tree
from .verify import check, verify_backup

NAME_RE = re.compile(r"\A(\d{8}T\d{6}\.\d{6}Z)-(full|incr)(\.tar)?\Z")
LATEST = "latest"
LOCK = ".lock"
STAMP = "%Y%m%dT%H%M%S"
DEFAULT_FULL_EVERY_DAYS = 7.0
_TEMP_RE = re.compile(r"\A\.tmp-(?:backup|prune|latest)-.*-(\d+)-[0-9a-f]{8}\Z")


@dataclass
class Entry:
    """One backup of a set: its name, when it was started, and its manifest (None when it does
    not read: ``problem`` says why)."""

    name: str
    path: str
    when: datetime
    manifest: Manifest | None = None
    problem: str = ""
    chain: list[str] = field(default_factory=list)  # names from its full backup to itself
    restorable: bool = False

    @property
    def kind(self) -> str:
        """``full`` or ``incremental`` (from its name)."""
        return "full" if NAME_RE.match(self.name).group(2) == "full" else "incremental"  # type: ignore[union-attr]

    @property
    def size(self) -> int:
        """Bytes this backup holds itself (its bases' files not counted)."""
        if os.path.isfile(self.path):
            return os.path.getsize(self.path)
        if self.manifest is None:
            return 0
        return sum(e.size for e in self.manifest.files.values() if not e.in_base)

    @property
    def base(self) -> str | None:
        """The name of the backup it builds on (None for a full backup)."""
        return self.chain[-2] if len(self.chain) > 1 else None

    def as_json(self) -> dict[str, Any]:
        """The ``backups --json`` line."""
        m = self.manifest
        return {"kind": "backup", "name": self.name, "path": self.path,
                "time": self.when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "backup_kind": self.kind, "head": m.head if m else None, "chain": self.chain, "base": self.base,
                "bytes": self.size, "restorable": self.restorable, "problem": self.problem or None}


def name_time(name: str) -> datetime:
    """The UTC start time a set's backup name records."""
    m = NAME_RE.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a backup set name")
    return datetime.strptime(m.group(1), STAMP + ".%fZ").replace(tzinfo=UTC)


def is_set(path: str) -> bool:
    """Whether ``path`` is a backup set's folder (not a backup itself): no manifest, and a
    ``latest`` link or a backup named like a set's."""
    if not os.path.isdir(path) or os.path.lexists(os.path.join(path, MANIFEST)):
        return False
    return os.path.islink(os.path.join(path, LATEST)) or any(NAME_RE.match(n) for n in os.listdir(path))


def listing(root: str) -> list[Entry]:
    """``backups ROOT``: the set's backups (:func:`scan`), after refusing a folder that holds
    something else (a store, a backup, other files) with exit 2."""
    if os.path.isdir(root) and not is_set(root) and [n for n in os.listdir(root) if n != LOCK]:
        raise InvalidArgument(f"{root} is not a backup set (backup STORE --into ROOT makes one); give the folder "
                              "holding the backups")
    return scan(root)


def scan(root: str) -> list[Entry]:
    """The set's backups, oldest first, with their manifests and chains."""
    if not os.path.isdir(root):
        raise StoreNotFound(f"no backup set at {root} (backup STORE --into {root} makes one)")
    entries = []
    for name in sorted(os.listdir(root)):
        if not NAME_RE.match(name):
            continue
        entry = Entry(name, os.path.join(root, name), name_time(name))
        try:
            with Container(entry.path) as c:
                entry.manifest = c.manifest()
        except (OSError, ManifestError, ValueError) as exc:
            entry.problem = f"its {MANIFEST} does not read ({exc}): not a complete backup"
        entries.append(entry)
    # Two backups of the same content made in the same second have the same manifest: a base is
    # found by its checksum and its path.
    by_path = {os.path.normpath(e.path): e for e in entries if e.manifest is not None}
    for entry in entries:
        _link(root, entry, by_path)
    return entries


def _link(root: str, entry: Entry, by_path: dict[str, Entry]) -> None:
    """Fill ``entry.chain`` (full first) and whether every base is there."""
    chain, cur = [entry.name], entry
    while cur.manifest is not None and cur.manifest.base is not None and len(chain) <= len(by_path):
        ref = cur.manifest.base
        base = by_path.get(os.path.normpath(os.path.join(root, ref.path)))
        if base is None or base.manifest is None or base.manifest.checksum != ref.manifest_sha256:
            entry.problem = entry.problem or f"its base ({ref.path}, head {ref.head}) is not in the set"
            break
        chain.append(base.name)
        cur = base
    entry.chain = chain[::-1]
    entry.restorable = not entry.problem and cur.manifest is not None and cur.manifest.base is None


def newest(root: str) -> str:
    """The path of the set's newest backup: the one ``latest`` names, else the last by name.
    Never an older one in its place: when it is damaged, restoring or verifying it fails loudly
    and ``kroniko-ops backups ROOT`` lists the others."""
    link = os.path.join(root, LATEST)
    if os.path.islink(link):
        target = os.readlink(link)
        if NAME_RE.match(target) and os.path.lexists(os.path.join(root, target)):
            return os.path.join(root, target)
    names = [n for n in sorted(os.listdir(root)) if NAME_RE.match(n)]
    if not names:
        raise StoreNotFound(f"the backup set {root} holds no backup")
    return os.path.join(root, names[-1])


def resolve(path: str) -> str:
    """``path`` itself, or for a backup set's folder its newest backup (:func:`newest`)."""
    return newest(path) if is_set(path) else path


def sweep(root: str) -> list[str]:
    """Remove what interrupted runs left in the set (temp copies of dead processes); return them."""
    removed = []
    for name in sorted(os.listdir(root)):
        m = _TEMP_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            remove_tree(os.path.join(root, name))
            removed.append(os.path.join(root, name))
    return removed


def lock(root: str, timeout: float) -> Any:
    """The set's lock, held by ``backup --into`` and ``prune`` for their whole run."""
    return locking.held(os.path.join(root, LOCK), timeout, "backup set")


def backup_into(store: str | os.PathLike[str], root: str | os.PathLike[str], *, full: bool = False,
                full_every_days: float = DEFAULT_FULL_EVERY_DAYS, archive: bool = False, lock_timeout: float = 30.0,
                progress: bool = False, durable: bool = True) -> Report:
    """Back up ``store`` into the set at ``root`` (created when missing): an incremental on the
    newest backup, or a full one when ``full``, when the set has none, when its chain's full
    backup is ``full_every_days`` old or more, or when the newest is not a backup of this
    store's history (an info finding ``backup-new-chain`` says why). Then ``latest`` names it.
    """
    store, root = os.fspath(store), os.fspath(root)
    if "://" in root:
        raise InvalidArgument(f"--into {root}: a backup set is a folder on this machine's filesystem; to keep a "
                              "store in object storage, use kroniko-ops replicate")
    if os.path.lexists(root) and (not os.path.isdir(root) or os.path.islink(root)):
        raise InvalidArgument(f"--into {root}: not a folder; a backup set is a folder of backups")
    if os.path.isdir(root) and os.path.lexists(os.path.join(root, MANIFEST)):
        raise InvalidArgument(f"--into {root}: that is a backup, not a set of backups; give the folder holding them")
    if not os.path.exists(store):
        raise StoreNotFound(f"no store at {store}")
    EventStore(store, create=False).close()  # not a store (or a legacy one): refused before ROOT is made
    fileio.makedirs(root)
    with lock(root, lock_timeout):
        stale = sweep(root)
        entries = scan(root)
        base, why = _choose_base(store, entries, full, full_every_days, lock_timeout)
        name = _new_name(entries, "incr" if base else "full") + (".tar" if archive else "")
        report = backup(store, os.path.join(root, name), incremental_from=base.path if base else None,
                        archive=archive, lock_timeout=lock_timeout, progress=progress, durable=durable)
        link_latest(root, name, durable)
    for path in stale:
        report.add("backup-stale-temp", "info", path, "removed a temp copy left by an interrupted run")
    if why:
        report.add("backup-new-chain", "info", name, why)
    report.figures.update(name=name, root=root, base=base.name if base else None, backups=len(entries) + 1)
    return report


def _choose_base(store: str, entries: list[Entry], full: bool, every: float,
                 lock_timeout: float) -> tuple[Entry | None, str]:
    """The backup to build on, or None and why a full backup is made ("" when asked for)."""
    if full:
        return None, ""
    good = [e for e in entries if e.restorable]
    if not good:
        return None, "the set holds no restorable backup yet: a full backup starts it"
    last = good[-1]
    first = next(e for e in entries if e.name == last.chain[0])
    age = _now() - first.when
    if age >= timedelta(days=every):
        return None, f"the chain's full backup {first.name} is {age.days} day(s) old (--full-every {every:g})"
    try:
        base = _read_base(last.path)
        with EventStore(store, create=False, lock_timeout=lock_timeout) as st:
            head = st.head()
        _check_base(store, base, head, lock_timeout)
    except (InvalidArgument, BaseProblem) as exc:
        return None, f"the newest backup {last.name} cannot be a base ({exc})"
    return last, ""


def _new_name(entries: list[Entry], kind: str) -> str:
    """A name later than every name in the set (the clock may step back; the set's lock keeps
    two runs from picking one name)."""
    now = _now()
    if entries and now <= entries[-1].when:
        now = entries[-1].when + timedelta(microseconds=1)
    return f"{now.strftime(STAMP)}.{now.microsecond:06d}Z-{kind}"


def _now() -> datetime:
    """The current UTC time, to the microsecond."""
    us = time.time_ns() // 1000
    return datetime.fromtimestamp(us // 1_000_000, UTC) + timedelta(microseconds=us % 1_000_000)


def link_latest(root: str, name: str, durable: bool = True) -> None:
    """Point ``root/latest`` at ``name``: a new symlink renamed over the old one, so ``latest``
    always names a whole backup."""
    tmp = os.path.join(root, f".tmp-latest-x-{os.getpid()}-{os.urandom(4).hex()}")
    os.symlink(name, tmp)
    try:
        fileio.rename(tmp, os.path.join(root, LATEST))
    except BaseException:
        fileio.unlink(tmp)
        raise
    if durable:
        fileio.fsync_dir(root)


def verify(dest: str | os.PathLike[str], *, every: bool = False, progress: bool = False) -> Report:
    """``verify-backup``: one backup; for a set's folder its newest backup, or with ``every``
    each of its backups (a finding names the backup it is about)."""
    dest = os.fspath(dest)
    if not is_set(dest):
        if every:
            raise InvalidArgument(f"--all verifies a backup set; {dest} is not the folder of one")
        return verify_backup(dest, progress=progress)
    if not every:
        return verify_backup(newest(dest), progress=progress)
    report = Report("verify-backup", dest)
    entries = scan(dest)
    if not entries:
        raise StoreNotFound(f"the backup set {dest} holds no backup")
    for entry in entries:
        one = Report("verify-backup", entry.path)
        with Container(entry.path) as container:  # each base is checked as an entry of its own
            check(entry.path, container, one, bases=False)
        for f in one.findings:
            report.add(f.code, f.severity, f"{entry.name}: {f.path}", f.message, f.position)
        report.head = max(report.head, one.head)
        report.figures["bytes"] = report.figures.get("bytes", 0) + one.figures.get("bytes", 0)
    report.figures.update(backups=len(entries), bad=sorted({f.path.split(":")[0] for f in report.problems}))
    return report.finish()
