"""``fsck --repair``: what is safe to repair without a person, and nothing else.

Under the maintenance lock: check, then repair (under the append lock: recovery, quarantine of
old dangling events and stray files into ``lost-found/``; then a reindex when the index is
wrong), then check again. A finding is marked repaired only when the second check no longer
sees it, so the report says what is true, not what was attempted. Nothing is ever deleted, and
damage to committed data (mid-log lines, events) is left for a person: restore from a backup.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

from .. import fileio, layout
from ..codec import DEFAULT_MAX_EVENT_BYTES
from ..layout import FORMAT_LINE, FormatInfo, Layout
from ..locking import held
from ..log import BadLine, find_head, iter_lines
from ..report import Finding, Report
from ..store import EventStore
from .checks_common import DANGLING_PRUNE_AGE, age_of
from .fsck import check_store
from .recover import recover_locked
from .reindex import rebuild

TAIL = "cut the tail into lost-found/"
REINDEX = "rebuild the index (reindex)"
REPAIRS = {
    "log-torn-tail": TAIL,
    "log-uncommitted-tail": TAIL,
    "stale-temp-file": "set it aside into lost-found/",
    "stray-file": "move it into lost-found/",
    "dangling-event": "move it into lost-found/",
    "index-missing-entry": REINDEX,
    "index-extra-entry": REINDEX,
    "index-checkpoint-ahead": REINDEX,
    "index-checkpoint-bad": REINDEX,
    "index-unsafe-name": REINDEX,
    "format-missing": "write a new FORMAT with default options",
    "format-unknown": "set the FORMAT file aside and write a new one with default options",
}
INDEX_CODES = {code for code, what in REPAIRS.items() if what == REINDEX}
LOG_DAMAGE = {"log-bad-line", "log-position-mismatch", "chain-mismatch", "log-duplicate-id", "log-missing"}


def _in_index(path: str) -> bool:
    return path == "index" or path.startswith("index" + os.sep)


def _other_format(root: str) -> bool:
    """True when FORMAT names another kroniko-ops format: never overwritten."""
    try:
        with open(Layout(root).format_file, "rb") as f:
            first = f.readline(200).strip()
    except OSError:
        return False
    return first.startswith(b"kroniko-ops format ") and first != FORMAT_LINE.encode()


def plan(root: str, finding: Finding, log_damaged: bool) -> str | None:
    """What ``--repair`` would do about ``finding``, or None when it leaves it alone."""
    if finding.severity == "info" or finding.repaired:
        return None
    if finding.code == "format-unknown" and _other_format(root):
        return None
    if finding.code == "dangling-event" and log_damaged:
        return None  # a damaged log line may name it: keep it where a restore expects it
    what = REINDEX if finding.code in ("stray-file", "stale-temp-file") and _in_index(finding.path) \
        else REPAIRS.get(finding.code)
    if what == REINDEX and log_damaged:
        return None  # rebuilt from a damaged log, the index would have to be rebuilt again after the restore
    return what


def _log_damaged(report: Report) -> bool:
    return any(f.code in LOG_DAMAGE and f.severity != "info" for f in report.findings)


def annotate_plan(report: Report) -> None:
    """``--dry-run``: append to each finding what ``--repair`` would do; write nothing."""
    damaged = _log_damaged(report)
    for f in report.findings:
        what = plan(report.path, f, damaged)
        if what is not None:
            f.message += f" [--repair would {what}]"


def repair_store(root: str, full: bool, quiet: bool, max_errors: int | None, lock_timeout: float) -> Report:
    """Check, repair what is safe, check again; return the merged report."""
    lay = Layout(root)
    with held(lay.maintenance_lock, lock_timeout, "maintenance"):
        first = check_store(root, full, quiet, max_errors)
        damaged = _log_damaged(first)
        todo = [f for f in first.findings if plan(root, f, damaged) is not None]
        if not todo or any(f.code == "log-missing" for f in first.findings):
            return first
        codes = {f.code for f in todo}
        if codes & {"format-missing", "format-unknown"}:
            _write_format(root)
        scratch = Report("repair", root)
        needs_reindex = any(plan(root, f, damaged) == REINDEX for f in todo)
        with EventStore(root, create=False, lock_timeout=lock_timeout) as store:
            with held(store.layout.append_lock, lock_timeout, "append"):
                recover_locked(store, scratch, catch_up=not needs_reindex)
                _quarantine(store, [f for f in todo if f.code == "dangling-event"], first.head)
                _move_strays(root, [f.path for f in todo if f.code == "stray-file" and not _in_index(f.path)])
        if needs_reindex:
            rebuild(root, scratch, lock_timeout, quiet)
        second = check_store(root, full, quiet, max_errors)
    return _merge(first, second, codes)


def _write_format(root: str) -> None:
    lay = Layout(root)
    if _other_format(root):
        return
    if os.path.lexists(lay.format_file):
        layout.set_aside(root, "FORMAT", "The FORMAT file that fsck --repair replaced because it was unreadable.",
                         move=[lay.format_file])
    info = FormatInfo(DEFAULT_MAX_EVENT_BYTES, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    fileio.write_file_atomic(lay.format_file, info.render(), durable=True)


def _quarantine(store: EventStore, findings: list[Finding], checked_head: int) -> None:
    """Move old dangling events into lost-found/, unless a line appended since names them."""
    if not findings:
        return
    head = find_head(store._read_fd).head
    try:
        named = {line.event_id for line in iter_lines(store._read_fd, checked_head + 1, head)}
    except BadLine:
        return
    moving = []
    now = time.time()
    for f in findings:
        eid = os.path.basename(f.path)[: -len(".json")]
        path = store.layout.event_file(eid)
        age = age_of(path, now)
        if eid not in named and age is not None and age >= DANGLING_PRUNE_AGE:
            moving.append(path)
    if moving:
        layout.set_aside(
            store.path, "dangling-events",
            "Events that no log line names, older than the prune age: written by appends that never "
            "committed (a crash, or a failed condition whose clean-up was interrupted). Set aside by "
            f"fsck --repair; no reader ever saw them. Files: {len(moving)}.",
            move=sorted(moving),
        )


def _move_strays(root: str, rel_paths: list[str]) -> None:
    """Move stray files into lost-found/, one folder per place they were found (names stay unique)."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for rel in rel_paths:
        path = os.path.join(root, rel)
        if os.path.lexists(path):
            by_folder[os.path.dirname(rel) or "."].append(path)
    for folder, paths in sorted(by_folder.items()):
        layout.set_aside(root, "stray-files", f"Files found in {folder}/ that the store layout does not know, "
                         "moved here by fsck --repair. They were never part of the store.", move=sorted(paths))


def _merge(first: Report, second: Report, attempted: set[str]) -> Report:
    """The first report's findings, each marked repaired when the second check no longer sees it,
    plus whatever the second check found anew; figures and head from the second."""
    def key(f: Finding) -> tuple[str, str, int | None]:
        return f.code, f.path, f.position

    after = {key(f) for f in second.findings}
    before = {key(f) for f in first.findings}
    merged = Report("fsck", first.path, head=second.head, figures=second.figures, started=first.started)
    for f in first.findings:
        if f.code in attempted and f.severity != "info" and key(f) not in after:
            f.repaired = True
        merged.findings.append(f)
    merged.findings.extend(f for f in second.findings if key(f) not in before)
    return merged.finish()

