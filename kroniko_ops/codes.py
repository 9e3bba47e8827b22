"""Every finding code, by the operation that can report it (``docs/FSCK.md`` and ``docs/RUNBOOK.md``
explain each). Codes are an interface: add them here when a module starts to report one, never
rename one. The metrics (:mod:`kroniko_ops.metrics`) publish every code of an operation, 0 when
absent, so that an alert on a code keeps its series when the problem goes away.
"""

from __future__ import annotations

FSCK = (
    "format-missing", "format-unknown", "format-garbage", "layout-missing", "layout-wrong-kind", "layout-symlink",
    "layout-special-file", "stale-temp-file", "stray-file", "segment-gap", "segment-overlap", "segment-superseded",
    "segment-orphan-index", "segment-seal-unfinished", "segment-spare-dirty", "segment-corrupt", "pack-corrupt",
    "chain-mismatch",
    "synced-damaged", "synced-ahead", "synced-mismatch", "store-poisoned", "log-torn-tail", "log-uncommitted-tail",
    "log-tail-oversized", "log-bad-line", "log-position-mismatch", "log-duplicate-id", "event-hash-mismatch",
    "event-unreadable", "index-missing", "index-corrupt", "index-checkpoint-ahead", "index-checkpoint-mismatch",
    "index-behind", "index-trailing-garbage", "index-superseded", "index-missing-entry", "index-extra-entry",
    "dangling-reference", "stopped", "index-unchecked", "accept-loss-needed", "accept-loss-refused",
    "acknowledged-lost",
)
LEGACY = (
    "missing-event", "dangling-event", "event-id-mismatch", "index-unsafe-name", "index-name-collision",
    "legacy-log-glued-line", "legacy-race-log-order", "legacy-race-index-order", "legacy-index-duplicate-entry",
    "legacy-store",
)
MIGRATE = (
    "legacy-changed", "legacy-event-unportable", "legacy-id-unportable", "legacy-tag-renamed",
    "legacy-untagged-property",
)
RECOVER = ("recover-refused",)
COMPACT = (
    "compact-pack", "compact-merge", "segment-packed", "pack-superseded", "lost-found-pruned", "index-upkeep",
)
BACKUP = (
    "backup-manifest-mismatch", "backup-file-missing", "backup-file-extra", "backup-hash-mismatch",
    "backup-chain-mismatch", "backup-base-missing", "backup-base-mismatch", "backup-event-missing",
    "backup-segment-corrupt", "backup-pack-corrupt", "backup-archive-corrupt", "backup-base",
)
BACKUP_TEMP = ("backup-stale-temp", "backup-new-chain")
RESTORE = ("restore-stale-temp", "restore-refused", "restore-warnings")
REPLICA = ("replica-manifest", "replica-orphan")
PRUNE = ("prune-removed", "prune-kept", "prune-incomplete")

# What each command can report. restore reports the verification's codes and, for a restored
# store that does not pass fsck, ``restore-<fsck code>``.
BY_OPERATION: dict[str, tuple[str, ...]] = {
    "fsck": FSCK + LEGACY,
    "recover": FSCK + RECOVER,
    "reindex": FSCK,
    "compact": FSCK + COMPACT,
    "backup": BACKUP + BACKUP_TEMP + ("segment-corrupt", "pack-corrupt"),
    "verify-backup": BACKUP + REPLICA,
    "restore": BACKUP + RESTORE + tuple(f"restore-{c}" for c in FSCK),
    "replicate": ("backup-stale-temp",),
    "prune": BACKUP + PRUNE,
    "migrate": FSCK + LEGACY + MIGRATE,
}

ALL: frozenset[str] = frozenset(c for codes in BY_OPERATION.values() for c in codes)


def for_operation(operation: str) -> tuple[str, ...]:
    """The codes ``operation`` can report (empty for a command that reports none)."""
    return BY_OPERATION.get(operation, ())
