"""Helpers for the fsck / recover / reindex tests: stores built through the public API, hand-made
log lines (from docs/FORMAT.md), and the check that committed events are still readable."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from kroniko_ops import Event, EventStore, Query, QueryItem, StoreCorrupted
from kroniko_ops.log import LINE_LEN, LogLine, decode_line, encode_line, next_chain
from kroniko_ops.report import Report

TYPES = ("Ordered", "Paid", "Shipped")
LONG_TAG = "note:" + "x" * 200  # stored under a hashed file name with a .name file beside it
BATCHES = (3, 1, 4, 2, 2)


def build(path: str, durable: bool = False, batches: Iterable[int] = BATCHES) -> dict[int, Event]:
    """A store with a few batches of events of several types and tags; returns position -> event."""
    n = 0
    with EventStore(path, durable=durable) as store:
        for size in batches:
            batch = []
            for _ in range(size):
                tags = [f"cart:{n % 4}"] + (["vip"] if n % 3 == 0 else []) + ([LONG_TAG] if n == 5 else [])
                batch.append(Event(TYPES[n % 3], {"n": n, "sku": f"s-{n}"}, tags, None, f"ev-{n:04d}"))
                n += 1
            store.append(batch)
        return {e.position: e.event for e in store.read()}


def queries() -> list[Query]:
    """Queries that exercise every index file of :func:`build`'s stores."""
    out = [Query([QueryItem(types=[t])]) for t in TYPES]
    out += [Query([QueryItem(tags=[f"cart:{k}"])]) for k in range(4)]
    out += [Query([QueryItem(tags=["vip"])]), Query([QueryItem(tags=[LONG_TAG])]),
            Query([QueryItem(types=["Paid"], tags=["vip"])])]
    return out


def observe(path: str) -> tuple[list[tuple[int, Event]], list[list[int]]]:
    """What a reader sees: every event, and the positions each query of :func:`queries` returns."""
    with EventStore(path, create=False) as store:
        events = [(e.position, e.event) for e in store.read()]
        answers = [[e.position for e in store.read(q)] for q in queries()]
    return events, answers


def assert_readable(path: str, expected: dict[int, Event], destroyed: Iterable[int] = ()) -> None:
    """Every committed event not destroyed by the damage is readable at its position."""
    gone = set(destroyed)
    with EventStore(path, create=False) as store:
        head = store.head()
        for pos, event in expected.items():
            if pos in gone:
                continue
            assert pos <= head, f"position {pos} was lost (head {head})"
            try:
                got = list(store.read(start=pos, limit=1))
            except StoreCorrupted as exc:  # pragma: no cover - reported by the assert below
                raise AssertionError(f"position {pos} is unreadable: {exc}") from None
            assert got and got[0].position == pos and got[0].event == event, pos


def log_path(store: str) -> Path:
    """The store's log file."""
    return Path(store, "log", "append.log")


def line(store: str, pos: int) -> LogLine:
    """The parsed log line at ``pos``."""
    raw = log_path(store).read_bytes()[(pos - 1) * LINE_LEN : pos * LINE_LEN]
    return decode_line(raw)


def rewrite_line(store: str, pos: int, **fields: object) -> None:
    """Replace the log line at ``pos`` with one whose fields are changed and CRC recomputed (a
    careful person's edit, not random damage)."""
    new = dataclasses.replace(line(store, pos), **fields)
    data = bytearray(log_path(store).read_bytes())
    data[(pos - 1) * LINE_LEN : pos * LINE_LEN] = encode_line(new)
    log_path(store).write_bytes(bytes(data))


def next_line(store: str, event_id: str, event_hash: str, commit: bool) -> bytes:
    """A well-formed line for the position after the log's last line, chained to it."""
    data = log_path(store).read_bytes()
    last = decode_line(data[-LINE_LEN:])
    chain = next_chain(last.chain, event_hash)
    return encode_line(LogLine(last.position + 1, event_id, event_hash, chain, commit))


def flip(path: str | Path, offset: int) -> None:
    """Change one byte of a file (make it writable first: event files are read-only)."""
    os.chmod(path, 0o644)
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x20 if chr(data[offset]).isalpha() else 0x01
    Path(path).write_bytes(bytes(data))


def write(path: str | Path, data: bytes) -> None:
    """Overwrite a (possibly read-only) file."""
    if os.path.exists(path):
        os.chmod(path, 0o644)
    Path(path).write_bytes(data)


def dead_pid() -> int:
    """The id of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_old(path: str | Path, seconds: float = 7200) -> None:
    """Set a file's modification time ``seconds`` into the past."""
    st = os.stat(path)
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def codes(report: Report, severities: tuple[str, ...] = ("error", "warning")) -> set[str]:
    """The finding codes of a report, of the given severities."""
    return {f.code for f in report.findings if f.severity in severities}
