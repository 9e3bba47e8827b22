"""Helpers for the engine tests (format 3): file-tree snapshots, hand-made records written behind
the engine's back (a writer that died, a power cut), the synced position of another boot."""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kroniko_ops import Event, EventStore
from kroniko_ops.codec import encode_event
from kroniko_ops.format import record, segment
from kroniko_ops.synced import SyncedState, decode

Tree = dict[str, bytes | None]
NO_CHANGE = {"added": [], "removed": [], "changed": []}


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


def segments(path: str) -> list[int]:
    """The first positions of the store's segments, in order."""
    names = os.listdir(os.path.join(path, "log"))
    return sorted(p[0] for n in names if (p := segment.parse_name(n)) and p[1] == "seg")


def sealed(path: str) -> list[int]:
    """The first positions of the sealed segments (those with an offset index)."""
    names = os.listdir(os.path.join(path, "log"))
    return sorted(p[0] for n in names if (p := segment.parse_name(n)) and p[1] == "idx")


def active_path(path: str) -> str:
    """The active (last) segment's file."""
    return os.path.join(path, "log", segment.seg_name(segments(path)[-1]))


def synced_state(path: str) -> SyncedState | None:
    """What ``locks/synced`` says, read from the file."""
    return decode(Path(path, "locks", "synced").read_bytes())


def write_synced(path: str, state: SyncedState) -> None:
    """Overwrite ``locks/synced`` (e.g. a value of another boot, as after a reboot)."""
    Path(path, "locks", "synced").write_bytes(state.encode())


def as_other_boot(path: str, **changes: object) -> SyncedState:
    """Rewrite the synced state as if written before a reboot (optionally changing fields)."""
    cur = synced_state(path)
    assert cur is not None
    fields = {"position": cur.position, "segment": cur.segment, "end": cur.end, "chain": cur.chain,
              "boot": "an-earlier-boot", "poisoned": cur.poisoned}
    fields.update(changes)
    state = SyncedState(**fields)  # type: ignore[arg-type]
    write_synced(path, state)
    return state


def active_bytes(path: str) -> bytes:
    """The active segment's bytes up to its preallocated zeros (records, and whatever a dead
    writer left after them)."""
    return Path(active_path(path)).read_bytes().rstrip(b"\0")


def last_record(path: str) -> record.Record | None:
    """The last whole record of the active segment (None when it is empty)."""
    data = active_bytes(path)
    last = None
    for rec in record.iter_records(data):
        last = rec
    return last


def tail_of(path: str) -> tuple[int, bytes]:
    """``(position, chain)`` of the last record on disk (the previous segments' when the active
    one is empty)."""
    rec = last_record(path)
    if rec is not None:
        return rec.position, rec.chain
    firsts = segments(path)
    if len(firsts) == 1:
        return 0, record.GENESIS
    seal = segment.read_idx(os.path.join(path, "log", segment.idx_name(firsts[-2])), firsts[-2])
    return seal.last, seal.last_chain


def hand_records(path: str, events: Sequence[Event], commit: bool = True,
                 after: tuple[int, bytes] | None = None) -> bytes:
    """The records a writer would write for ``events`` right after the last record on disk (or
    ``after``); without ``commit`` the batch lacks its commit mark (its writer died mid-batch)."""
    position, chain = after or tail_of(path)
    items = [encode_event(e) for e in events]
    if not commit:
        items.append(encode_event(Event("NeverWritten", 0)))  # encoded, then left out
    data, sizes, _chain = record.encode(position + 1, chain, items)
    return data if commit else data[: len(data) - sizes[-1]]


def append_raw(path: str, data: bytes) -> None:
    """Write bytes after the active segment's last ones, over its preallocated zeros, behind the
    engine's back, in one ``write()`` (where a writer would write its next batch)."""
    end = len(active_bytes(path))
    fd = os.open(active_path(path), os.O_WRONLY)
    try:
        os.pwrite(fd, data, end)
    finally:
        os.close(fd)


def lost_found(path: str, label: str) -> list[Path]:
    """The folders of ``lost-found/`` set aside under ``label``, oldest first."""
    root = Path(path, "lost-found")
    return sorted(p for p in root.iterdir() if p.name.endswith("-" + label)) if root.is_dir() else []


def events_of(store: EventStore) -> list[tuple[int, Event]]:
    """``(position, event)`` of every event the store shows."""
    return [(e.position, e.event) for e in store.read()]


CHILD_TIMEOUT = 120.0  # a guard against a hang, not a speed assertion


def run_child(target: Callable[..., None], *args: object) -> Any:
    """Run ``target(*args, results)`` in a spawned process and return what it put on
    ``results``; the child is killed if it outlives the guard."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, results), daemon=True)
    proc.start()
    try:
        return results.get(timeout=CHILD_TIMEOUT)
    except queue.Empty:
        raise AssertionError(f"{target.__name__} did not report within {CHILD_TIMEOUT}s") from None
    finally:
        proc.join(CHILD_TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join(10)
