"""Pack files: many committed events in one file, found by position (see docs/FORMAT.md).

The engine only reads packs through :class:`PackSet`; compaction writes them; fsck verifies
them through :func:`check_packs`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Report


def _has_packs(folder: str) -> bool:
    return os.path.isdir(folder) and any(n.endswith(".pack") for n in os.listdir(folder))


class PackSet:
    """The packs of one store, found by position. Re-lists the folder when asked to refresh,
    because compaction may publish a pack (and remove the loose files it holds) at any time."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def get(self, position: int) -> bytes | None:
        """The stored bytes of the event at ``position``, or None when no pack holds it."""
        if not _has_packs(self.folder):
            return None
        raise NotImplementedError("pack reading arrives with compaction")


def check_packs(root: str, report: Report, full: bool) -> None:
    """Verify every pack of the store at ``root`` (checksum, offset index and, when ``full``,
    each event's hash against the log), adding ``pack-corrupt`` findings to ``report``."""
    if _has_packs(os.path.join(root, "packs")):
        raise NotImplementedError("pack verification arrives with compaction")
