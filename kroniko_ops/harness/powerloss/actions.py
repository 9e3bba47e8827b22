"""The maintenance operations the simulator cuts the power during, each with what must hold in
every crash state: the store keeps every event (checked for all operations), and what the
operation made is either absent or complete and sound."""

from __future__ import annotations

import os

from ...errors import KronikoError
from ...format import segment as segfmt
from ...store import EventStore
from .run import ACTIONS, STORE, Action


def _nothing(root: str) -> None:
    """No preparation."""


def _no_problems(root: str) -> list[str]:
    return []


def _events(path: str) -> list[tuple[int, str]]:
    with EventStore(path, create=False) as s:
        return [(e.position, e.id) for e in s.read()]


def _complete_copy(made: str, source: str, what: str) -> list[str]:
    """A copy of the store that exists under its final name must hold a prefix of the store's
    events, whole (it was made from a consistent head)."""
    if not os.path.exists(made):
        return []
    try:
        got, want = _events(made), _events(source)
    except KronikoError as exc:
        return [f"the {what} at {made} exists but does not open: {exc}"]
    if not got or got != want[: len(got)]:
        return [f"the {what} holds {len(got)} events that are not the store's first {len(got)}"]
    return []


def _backup_run(root: str) -> None:
    from ...ops.backup import backup

    backup(os.path.join(root, STORE), os.path.join(root, "backup"))


def _backup_verify(root: str) -> list[str]:
    from ...ops.backup import verify_backup

    dest = os.path.join(root, "backup")
    if not os.path.exists(dest):
        return []
    report = verify_backup(dest)
    return [] if report.exit_code == 0 else [f"the backup under its final name does not verify: "
                                             f"{sorted({f.code for f in report.findings})}"]


def _restore_prepare(root: str) -> None:
    from ...ops.backup import backup

    backup(os.path.join(root, STORE), os.path.join(root, "bk"))


def _restore_run(root: str) -> None:
    from ...ops.backup import restore

    restore(os.path.join(root, "bk"), os.path.join(root, "restored"))


def _compact_run(root: str) -> None:
    from ...ops.compact import compact

    compact(os.path.join(root, STORE))


def _reindex_run(root: str) -> None:
    from ...ops.recovery import reindex

    reindex(os.path.join(root, STORE))


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


def _recover_run(root: str) -> None:
    from ...ops.recovery import recover

    recover(os.path.join(root, STORE))


def _migrate_prepare(root: str) -> None:
    from ...legacy.synth import write_shop_store

    write_shop_store(os.path.join(root, "legacy"), 40, seed=3)


def _migrate_run(root: str) -> None:
    from ...legacy.migrate import migrate

    migrate(os.path.join(root, "legacy"), os.path.join(root, "migrated"))


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
    "backup": Action(_nothing, _backup_run, _backup_verify, "backup"),
    "restore": Action(_restore_prepare, _restore_run,
                      lambda root: _complete_copy(os.path.join(root, "restored"), os.path.join(root, STORE), "restore"),
                      "restored"),
    "compact": Action(_nothing, _compact_run, _no_problems),
    "reindex": Action(_nothing, _reindex_run, _no_problems),
    "recover": Action(_recover_prepare, _recover_run, _no_problems),
    "migrate": Action(_migrate_prepare, _migrate_run, _migrate_verify, "migrated"),
})
