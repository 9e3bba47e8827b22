"""Helpers for the engine tests: file-tree snapshots, the documented index encoding, hand-made
log lines. Written from docs/FORMAT.md, not from the engine's code, so they check the engine."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

from kroniko_ops import Event, EventStore
from kroniko_ops.codec import encode_event
from kroniko_ops.log import LINE_LEN, LogLine, encode_line, next_chain, read_line

LITERAL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:")
MAX_LITERAL = 180
BUCKET_RE = re.compile(r"\A[0-9a-f]{3}\.ids\Z")

Tree = dict[str, bytes | None]


def snapshot(root: str) -> Tree:
    """Every file (with its bytes) and folder (None) under ``root``, by relative path."""
    out: Tree = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirs:
            out[os.path.normpath(os.path.join(rel, d))] = None
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.normpath(os.path.join(rel, f))] = fh.read()
    return out


def tree_diff(before: Tree, after: Tree) -> dict[str, list[str]]:
    """What changed between two snapshots: ``added``, ``removed`` and ``changed`` paths."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(p for p in set(before) & set(after) if before[p] != after[p]),
    }


def documented_name(name: str) -> str:
    """The index file name (without suffix) of a type or tag, as docs/FORMAT.md specifies it."""
    if name == "":
        return "="
    out = []
    for i, ch in enumerate(name):
        if ch in LITERAL or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    encoded = "".join(out)
    if len(encoded) > MAX_LITERAL:
        return "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return encoded


def bucket(event_id: str) -> str:
    """The id bucket file of an event id, as docs/FORMAT.md specifies it."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:3] + ".ids"


def expected_index(events: Iterable[tuple[int, Event]]) -> dict[str, bytes]:
    """The ``.pos`` and ``.ids`` files (relative to ``index/``) that ``(position, event)`` pairs
    imply, from the documented format."""
    files: dict[str, list[bytes]] = {}
    for pos, e in events:
        line = b"%012d\n" % pos
        files.setdefault(f"types/{documented_name(e.type)}.pos", []).append(line)
        for tag in dict.fromkeys(e.tags):
            files.setdefault(f"tags/{documented_name(tag)}.pos", []).append(line)
        assert e.id is not None
        files.setdefault(f"ids/{bucket(e.id)}", []).append(b"%012d %s\n" % (pos, e.id.encode()))
    return {path: b"".join(lines) for path, lines in files.items()}


def actual_index(store_path: str) -> dict[str, bytes]:
    """The ``.pos`` and ``.ids`` files under a store's ``index/``, relative to it."""
    root = os.path.join(store_path, "index")
    return {path: data for path, data in snapshot(root).items()
            if data is not None and (path.endswith(".pos") or path.endswith(".ids"))}


def all_events(store: EventStore) -> list[tuple[int, Event]]:
    """``(position, event)`` for every committed event."""
    return [(e.position, e.event) for e in store.read()]


def hand_lines(store: EventStore, events: list[Event], commit_last: bool = True) -> bytes:
    """Log lines for ``events`` after the current head, as a writer would write them, with each
    event's file already published in ``events/`` (the state just before or during a commit)."""
    head = store.head()
    chain = read_line(store._read_fd, head).chain if head else "0" * 64
    out = []
    for i, event in enumerate(events):
        eid, raw = encode_event(event)
        with open(store.layout.event_file(eid), "xb") as f:
            f.write(raw)
        ehash = hashlib.sha256(raw).hexdigest()
        chain = next_chain(chain, ehash)
        last = i == len(events) - 1
        out.append(encode_line(LogLine(head + i + 1, eid, ehash, chain, commit_last and last)))
    data = b"".join(out)
    assert len(data) == LINE_LEN * len(events)
    return data


def append_raw(store: EventStore, data: bytes) -> None:
    """Append bytes to the log behind the engine's back (a writer that died mid-way)."""
    with open(store.layout.log, "ab") as f:
        f.write(data)
