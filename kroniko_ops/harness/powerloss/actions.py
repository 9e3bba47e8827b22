"""The maintenance operations the simulator cuts the power during, each with what must hold in
every crash state: the store keeps every event (checked for all operations), and what the
operation made is either absent or complete and sound."""

from __future__ import annotations

import os

from ...errors import KronikoError
from ...format import segment as segfmt
from ...report import Report
from ...store import EventStore
from .run import ACTIONS, STORE, Action


def _nothing(root: str) -> None:
    """No preparation."""


def _no_problems(root: str) -> list[str]:
    return []


def _events(path: str) -> list[tuple[int, str]]:
    with EventStore(path, create=False) as s:
        return [(e.position, e.id) for e in s.read()]


PREFIX = "restore-to-"  # a file in the run's root naming the batch boundary the second restore stops at


def _restore_targets(root: str) -> list[tuple[str, int | None]]:
    """What the restore operation makes: the whole backup, and a prefix up to a batch boundary."""
    cut = next(int(n[len(PREFIX):]) for n in os.listdir(root) if n.startswith(PREFIX))
    return [("restored", None), (f"restored-to-{cut}", cut)]


def _restored_whole(root: str) -> list[str]:
    """A restored store that exists under its final name holds exactly the backup's events (the
    source store's up to the backup's head), or exactly those up to the position asked for: not
    a prefix of them, not more."""
    from ...ops.backup import manifest

    with open(os.path.join(root, "bk", manifest.MANIFEST), "rb") as f:
        head = manifest.parse(f.read()).head
    out = []
    for name, upto in _restore_targets(root):
        made = os.path.join(root, name)
        if not os.path.exists(made):
            continue
        try:
            got, want = _events(made), _events(os.path.join(root, STORE))[: head if upto is None else upto]
        except KronikoError as exc:
            out.append(f"the restored store at {made} exists but does not open: {exc}")
            continue
        if got != want:
            out.append(f"the restored store {name} holds {len(got)} events, not exactly the {len(want)} asked for"
                       + ("" if got == want[: len(got)] else " (nor a prefix of them)"))
    return out


def _backup_run(root: str) -> Report:
    from ...ops.backup import backup

    return backup(os.path.join(root, STORE), os.path.join(root, "backup"))


def _backup_verify(root: str) -> list[str]:
    from ...ops.backup import verify_backup

    dest = os.path.join(root, "backup")
    if not os.path.exists(dest):
        return []
    report = verify_backup(dest)
    return [] if report.exit_code == 0 else [f"the backup under its final name does not verify: "
                                             f"{sorted({f.code for f in report.findings})}"]


def _backup_audit(root: str) -> list[str]:
    """The backup the run made verifies, and a copy whose manifest names another head chain
    (its checksum recomputed, so only the chain comparison can tell) does not."""
    import shutil

    from ...ops.backup import manifest, verify_backup

    problems = _backup_verify(root)
    dest = os.path.join(root, "backup")
    if problems or not os.path.exists(dest):
        return problems or ["the backup was not made"]
    forged = os.path.join(os.path.dirname(root), "forged-backup")
    shutil.copytree(dest, forged)
    try:
        path = os.path.join(forged, manifest.MANIFEST)
        with open(path, "rb") as f:
            m = manifest.parse(f.read())
        m.chain = "%064x" % (int(m.chain, 16) ^ 1)
        os.chmod(path, 0o644)
        with open(path, "wb") as f:
            f.write(m.render())
        report = verify_backup(forged)
    finally:
        shutil.rmtree(forged, ignore_errors=True)
    if report.exit_code == 0:
        return ["verify-backup accepts a backup whose manifest names another head chain (checksum recomputed)"]
    return []


def _restore_prepare(root: str) -> None:
    from ...ops.backup import backup

    source = os.path.join(root, STORE)
    backup(source, os.path.join(root, "bk"))
    with EventStore(source, create=False) as s:
        head = s.head()
        cut = max(r.position for r in s.records(1, max(1, head // 2)) if r.commit)
    with open(os.path.join(root, f"{PREFIX}{cut}"), "wb"):
        pass


def _restore_run(root: str) -> Report | None:
    """Restore what is not there yet (all of it, the first time); the first report that is not
    clean, else the last."""
    from ...ops.backup import restore

    report = None
    for name, upto in _restore_targets(root):
        if not os.path.exists(os.path.join(root, name)):
            report = restore(os.path.join(root, "bk"), os.path.join(root, name), to_position=upto)
            if report.exit_code not in (0, 1):
                return report
    return report


def _restore_audit(root: str) -> list[str]:
    missing = [name for name, _ in _restore_targets(root) if not os.path.exists(os.path.join(root, name))]
    return [f"{', '.join(missing)} not restored"] if missing else _restored_whole(root)


def _compact_run(root: str) -> Report:
    from ...ops.compact import compact

    return compact(os.path.join(root, STORE))


def _reindex_run(root: str) -> Report:
    from ...ops.recovery import reindex

    return reindex(os.path.join(root, STORE))


def _recover_prepare(root: str) -> None:
    """Leave what a writer that died mid-batch leaves: whole records without their commit mark
    and a torn one after them, for recover to cut."""
    from ...format import record

    store = os.path.join(root, STORE)
    with EventStore(store, create=False) as s:
        tail = s.synced_state()
    path = os.path.join(store, "log", segfmt.seg_name(tail.segment))
    data, _sizes, _chain = record.encode(tail.position + 1, tail.chain,
                                         [(f"dead-{i}", b'{"data":null,"id":"x","metadata":null,"tags":[],"type":"D"}')
                                          for i in range(3)])
    with open(path, "r+b") as f:  # where the next batch goes: over the preallocated zeros
        f.seek(tail.end)
        f.write(data[: len(data) - 40])


def _recover_run(root: str) -> Report:
    from ...ops.recovery import recover

    return recover(os.path.join(root, STORE))


def _migrate_prepare(root: str) -> None:
    from ...legacy.synth import write_shop_store

    write_shop_store(os.path.join(root, "legacy"), 40, seed=3)


def _migrate_run(root: str) -> Report:
    from ...legacy.migrate import migrate

    return migrate(os.path.join(root, "legacy"), os.path.join(root, "migrated"))


def _migrate_verify(root: str) -> list[str]:
    made = os.path.join(root, "migrated")
    if not os.path.exists(made):
        return []
    try:
        with EventStore(made, create=False) as s:
            n = sum(1 for _ in s.read())
            head = s.head()
    except KronikoError as exc:
        return [f"the migrated store exists but does not open: {exc}"]
    return [] if n == head == 40 else [f"the migrated store holds {n} events (head {head}), not all 40"]


ACTIONS.update({
    "backup": Action(_nothing, _backup_run, _backup_verify, "backup", _backup_audit),
    "restore": Action(_restore_prepare, _restore_run, _restored_whole, None, _restore_audit),
    "compact": Action(_nothing, _compact_run, _no_problems),
    "reindex": Action(_nothing, _reindex_run, _no_problems),
    "recover": Action(_recover_prepare, _recover_run, _no_problems),
    "migrate": Action(_migrate_prepare, _migrate_run, _migrate_verify, "migrated"),
})
