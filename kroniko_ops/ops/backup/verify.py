"""``verify_backup``: is a backup (folder or archive) exactly what its manifest says, and whole?

Checks: the manifest's own checksum and canonical form; missing and extra files; each held
file's size and SHA-256; for an incremental, that its bases are present, are the backups named
(manifest checksum and head) and hold the referenced files as listed, and each base verified the
same way; and the log across files: every position from 1 to the head held by exactly one pack
or segment, each record whole with its body hash, the chain continuous from GENESIS to the
manifest's chain, sealed segments matching their ``.idx`` and packs their trailers, the head on a
commit mark. Problems are findings with ``backup-*`` codes (``docs/FSCK.md``).
"""

from __future__ import annotations

import hashlib
import os

from ... import fileio
from ...errors import StoreNotFound
from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt
from ...progress import Meter
from ...report import Report
from .chain import BaseProblem, Chain, Part, open_chain, parts_of
from .container import Container
from .manifest import DIRS, MANIFEST, ManifestError

MAX_PROBLEMS = 200  # per container: a damaged file is reported, not listed record by record


def verify_backup(dest: str | os.PathLike[str], *, progress: bool = False) -> Report:
    """Check the backup at ``dest`` (folder or ``.tar``) and its bases; problems are findings
    (exit 4). Raises StoreNotFound (exit 8) when nothing is there. ``progress`` shows bars on a
    terminal: the bytes hashed, then the events walked."""
    dest = os.fspath(dest)
    report = Report("verify-backup", dest)
    try:
        container = Container(dest)
    except OSError as exc:
        raise StoreNotFound(f"no readable backup at {dest} ({exc})") from None
    with container:
        check(dest, container, report, bases=True, progress=progress)
    report.finish()
    report.figures["mb_per_s"] = round(report.figures.get("bytes", 0) / max(report.seconds, 1e-9) / 1e6, 1)
    return report


def check(dest: str, container: Container, report: Report, bases: bool, progress: bool = False) -> None:
    """Verify one backup into ``report``; with ``bases``, verify each of its bases too."""
    if container.damage:
        report.add("backup-archive-corrupt", "error", dest, container.damage)
        return
    try:
        manifest = container.manifest()
    except FileNotFoundError:
        report.add("backup-file-missing", "error", MANIFEST, f"{dest} has no {MANIFEST}: not a (complete) backup")
        return
    except (ManifestError, OSError) as exc:
        report.add("backup-manifest-mismatch", "error", MANIFEST, f"{MANIFEST} does not check: {exc}")
        return
    report.head = manifest.head
    report.figures.update(backup_kind=manifest.kind, chain=manifest.chain, created_at=manifest.created_at)
    _presence(container, manifest.files, report)
    report.figures["bytes"] = report.figures.get("bytes", 0) + _hash(container, manifest, report, progress)
    try:
        chain = open_chain(dest, container, manifest)
    except BaseProblem as exc:
        report.add(exc.code, "error", exc.path, str(exc))
        return
    try:
        if bases:
            for link in chain.links[1:]:
                sub = Report("verify-backup", link.path)
                check(link.path, link.container, sub, bases=False, progress=progress)
                for f in sub.findings:
                    report.add(f.code, f.severity, f"{link.path}: {f.path}", f.message, f.position)
                report.figures["bytes"] += sub.figures.get("bytes", 0)
                report.add("backup-base", "info", link.path, "base present, matching and verified"
                           if not sub.problems else "base present and matching, but it does not verify")
        walk(chain, report, progress)
    finally:
        for link in chain.links[1:]:
            link.container.close()


def _presence(container: Container, files: dict[str, object], report: Report) -> None:
    found = {}
    for f in container.entries():
        if f.rel in found:
            report.add("backup-file-extra", "error", f.rel, "appears twice in the archive")
            continue
        found[f.rel] = f
    for rel, entry in files.items():
        f = found.get(rel)
        if entry.in_base:  # type: ignore[attr-defined]
            if f is not None:
                report.add("backup-file-extra", "error", rel, "the manifest says a base holds it, yet it is here too")
        elif f is None or f.is_dir:
            report.add("backup-file-missing", "error", rel, "listed in the manifest but not in the backup")
        elif f.problem:
            report.add("backup-file-extra", "error", rel, f"is {f.problem}, not the file the manifest lists")
    for rel, f in found.items():
        if rel == MANIFEST or (f.is_dir and rel in DIRS) or (rel in files and not f.is_dir):
            continue
        report.add("backup-file-extra", "error", rel, "not listed in the manifest")


