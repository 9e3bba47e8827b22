"""``fsck`` for a Ruby kroniko store (format 1): every check that applies without hashes.

Read-only: nothing in the legacy store is ever repaired in place (migrate it instead). The
codes are the format-3 ones where the meaning is the same, plus ``legacy-*`` and
``index-name-collision`` for what only the Ruby layout can get wrong (docs/LEGACY.md lists them).

Levels: ``quick`` walks the log, the tail, repeated ids, whether each event file exists and which
files no line names; ``full`` also parses every event, checks that it can be stored in format 3,
and recomputes every index file the gem should have written, comparing it with what is there.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ..errors import InvalidArgument
from ..progress import progress
from ..report import Report
from .convert import convert_line, utf8_report
from .reader import LegacyReader, LogLine, LogScan, fingerprint, ruby_timestamp, scan_log, show
from .rubyindex import IndexRef, index_refs

LEVELS = ("quick", "full")
_NO_LIMIT = 1 << 62


def check_legacy(path: str, report: Report, level: str, quiet: bool = True) -> None:
    """Add to ``report`` a finding for every problem of the legacy store at ``path``.

    ``level`` is ``"quick"`` or ``"full"``. Sets ``report.head`` to the number of committed
    log lines and adds ``legacy_*`` figures. Never writes to the store.
    """
    if level not in LEVELS:
        raise InvalidArgument(f"fsck level must be one of {', '.join(LEVELS)}, got {level!r}")
    reader = LegacyReader(path)
    full = level == "full"
    scan = scan_log(reader, keep_positions=full)
    report.head = scan.head
    checker = _Checker(reader, report, scan, full)
    if full:
        checker.load_index()
    checker.check_log(quiet)
    checker.check_tail()
    checker.check_event_files()
    if full:
        checker.check_index_entries()
    report.figures.update({"legacy_format": 1, "legacy_log_lines": scan.head,
                           "legacy_event_files": checker.event_files})
    if full:
        report.figures.update({"legacy_index_files": checker.index_files,
                               "legacy_index_entries": checker.index_entries})
    utf8_report(report)


class _Checker:
    def __init__(self, reader: LegacyReader, report: Report, scan: LogScan, full: bool) -> None:
        self.reader = reader
        self.report = report
        self.scan = scan
        self.full = full
        self.root = reader.root
        self.event_files = 0
        self.index_files = 0
        self.index_entries = 0
        # hash((relpath, id)) of every index entry found and not yet matched by a log event.
        self.actual: set[int] = set()
        # ids whose index entries cannot be predicted (event missing or unreadable), and
        # hash((folder, id)) for array/object values, whose Ruby inspect text is only approximated.
        self.unknown: set[int] = set()
        self.soft: set[int] = set()
        self.owners: dict[str, tuple[str, ...]] = {}
        self.collided: set[str] = set()
        self.type_case: dict[str, str] = {}

    def add(self, code: str, severity: str, rel: str, message: str, position: int | None = None) -> None:
        self.report.add(code, severity, os.path.join(self.root, rel), message, position)

    # -- the log and the events it names --------------------------------------------------

    def check_log(self, quiet: bool) -> None:
        last_ts: float | None = None
        lines = self.reader.iter_log()
        for line in lines if quiet else progress(lines, self.scan.head, "fsck (legacy)"):
            if line.event_id is None:
                what = "is blank" if line.kind == "blank" else f"names no event: {show(line.text)!r}"
                self.add("log-bad-line", "error", "log/append.log", f"log line {line.position} {what}",
                         line.position)
                continue
            eid = line.event_id
            if line.kind == "glued":
                self.add("legacy-log-glued-line", "error", "log/append.log",
                         f"log line {line.position} is torn bytes followed by the id {eid}: "
                         f"{show(line.text)!r} (a torn line, or unlocked appends that interleaved)",
                         line.position)
            first = self.scan.duplicates.get(line.position)
            if first is not None:
                self.add("log-duplicate-id", "error", "log/append.log",
                         f"log line {line.position} repeats the id {eid} of position {first}", line.position)
                continue
            ts = ruby_timestamp(eid)
            if ts is not None:
                if last_ts is not None and ts < last_ts:
                    self.add("legacy-race-log-order", "info", "log/append.log",
                             f"log line {line.position} names an event created before the one above it: "
                             "two unlocked writers raced between writing the event and the log line",
                             line.position)
                last_ts = ts if last_ts is None else max(last_ts, ts)
            if self.full:
                self._check_event(line)
                continue
            try:
                mode = os.lstat(f"{self.reader.events_dir}/{eid}.json").st_mode
            except OSError:
                self._missing(line)
                continue
            if not stat.S_ISREG(mode):
                self.add("event-unreadable", "error", f"events/{eid}.json", f"events/{eid}.json (log line "
                         f"{line.position}) is not a regular file (a symlink is never followed)", line.position)

    def _missing(self, line: LogLine) -> None:
        self.add("missing-event", "error", f"events/{line.event_id}.json",
                 f"log line {line.position} names an event file that does not exist", line.position)

    def _check_event(self, line: LogLine) -> None:
        eid = line.event_id
        assert eid is not None
        outcome = convert_line(line, self.reader.read_event(eid), self.scan, lambda *_: "", _NO_LIMIT)
        rel = f"events/{eid}.json"
        for code, fact, _decision in outcome.notes:
            if code == "missing-event":
                self._missing(line)
            elif code in ("event-unreadable", "event-id-mismatch"):
                self.add(code, "error", rel, fact, line.position)
            elif code == "legacy-id-unportable":
                self.add(code, "warning", rel, f"{fact}: migrate gives the event a new id", line.position)
            elif code == "legacy-event-unportable":
                self.add(code, "warning", rel, f"{fact}: migrate keeps a placeholder", line.position)
        if outcome.placeholder:
            self.unknown.add(fingerprint(eid))
            return
        event = outcome.event
        self._check_type_case(event.type, rel, line.position)
        missing = []
        seen: set[str] = set()
        for ref in index_refs(event.type, event.data):
            self._check_ref(ref, eid, rel, line.position)
            if ref.nested:
                self.soft.add(hash((f"index/{ref.folder}", eid)))
                continue
            if ref.relpath is None or not ref.relpath.startswith("index/") or ref.relpath in seen:
                continue
            seen.add(ref.relpath)
            pair = hash((ref.relpath, eid))
            if pair in self.actual:
                self.actual.discard(pair)
            else:
                missing.append(ref.relpath)
        if missing:
            self.add("index-missing-entry", "warning", rel,
                     f"the event at position {line.position} is missing from {', '.join(map(show, missing))} "
                     "(the writer died after its log line): the gem's reads by these miss it", line.position)

    def _check_type_case(self, type_: str, rel: str, position: int) -> None:
        first = self.type_case.setdefault(type_.lower(), type_)
        if first != type_ and type_.lower() not in self.collided:
            self.collided.add(type_.lower())
            self.add("index-name-collision", "warning", rel,
                     f"types {show(first)!r} and {show(type_)!r} differ only in case: the gem matches types "
                     "case-insensitively, so its reads of either returned both", position)

    def _check_ref(self, ref: IndexRef, eid: str, rel: str, position: int) -> None:
        what = "type" if ref.key is None else f"data property {show(ref.key)!r}"
        if ref.placement == "store":
            self.add("index-unsafe-name", "error", rel,
                     f"the index file of the {what} = {show(str(ref.value))!r} ({show(ref.ruby_path)}) resolves "
                     f"outside the store, to {show(str(ref.relpath))}: the gem wrote there", position)
        elif ref.placement == "folder":
            self.add("index-unsafe-name", "warning", rel,
                     f"the index file of the {what} = {show(str(ref.value))!r} ({show(ref.ruby_path)}) "
                     f"resolves outside its folder, to {show(str(ref.relpath))}", position)
        elif ref.placement == "unwritable":
            self.add("index-unsafe-name", "warning", rel,
                     f"the gem could not create the index file of the {what} (NUL byte or a name over "
                     "255 bytes): its write failed after the log line", position)
        if ref.relpath is None:
            return
        owner = self.owners.setdefault(ref.relpath, ref.identity)
        if owner != ref.identity and ref.relpath not in self.collided:
            self.collided.add(ref.relpath)
            self.add("index-name-collision", "warning", ref.relpath,
                     f"{show(ref.relpath)} holds {_describe(owner)} and {_describe(ref.identity)}: the gem's "
                     "reads of either returned both", position)

    def check_tail(self) -> None:
        offset, torn = self.reader.torn_tail()
        if torn:
            text = show(torn.decode("utf-8", "surrogateescape"))
            self.add("log-torn-tail", "error", "log/append.log",
                     f"the log ends in {len(torn)} bytes with no newline at byte {offset} ({text!r}): "
                     "a torn last line, not committed", self.scan.head + 1)

    def check_event_files(self) -> None:
        for name, regular in self.reader.iter_event_files():
            rel = f"events/{name}"
            if not regular and name.endswith(".json") and fingerprint(name[:-5]) in self.scan.ids:
                continue  # an event named by the log that is a symlink or a folder: event-unreadable
            if not regular or not name.endswith(".json"):
                self.add("stray-file", "warning", rel,
                         f"{show(rel)} is not an event file ({'not a regular file' if not regular else 'no .json'})")
                continue
            self.event_files += 1
            eid = name[:-5]
            if fingerprint(eid) not in self.scan.ids:
                self.add("dangling-event", "warning", rel,
                         f"no log line names {show(rel)} (its writer died before the log line): "
                         "migrate sets it aside into lost-found")

    # -- indexes --------------------------------------------------------------------------

    def _index_files(self) -> Any:
        for rel, full, regular in self.reader.iter_index_files():
            if regular and rel.endswith(".jsonl"):
                yield rel, full

    def load_index(self) -> None:
        for rel, full in self._index_files():
            self.index_files += 1
            repeated = 0
            for eid, _done in self.reader.iter_index_entries(full):
                self.index_entries += 1
                pair = hash((rel, eid))
                if pair in self.actual:
                    repeated += 1
                self.actual.add(pair)
            if repeated:
                self.add("legacy-index-duplicate-entry", "info", rel,
                         f"{show(rel)} lists {repeated} id(s) more than once (harmless: the gem dedups)")

    def check_index_entries(self) -> None:
        for rel, full, regular in self.reader.iter_index_files():
            if not regular or not rel.endswith(".jsonl"):
                self.add("stray-file", "warning", rel, f"{show(rel)} is not an index file "
                         f"({'not a regular file, not followed' if not regular else 'no .jsonl'})")
                continue
            self._check_index_file(rel, full)

    def _check_index_file(self, rel: str, full: str) -> None:
        positions = self.scan.ids
        assert isinstance(positions, dict)
        last = 0
        inversions = 0
        for lineno, (eid, done) in enumerate(self.reader.iter_index_entries(full), 1):
            fp = fingerprint(eid)
            pos = positions.get(fp)
            if pos is None:
                torn = "" if done else " (a torn last line)"
                self.add("index-extra-entry", "warning", rel,
                         f"{show(rel)} line {lineno} names {show(eid)!r}{torn}, which is not in the log: "
                         "the gem's reads by it fail on it")
                continue
            if pos < last:
                inversions += 1
            last = max(last, pos)
            pair = hash((rel, eid))
            if pair not in self.actual or fp in self.unknown or self._soft(rel, eid):
                continue
            self.actual.discard(pair)
            self.add("index-extra-entry", "warning", rel,
                     f"{show(rel)} line {lineno} lists the event at position {pos}, whose type and data do "
                     "not belong in this file", pos)
        if inversions:
            self.add("legacy-race-index-order", "info", rel,
                     f"{show(rel)} lists {inversions} event(s) after a later one: unlocked writers raced "
                     "between their log line and their index lines (harmless: the gem sorts by position)")

    def _soft(self, rel: str, eid: str) -> bool:
        folder = rel
        while "/" in folder:
            folder = folder.rsplit("/", 1)[0]
            if hash((folder, eid)) in self.soft:
                return True
        return False


def _describe(identity: tuple[str, ...]) -> str:
    if identity[0] == "type":
        return f"type {show(identity[1])!r}"
    return f"{show(identity[1])} = {show(identity[2])}"
