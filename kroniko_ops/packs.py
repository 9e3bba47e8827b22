"""Pack files: many committed events in one file, found by position (see docs/FORMAT.md).

The engine only reads packs through :class:`PackSet`; compaction writes them.
"""

from __future__ import annotations

import os


class PackSet:
    """The packs of one store, found by position. Re-lists the folder when asked to refresh,
    because compaction may publish a pack (and remove the loose files it holds) at any time."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def get(self, position: int) -> bytes | None:
        """The stored bytes of the event at ``position``, or None when no pack holds it."""
        if not os.path.isdir(self.folder) or not any(
            n.endswith(".pack") for n in os.listdir(self.folder)
        ):
            return None
        raise NotImplementedError("pack reading arrives with compaction")