def _hash(container: Container, manifest, report: Report, progress: bool = False) -> int:  # type: ignore[no-untyped-def]
    """Hash every file this backup holds; return the bytes read."""
    total = 0
    known = {f.rel for f in container.entries() if not f.is_dir and not f.problem}
    held = [rel for rel in manifest.held() if rel in known]
    meter = Meter(f"verify {os.path.basename(container.path)}: hash", nbytes=sum(manifest.files[r].size for r in held),
                  unit="B", progress=progress)
    for rel in held:
        entry = manifest.files[rel]
        h = hashlib.sha256()
        size = 0
        try:
            for chunk in container.chunks(rel):
                h.update(chunk)
                size += len(chunk)
                meter.add(nbytes=len(chunk))
        except OSError as exc:
            report.add("backup-hash-mismatch", "error", rel, f"unreadable ({exc})")
            continue
        total += size
        if size != entry.size or h.hexdigest() != entry.sha256:
            report.add("backup-hash-mismatch", "error", rel,
                       f"{size} bytes with SHA-256 {h.hexdigest()[:12]}..., the manifest says {entry.size} bytes "
                       f"with {entry.sha256[:12]}...")
    meter.close()
    return total


class _Walk:
    """The position and chain reached so far while walking the containers in order."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.pos = 1
        self.chain: bytes | None = recfmt.GENESIS  # None once unknown (after damage)
        self.commit = True

    def records(self, rel: str, recs, first: int) -> list[int]:  # type: ignore[no-untyped-def]
        """Check each record: position, body hash, chain; return their offsets."""
        offsets: list[int] = []
        shown = 0
        expect = first
        for rec in recs:
            why = ""
            if rec.position != expect:
                why = f"holds position {rec.position} where {expect} belongs"
            elif not recfmt.body_hash_ok(rec):
                why = "its event bytes do not match the hash its header gives"
            elif self.chain is not None and recfmt.chain_of(self.chain, rec.event_hash) != rec.chain:
                why = "its chain hash does not follow from the previous record"
            if why and shown < MAX_PROBLEMS:
                shown += 1
                self.report.add("backup-chain-mismatch", "error", rel, f"record {why}", expect)
            offsets.append(rec.offset)
            self.chain, self.commit = rec.chain, rec.commit
            expect += 1
        self.pos = expect
        return offsets


def walk(chain: Chain, report: Report, progress: bool = False) -> None:
    """Walk every position of the chain's top backup, from 1 to its head, across its files."""
    manifest = chain.top.manifest
    parts, odd = parts_of(manifest)
    for rel in odd:
        report.add("backup-file-extra", "error", rel, "a segment or offset index without its other half")
    w = _Walk(report)
    meter = Meter(f"verify {os.path.basename(chain.top.path)}: chain", manifest.head, progress=progress)
    for part in parts:
        if part.first != w.pos:
            what = "no file holds positions" if part.first > w.pos else "two files hold positions"
            lo, hi = sorted((w.pos, part.first - 1 if part.first > w.pos else w.pos - 1))
            report.add("backup-event-missing" if part.first > w.pos else "backup-chain-mismatch", "error", part.rel,
                       f"{what} {lo}..{hi}", lo)
            w.chain, w.pos = None, part.first
        try:
            {"pack": _pack, "sealed": _sealed, "active": _active}[part.kind](chain, part, w)
        except (OSError, BaseProblem) as exc:
            report.add("backup-file-missing", "error", part.rel, f"cannot be read ({exc})")
            w.chain, w.pos = None, (part.last or part.first) + 1
        meter.to(w.pos - 1)
    meter.close()
    if w.pos - 1 != manifest.head:
        report.add("backup-chain-mismatch", "error", manifest.active or "log",
                   f"the files hold positions up to {w.pos - 1}, the manifest's head is {manifest.head}", manifest.head)
    elif w.chain is not None and w.chain.hex() != manifest.chain:
        report.add("backup-chain-mismatch", "error", manifest.active or "log",
                   "the chain at the head differs from the manifest's", manifest.head)
    elif manifest.head and not w.commit:
        report.add("backup-chain-mismatch", "error", manifest.active or "log",
                   "the record at the head carries no commit mark", manifest.head)


