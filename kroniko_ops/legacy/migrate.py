"""``migrate``: copy a Ruby kroniko store (format 1) into a new format-3 store, losing nothing.

Every committed legacy log line keeps its position: the event it names is appended with the same
id, type and data, plus a tag per scalar top-level data property. What cannot be migrated as
itself keeps its position as a ``kroniko.LegacyEventLost`` placeholder; event files no log line
names and a torn last line go into the new store's ``lost-found/``. The legacy store is only read.
The new store is built under a temporary name and appears under the target's name only when it
is complete and durable (:mod:`.target`).

Memory stays bounded: events stream through in batches, and what is kept per event is a 128-bit
fingerprint of its id (to find repeated ids and files no line names). See docs/LEGACY.md.
"""

from __future__ import annotations

import os
from typing import Any

from ..codec import DEFAULT_MAX_EVENT_BYTES
from ..errors import InvalidArgument
from ..model import Event, property_tag
from ..progress import progress
from ..report import Report
from .convert import KeepAside, Outcome, convert_line, utf8_report, wants_event
from .reader import LegacyReader, LogScan, fingerprint, is_format1, scan_log, show
from .rubyindex import ruby_float
from .target import BATCH_EVENTS, Target, stale_temps

ASIDE_FILES = 1000
ASIDE_BYTES = 64 << 20
MAX_EVENT_LIMIT = 64 * 1024 * 1024  # the largest max_event_bytes a store may have (layout.create)
_MAX_TRACKED_KEYS = 10_000
_LOG_CODES = ("log-bad-line", "legacy-log-glued-line", "log-duplicate-id")


