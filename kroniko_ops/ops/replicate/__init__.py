"""Replication to object storage (``docs/RUNBOOK.md``, "Off the machine").

:func:`replicate` follows a store into ``s3://bucket/prefix`` or a folder; :func:`backup`,
:func:`verify_backup` and :func:`restore` take a replica URL as well as a backup folder or
archive, and hand the latter to :mod:`kroniko_ops.ops.backup`.
"""

from __future__ import annotations

import os
from datetime import datetime

from ...errors import InvalidArgument
from ...objstore import Retry, is_url
from ...report import Report
from .. import backup as local
from ..backup import sets
from .fetch import is_replica, restore_replica, verify_replica
from .follow import backup_to_url, replicate
from .retention import parse_duration


def backup(store: str | os.PathLike[str], dest: str, *, incremental_from: str | None = None, archive: bool = False,
           progress: bool = False, retry: Retry | None = None) -> Report:
    """A backup of ``store`` into ``dest``: an ``s3://`` URL (one snapshot, a replica with one
    manifest, into an empty prefix) or a folder or archive (:func:`kroniko_ops.ops.backup.backup`)."""
    if not is_url(dest):
        return local.backup(store, dest, incremental_from=incremental_from, archive=archive, progress=progress)
    if incremental_from or archive:
        raise InvalidArgument("--incremental-from and --archive are for folder backups; a backup to s3:// is a "
                              "full snapshot (use replicate to keep one up to date); nothing was written")
    return backup_to_url(store, dest, retry=retry)


def verify_backup(dest: str, *, every: bool = False, progress: bool = False, retry: Retry | None = None) -> Report:
    """Verify a replica (``s3://`` URL or replica folder), or a backup folder, archive or set
    (with ``every``, each backup of the set)."""
    if is_replica(dest):
        if every:
            raise InvalidArgument("--all is for backup sets; verify-backup URL already checks every manifest of a "
                                  "replica's history")
        return verify_replica(dest, retry=retry)
    return sets.verify(dest, every=every, progress=progress)


def restore(source: str, target: str, *, to_position: int | None = None, to_time: str | datetime | None = None,
            progress: bool = False, retry: Retry | None = None, durable: bool = True) -> Report:
    """Restore a replica or a backup into the new store ``target``, up to ``to_position`` or
    ``to_time`` (the last batch committed at or before it). ``durable=False`` skips the
    fsyncs (tests only)."""
    if is_replica(source):
        if to_position is not None and to_time is not None:
            raise InvalidArgument("give --to-position or --to-time, not both; nothing was written")
        return restore_replica(source, target, to_position=to_position, to_time=to_time, retry=retry,
                               progress=progress, durable=durable)
    return local.restore(source, target, to_position=to_position, to_time=to_time, progress=progress,
                         durable=durable)


__all__ = ["backup", "parse_duration", "replicate", "restore", "verify_backup"]