def _pack(chain: Chain, part: Part, w: _Walk) -> None:
    holder = chain.holder(part.rel)
    with holder.container.real_path(part.rel) as path:
        try:
            reader = packfmt.PackReader(path)
        except (packfmt.PackError, OSError) as exc:  # OSError: a link, FIFO or device at its name
            w.report.add("backup-pack-corrupt", "error", part.rel, str(exc).replace(path, part.rel))
            w.chain, w.pos = None, (part.last or part.first) + 1
            return
        with reader:
            for problem in reader.verify()[:MAX_PROBLEMS]:
                w.report.add("backup-pack-corrupt", "error", part.rel, problem.replace(path, part.rel))
            try:
                # A dense pack records the chain before its first event; an older one, its first
                # record's own chain (which must follow from the previous file's last).
                if reader.chain_before is not None:
                    follows = w.chain is None or reader.chain_before == w.chain
                else:
                    rec = reader.record(part.first)
                    follows = w.chain is None or recfmt.chain_of(w.chain, rec.event_hash) == rec.chain
                if not follows:
                    w.report.add("backup-chain-mismatch", "error", part.rel,
                                 "its first record's chain does not follow from the previous file", part.first)
            except (packfmt.PackError, IndexError):
                pass  # reported by verify() above
            w.chain, w.pos, w.commit = reader.last_chain, reader.last + 1, True


def _sealed(chain: Chain, part: Part, w: _Walk) -> None:
    idx_holder = chain.holder(part.idx_rel)
    try:
        seal = segfmt.decode_idx(b"".join(idx_holder.container.chunks(part.idx_rel)), part.first)
    except segfmt.SegmentError as exc:
        w.report.add("backup-segment-corrupt", "error", part.idx_rel, str(exc))
        seal = None
    _segment(chain, part, w, seal)
    if seal is not None:
        if w.pos != seal.last + 1:
            w.report.add("backup-segment-corrupt", "error", part.idx_rel,
                         f"the offset index says {seal.count} records, the segment holds {w.pos - part.first}")
        elif w.chain is not None and w.chain != seal.last_chain:
            w.report.add("backup-segment-corrupt", "error", part.idx_rel, "the last chain differs from the segment's")


def _active(chain: Chain, part: Part, w: _Walk) -> None:
    _segment(chain, part, w, None)


def _segment(chain: Chain, part: Part, w: _Walk, seal: segfmt.Seal | None) -> None:
    holder = chain.holder(part.rel)
    with holder.container.real_path(part.rel) as path:
        try:
            # Never follows a link nor blocks on a FIFO planted at a segment's name.
            fd = fileio.open_read(path)
        except OSError as exc:
            w.report.add("backup-segment-corrupt", "error", part.rel, f"unreadable ({exc.strerror})")
            w.chain, w.pos = None, (seal.last if seal is not None else part.first) + 1
            return
        try:
            size = os.fstat(fd).st_size
            digest = hashlib.sha256()
            try:
                offsets = w.records(part.rel, segfmt.scan(fd, 0, size, digest), part.first)
            except recfmt.RecordError as exc:
                w.report.add("backup-chain-mismatch", "error", part.rel, f"{exc}", w.pos)
                w.chain = None
                return
        finally:
            os.close(fd)
    if seal is not None:
        if size != seal.size or digest.digest() != seal.seg_sha256:
            w.report.add("backup-segment-corrupt", "error", part.rel, "does not match the SHA-256 its .idx records")
        elif offsets != list(seal.offsets[:-1]):
            w.report.add("backup-segment-corrupt", "error", part.idx_rel, "its offsets do not match the records")
        if not w.commit:
            w.report.add("backup-chain-mismatch", "error", part.rel, "a sealed segment ends inside a batch", w.pos - 1)
