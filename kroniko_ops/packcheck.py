"""fsck of packs: checksums, offset indexes, and each packed event against the log."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from .log import LINE_LEN, BadLine, decode_line, find_head
from .packs import BATCH, Pack, PackError, list_packs, parse_name

if TYPE_CHECKING:
    from .report import Report

FINDINGS_PER_PACK = 20


def check_packs(root: str, report: Report, full: bool, head: int | None = None) -> None:
    """Verify every pack of the store at ``root``, adding findings to ``report``.

    Always: each pack's and idx's trailing SHA-256, their trailers against the file name, the
    offset index (sizes, increasing offsets, each event followed by a newline), and no position
    past the log's head. With ``full``, also every packed event's SHA-256 against its log line.
    Damage is ``pack-corrupt`` (error); a file ``packs/`` does not know is ``stray-file``. The
    harmless leftovers of an interrupted compaction are info findings (the next compaction
    removes them): an ``.idx`` without its pack (``pack-orphan-index``) and a pack superseded by a
    merged one (``pack-superseded``). Temp files are left to fsck's layout check. Paths are
    relative to ``root``.
    """
    folder = os.path.join(root, "packs")
    ranges, other = list_packs(folder)
    for name in sorted(other):
        path = os.path.join("packs", name)
        parsed = parse_name(name)
        if name.startswith(".tmp-"):
            continue  # temp files of every folder are fsck's layout check's
        if parsed is not None and parsed[2] == "idx":
            report.add("pack-orphan-index", "info", path,
                       "an offset index without its pack, left by an interrupted compaction; harmless, "
                       "the next compaction removes it")
        elif parsed is not None:
            report.add("pack-corrupt", "error", path, "a pack without its offset index (.idx)")
        else:
            report.add("stray-file", "warning", path, "a file the packs/ folder does not know")
    if not ranges:
        return
    fd = os.open(os.path.join(root, "log", "append.log"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if head is None:
            head = find_head(fd).head
        for first, last in ranges:
            pack = Pack(folder, first, last)
            try:
                _check_one(pack, os.path.relpath(pack.pack_path, root), ranges, head, full, report, fd)
            finally:
                pack.close()
    finally:
        os.close(fd)


def _check_one(pack: Pack, path: str, ranges: list[tuple[int, int]], head: int, full: bool, report: Report,
               fd: int) -> None:
    first, last = pack.first, pack.last
    try:
        pack.checksums()
    except FileNotFoundError:
        return  # merged away by a compaction running now
    except PackError as exc:
        report.add("pack-corrupt", "error", path, str(exc), first)
        return
    if last > head:
        report.add("pack-corrupt", "error", path, f"holds positions {first}..{last}, past the log's head {head}",
                   head + 1)
    if any(a <= first and last <= b and (a, -b) < (first, -last) for a, b in ranges):
        report.add("pack-superseded", "info", path, "its events are also in a merged pack (an interrupted "
                   "merge); harmless, the next compaction removes it", first)
    if full:
        _check_hashes(pack, path, min(last, head), report, fd)


def _check_hashes(pack: Pack, path: str, upto: int, report: Report, fd: int) -> None:
    """Hash every event of ``pack`` up to ``upto`` against the log's line for its position.

    Compares with the hash field of the raw line; only a mismatch parses the line (a damaged
    log line is fsck's log check's finding, not the pack's)."""
    found = 0
    for a in range(pack.first, upto + 1, BATCH):
        b = min(upto, a + BATCH - 1)
        try:
            raws = pack.read(a, b)
        except PackError as exc:
            report.add("pack-corrupt", "error", path, str(exc), a)
            return
        lines = os.pread(fd, (b - a + 1) * LINE_LEN, (a - 1) * LINE_LEN)
        for k, raw in enumerate(raws):
            at = k * LINE_LEN
            if hashlib.sha256(raw).hexdigest().encode() == lines[at + 78 : at + 142]:
                continue
            try:
                line = decode_line(lines[at : at + LINE_LEN])
            except BadLine:
                continue
            found += 1
            if found <= FINDINGS_PER_PACK:
                report.add("pack-corrupt", "error", path, f"event {line.event_id} does not match its hash in the log",
                           a + k)
    if found > FINDINGS_PER_PACK:
        report.add("pack-corrupt", "error", path,
                   f"... and {found - FINDINGS_PER_PACK} more events that do not match the log", pack.first)
