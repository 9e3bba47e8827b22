"""Where a backup or a restore may write: never inside the folder it reads, never around it, and
never inside a store or a backup (whose tools would then find a stray folder, or a segment
name, that nobody can repair). Paths are compared after resolving symbolic links, so a link
that leads back into the source is caught too."""

from __future__ import annotations

import os
import re

from ...errors import InvalidArgument
from ...layout import FORMAT_LINE

_MARKERS = ("FORMAT", "MANIFEST.json")  # a store's and a backup's top-level file


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _within(inner: str, outer: str) -> bool:
    """Whether the resolved ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


_REPLICA_MANIFEST = re.compile(r"\A\d{12}\.json\Z")  # manifests/<seq>.json of a folder replica


def _is_replica(folder: str) -> bool:
    try:
        return any(_REPLICA_MANIFEST.match(n) for n in os.listdir(os.path.join(folder, "manifests")))
    except OSError:
        return False


def _holder(path: str) -> str | None:
    """The nearest folder above ``path`` (resolved) that is a store, a backup or a folder
    replica, if any."""
    folder = os.path.dirname(path)
    while True:
        if _is_replica(folder):
            return folder
        for marker in _MARKERS:
            candidate = os.path.join(folder, marker)
            if marker == "MANIFEST.json" and os.path.isfile(candidate):
                return folder
            if marker == "FORMAT" and os.path.isfile(candidate):
                try:
                    with open(candidate, "rb") as f:
                        if f.read(len(FORMAT_LINE)) == FORMAT_LINE.encode():
                            return folder
                except OSError:
                    pass
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def refuse_overlap(source: str, dest: str, source_what: str, dest_what: str) -> None:
    """Raise :class:`InvalidArgument` (exit 2, nothing written) when ``dest`` lies inside
    ``source`` or ``source`` inside ``dest`` (after resolving links), or when ``dest`` lies
    inside another store, backup or folder replica. A ``source`` in object storage is only
    checked for the last."""
    if "://" in dest:
        return  # object storage (s3://, file://...): no folder of this machine to compare
    dst = _real(dest)
    src = None if "://" in source else _real(source)
    if src is not None and _within(dst, src):
        raise InvalidArgument(f"the {dest_what} {dest} is inside the {source_what} {source} (resolved: {dst}); "
                              f"write it outside {source}; nothing was written")
    if src is not None and _within(src, dst):
        raise InvalidArgument(f"the {source_what} {source} is inside the {dest_what} {dest} (resolved: {src}); "
                              "choose a destination that does not contain it; nothing was written")
    holder = _holder(dst)
    if holder is not None:
        raise InvalidArgument(f"the {dest_what} {dest} is inside the store, backup or replica {holder}, whose tools "
                              "would find files they do not know; write it elsewhere; nothing was written")
