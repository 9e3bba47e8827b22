"""The backups a restore or a verification reads together: a backup and its bases, and which of
them holds each file; and the log containers a manifest describes, in position order.

An incremental backup references the immutable files its base already holds (``in_base``); its
manifest names the base by the base manifest's checksum and by where it was, relative to the
incremental's parent folder. :func:`open_chain` follows those names down to a full backup.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...format import pack as packfmt
from ...format import segment as segfmt
from .container import Container
from .manifest import Manifest, ManifestError

MAX_CHAIN = 1000


class BaseProblem(Exception):
    """An incremental's base is missing (``backup-base-missing``) or is not the backup it names
    (``backup-base-mismatch``)."""

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(message)
        self.code, self.path = code, path


@dataclass
class Link:
    """One backup of a chain: where it is, opened, and its checked manifest."""

    path: str
    container: Container
    manifest: Manifest


class Chain:
    """A backup and its bases, nearest first; close it when done."""

    def __init__(self, links: list[Link]) -> None:
        self.links = links

    @property
    def top(self) -> Link:
        """The backup asked for."""
        return self.links[0]

    def holder(self, rel: str) -> Link:
        """The backup of the chain that holds the file ``rel`` itself."""
        for link in self.links:
            entry = link.manifest.files.get(rel)
            if entry is not None and not entry.in_base:
                return link
        raise BaseProblem("backup-file-missing", rel, f"{rel} is held by no backup of the chain")

    def close(self) -> None:
        """Close every backup."""
        for link in self.links:
            link.container.close()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def base_path(path: str, manifest: Manifest) -> str:
    """Where the base of the incremental at ``path`` should be."""
    assert manifest.base is not None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), manifest.base.path))


def open_chain(path: str, container: Container, manifest: Manifest) -> Chain:
    """The chain of the backup at ``path`` down to a full backup; raises :class:`BaseProblem`
    when a base is missing or is not the backup named (its own content is not verified here)."""
    links = [Link(path, container, manifest)]
    try:
        while links[-1].manifest.base is not None:
            if len(links) > MAX_CHAIN:
                raise BaseProblem("backup-base-mismatch", path, f"more than {MAX_CHAIN} bases: a cycle?")
            cur = links[-1]
            ref = cur.manifest.base
            assert ref is not None
            where = base_path(cur.path, cur.manifest)
            if not os.path.exists(where):
                raise BaseProblem("backup-base-missing", where,
                                  f"the base of {cur.path} (head {ref.head}) is not at {where}; put it back there")
            try:
                c = Container(where)
            except OSError as exc:
                raise BaseProblem("backup-base-missing", where, f"the base at {where} is unreadable ({exc})") from None
            try:
                found = c.manifest()
            except (OSError, ManifestError) as exc:
                c.close()
                raise BaseProblem("backup-base-mismatch", where,
                                  f"the base at {where} does not check ({exc})") from None
            links.append(Link(where, c, found))
            if found.checksum != ref.manifest_sha256 or found.head != ref.head:
                raise BaseProblem("backup-base-mismatch", where,
                                  f"{where} is not the backup {cur.path} builds on (its manifest checksum "
                                  f"{found.checksum[:12]}... or head {found.head} differ from "
                                  f"{ref.manifest_sha256[:12]}... and {ref.head})")
            for rel, entry in cur.manifest.files.items():
                have = found.files.get(rel)
                if entry.in_base and (have is None or (have.size, have.sha256) != (entry.size, entry.sha256)):
                    raise BaseProblem("backup-base-mismatch", where,
                                      f"{cur.path} takes {rel} from its base, which does not hold it as listed")
    except BaseException:
        for link in links[1:]:
            link.container.close()
        raise
    return Chain(links)


@dataclass(frozen=True)
class Part:
    """One log container a manifest lists: ``kind`` is ``pack``, ``sealed`` or ``active``;
    ``rel`` its data file (``seg`` or ``pack``), ``last`` known for packs only."""

    kind: str
    first: int
    rel: str
    last: int | None = None

    @property
    def idx_rel(self) -> str:
        """The offset index of a sealed segment."""
        return f"log/{segfmt.idx_name(self.first)}"


def parts_of(manifest: Manifest) -> tuple[list[Part], list[str]]:
    """The containers of a manifest in position order, and the files that fit none (an
    ``.idx`` without its segment, a segment neither active nor with its ``.idx``)."""
    parts: list[Part] = []
    odd: list[str] = []
    files = manifest.files
    for rel in files:
        if rel.startswith("packs/"):
            rng = packfmt.parse_name(rel[6:])
            assert rng is not None
            parts.append(Part("pack", rng[0], rel, rng[1]))
        elif rel.startswith("log/"):
            parsed = segfmt.parse_name(rel[4:])
            assert parsed is not None
            first, ext = parsed
            if rel == manifest.active:
                parts.append(Part("active", first, rel))
            elif ext == "seg" and f"log/{segfmt.idx_name(first)}" in files:
                parts.append(Part("sealed", first, rel))
            elif ext == "seg" or f"log/{segfmt.seg_name(first)}" not in files:
                odd.append(rel)
    parts.sort(key=lambda p: (p.first, p.kind == "active"))
    return parts, odd
