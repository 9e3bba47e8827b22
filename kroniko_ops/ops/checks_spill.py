"""A disk-backed partitioned join: the exact comparison behind a digest mismatch, in bounded memory.

Rows are written to one of up to :data:`MAX_PARTS` temp files chosen by the hash of a key (an
event id, an index file's name), so all rows about one key land in one partition; each
partition is then loaded and compared on its own. With ``rows_per_part`` rows per partition,
memory is that partition, not the store (up to ``MAX_PARTS * rows_per_part`` rows; beyond,
partitions grow linearly). The temp files live in the system temp folder, never in the store.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Iterator
from typing import Any

import orjson

MAX_PARTS = 256
ROWS_PER_PART = 65_536


class Spill:
    """Rows partitioned by key hash into temp files; use as a context manager."""

    def __init__(self, expected_rows: int, rows_per_part: int = ROWS_PER_PART) -> None:
        self.parts = max(1, min(MAX_PARTS, -(-expected_rows // rows_per_part)))
        self._dir = tempfile.TemporaryDirectory(prefix="kroniko-fsck-")
        self._files = [open(os.path.join(self._dir.name, str(i)), "wb", buffering=1 << 16)
                       for i in range(self.parts)]

    def put(self, key: Hashable, row: list[Any]) -> None:
        """Store ``row`` (JSON-able) in the partition of ``key``."""
        self._files[hash(key) % self.parts].write(orjson.dumps(row) + b"\n")

    def partitions(self) -> Iterator[list[list[Any]]]:
        """Each partition's rows, one partition in memory at a time."""
        for f in self._files:
            f.close()
        for i in range(self.parts):
            path = os.path.join(self._dir.name, str(i))
            with open(path, "rb") as f:
                rows = [orjson.loads(line) for line in f]
            os.unlink(path)  # a temp file of this process, outside the store
            yield rows

    def close(self) -> None:
        """Remove the temp files."""
        for f in self._files:
            f.close()
        self._dir.cleanup()

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