class _DryRun:
    """The target of a dry run: takes every event, writes nothing."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.written = 0

    def add(self, event: Event, encoded: tuple[str, bytes]) -> None:
        """Count the event."""
        self.written += 1

    def keep_aside(self, label: str, note: str, files: dict[str, bytes]) -> str:
        """Keep nothing; say where a real run would have."""
        return "lost-found/(dry-run)"


def migrate(legacy: str, target: str, *, dry_run: bool = False, quiet: bool = True, durable: bool = True,
            segment_bytes: int | None = None, batch_events: int = BATCH_EVENTS) -> Report:
    """Migrate the legacy store at ``legacy`` into a new format-3 store at ``target``.

    ``target`` must be missing or an empty folder (else :class:`InvalidArgument`, exit 2), and
    not inside ``legacy``. The store is built under a temporary name beside ``target`` and
    renamed into place when complete, so an interrupted run leaves nothing under ``target``.
    With ``dry_run`` every decision is made and reported but nothing is written anywhere. The
    report lists each decision as a finding (damage handled: a warning marked repaired; notes:
    info) and figures (events, placeholders, orphans, rate). ``durable=False`` skips the final
    fsyncs (tests and throwaway targets only); ``segment_bytes`` is the new store's segment size
    and ``batch_events`` the most events appended at once (memory is proportional to it).
    """
    legacy, target = os.fspath(legacy), os.fspath(target)
    if isinstance(batch_events, bool) or not isinstance(batch_events, int) or batch_events < 1:
        raise InvalidArgument(f"batch_events must be a positive integer, got {batch_events!r}")
    _check_paths(legacy, target)
    if os.path.islink(target):
        target = os.path.realpath(target)  # the store goes where the link points; the link stays
    report = Report("migrate", legacy)
    for path in stale_temps(target):
        report.add("stale-temp-file", "info", path,
                   f"an interrupted migration into {target} left its partial copy {path} (never a store under "
                   f"{target}'s name): remove it to free its space")
    reader = LegacyReader(legacy)
    log_size = _size(reader.log_path)
    scan = scan_log(reader)
    report.head = scan.head
    largest, outside = _survey(reader, scan)
    # Tags repeat the scalar values, so an event can grow to about twice its legacy file.
    max_bytes = min(MAX_EVENT_LIMIT, max(DEFAULT_MAX_EVENT_BYTES, 2 * largest + 65536))
    sink: Target | _DryRun = _DryRun(max_bytes) if dry_run else Target(target, max_bytes, segment_bytes, durable,
                                                                          batch_events)
    try:
        counts = _copy(reader, scan, sink, report, quiet)
        counts["torn_bytes"] = _keep_tail(reader, scan, sink, report)
        counts.update(_keep_orphans(reader, outside, sink, report))
        if isinstance(sink, Target):
            sink.finish(scan.head)
    finally:
        if isinstance(sink, Target):
            for path in sink.close():
                report.add("stale-temp-file", "warning", path, f"the partial copy {path} of a failed migration "
                           "could not be removed: remove it")
    if _size(reader.log_path) != log_size:
        report.add("legacy-changed", "warning", reader.log_path,
                   f"the legacy log changed while it was migrated: lines after {scan.head} were not migrated "
                   "(stop the Ruby writers and migrate again into a new folder)")
    report.finish()
    report.figures.update({
        "target": target, "dry_run": dry_run, "events": scan.head,
        "migrated": scan.head - counts["placeholders"], "placeholders": counts["placeholders"],
        "orphans": counts["orphans"], "strays": counts["strays"], "torn_bytes": counts["torn_bytes"],
        "max_event_bytes": max_bytes,
        "events_per_second": round(scan.head / report.seconds) if report.seconds > 0 else 0,
    })
    return utf8_report(report)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def _check_paths(legacy: str, target: str) -> None:
    if not os.path.isdir(legacy):
        raise InvalidArgument(f"{legacy} is not a folder; give the root folder of a Ruby kroniko store")
    if not is_format1(legacy):
        if os.path.exists(os.path.join(legacy, "FORMAT")):
            raise InvalidArgument(f"{legacy} is already a kroniko-ops store: nothing to migrate")
        raise InvalidArgument(f"{legacy} does not look like a Ruby kroniko store (no log/append.log or index/type)")
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise InvalidArgument(f"{target} is a file; give a new or empty folder as the target")
        names = os.listdir(target)
        if names:
            stale = [n for n in names if n in {os.path.basename(p) for p in stale_temps(target)}]
            why = f" (it holds {stale[0]}, the partial copy of an interrupted migration: remove it)" if stale else ""
            raise InvalidArgument(f"{target} is not empty{why}; migrate into a new or empty folder")
    real_legacy = os.path.realpath(legacy)
    real_target = os.path.realpath(target)
    if real_target == real_legacy or real_target.startswith(real_legacy + os.sep):
        raise InvalidArgument(f"{target} is inside the legacy store {legacy}, which is never written to")


def _survey(reader: LegacyReader, scan: LogScan) -> tuple[int, list[tuple[str, bool]]]:
    """One walk of ``events/`` before anything is written: the size of the largest event file
    (the target's event limit is fixed when it is created) and the entries no log line names."""
    largest = 0
    outside: list[tuple[str, bool]] = []
    events_dir = reader.events_dir
    for name, regular in reader.iter_event_files():
        # a named entry that is not a regular file is the log's business (a placeholder), not an orphan
        if not (name.endswith(".json") and fingerprint(name[:-5]) in scan.ids):
            outside.append((name, regular))
        if regular:
            try:
                largest = max(largest, os.lstat(f"{events_dir}/{name}").st_size)
            except OSError:
                continue
    return largest, outside


def _copy(reader: LegacyReader, scan: LogScan, sink: Target | _DryRun, report: Report, quiet: bool) -> dict[str, int]:
    counts = {"placeholders": 0}
    untagged: dict[str, list[int]] = {}
    renamed: dict[str, list[Any]] = {}
    keep: KeepAside = sink.keep_aside
    lines = reader.iter_log()
    for line in lines if quiet else progress(lines, scan.head, "migrate"):  # a disabled tqdm still costs 2 us/line
        if line.position > scan.head:
            break  # appended by a live writer after the scan: reported as legacy-changed
        ev = reader.read_event(line.event_id) if wants_event(line, scan) and line.event_id else None
        outcome = convert_line(line, ev, scan, keep, sink.max_event_bytes)
        for code, fact, decision in outcome.notes:
            where = reader.log_path if code in _LOG_CODES or line.event_id is None else \
                os.path.join(reader.events_dir, f"{line.event_id}.json")
            report.add(code, "warning", where, f"{fact}: {decision}", line.position, repaired=True)
        if outcome.placeholder:
            counts["placeholders"] += 1
        elif outcome.untagged or outcome.renamed:
            _note_properties(outcome, line.position, untagged, renamed)
        sink.add(outcome.event, outcome.encoded)
    for key, (count, first) in untagged.items():
        report.add("legacy-untagged-property", "info", reader.events_dir,
                   f"data property {show(key)!r} holds an array or object in {count} event(s) (first at position "
                   f"{first}): no tag (only scalars become tags); the gem indexed its inspect text", first)
    for key, (count, first, example, ruby) in renamed.items():
        report.add("legacy-tag-renamed", "info", reader.events_dir,
                   f"data property {show(key)!r} = {show(example)} in {count} event(s) (first at position {first}) "
                   f"is tagged {show(key)}:{show(example)}; the gem's index file was {show(ruby + '.jsonl')!r}", first)
    return counts


def _note_properties(outcome: Outcome, position: int, untagged: dict[str, list[int]],
                     renamed: dict[str, list[Any]]) -> None:
    """Count, per property, the values whose tag differs from the gem's index name: arrays and
    objects (no tag), null (the gem: ``""``) and floats in exponent form (``1.0e+20``)."""
    for key in outcome.untagged:
        if key in untagged:
            untagged[key][0] += 1
        elif len(untagged) < _MAX_TRACKED_KEYS:
            untagged[key] = [1, position]
    for key in outcome.renamed:
        if key in renamed:
            renamed[key][0] += 1
        elif len(renamed) < _MAX_TRACKED_KEYS:
            value = outcome.event.data[key]
            ruby = "" if value is None else ruby_float(value)
            renamed[key] = [1, position, property_tag(key, value)[len(key) + 1 :], ruby]


def _keep_tail(reader: LegacyReader, scan: LogScan, sink: Target | _DryRun, report: Report) -> int:
    """Keep a torn last log line's bytes in lost-found; return how many there were."""
    offset, torn = reader.torn_tail()
    if not torn:
        return 0
    note = (f"Bytes {offset}..{offset + len(torn)} of the legacy log/append.log of {reader.root}: a torn last "
            f"line after line {scan.head} (no newline), left by a Ruby writer that died mid-write. It was "
            "never committed; migrate cut it.")
    where = sink.keep_aside("legacy-log-tail", note, {"append.log.tail": torn})
    report.add("log-torn-tail", "warning", reader.log_path,
               f"the log ends in a torn line of {len(torn)} bytes "
               f"({show(torn.decode('utf-8', 'surrogateescape'))!r}): cut, its bytes are in {where}",
               scan.head + 1, repaired=True)
    return len(torn)


def _keep_orphans(reader: LegacyReader, outside: list[tuple[str, bool]], sink: Target | _DryRun,
                  report: Report) -> dict[str, int]:
    """Copy the files of ``events/`` no log line names (orphan events, and anything else found
    there) into the target's lost-found, in folders of at most ``ASIDE_FILES`` files."""
    files: dict[str, bytes] = {}
    names: list[tuple[str, str]] = []
    size = 0
    kept = {"orphans": 0, "strays": 0}

    def flush() -> None:
        nonlocal files, names, size
        if not names:
            return
        note = ("Files of the legacy events/ folder of " + reader.root + " that no committed log line names "
                "(their writer died before its log line, or they are not event files at all). They were "
                "never part of the store's history; migrate kept them here:\n"
                + "".join(f"  {n}: {why}\n" for n, why in names))
        where = sink.keep_aside("legacy-orphans", note, files)
        for name, why in names:
            code = "dangling-event" if why == "orphan event" else "stray-file"
            report.add(code, "warning", os.path.join(reader.events_dir, name),
                       f"events/{show(name)} ({why}) is named by no log line: kept in {where}", repaired=True)
        files, names, size = {}, [], 0

    for name, regular in outside:
        is_event = regular and name.endswith(".json")
        if not regular:
            names.append((name, "not a regular file, not copied"))
            kept["strays"] += 1
            continue
        try:
            data = _read_nofollow(os.path.join(reader.events_dir, name))
        except OSError as exc:
            names.append((name, f"unreadable ({exc.strerror}), not copied"))
            continue
        files[name] = data
        names.append((name, "orphan event" if is_event else "not an event file"))
        kept["orphans" if is_event else "strays"] += 1
        size += len(data)
        if len(files) >= ASIDE_FILES or size >= ASIDE_BYTES:
            flush()
    flush()
    return kept


def _read_nofollow(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()
