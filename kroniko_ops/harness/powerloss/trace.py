"""Checks of a recorded run as a whole, deterministic (no crash state needed): what the trace of
disk changes and the processes' histories must show whatever the timing.

- the synced position, as written to ``locks/synced``, never moves back within a run (a reboot
  is the only thing that may lower it, and a recorded run has none), and never names bytes of
  its segment that no fsync begun after their write had covered by then (group commit may
  count other writers' batches only when its fsync began after they were written);
- no process sees the head go back: each one's reads answer for non-decreasing heads;
- a maintenance operation with no fault injected succeeds (a broken one often fails its own
  self-checks: that failure is the finding), and no process of the run stops on an exception
  (a read that finds the log unreadable, say);
- a folder published by a rename (a restored, migrated or backed-up store) is whole on disk
  before that rename: every file in it fsynced after its last write, every name in it (files and
  folders) made durable by an fsync of its folder, so that the name can never stand for less.
"""

from __future__ import annotations

import os

from ...format.segment import seg_name
from ...layout import TMP_PREFIX
from ...synced import decode
from .model import DATA_OPS, Change, Model

NAMING = frozenset({"create", "rename", "link", "mkdir"})


def trace_problems(model: Model, history: list[dict]) -> list[str]:
    """Every problem of the run itself."""
    return [*_synced_backwards(model), *_synced_uncovered(model), *_heads_backwards(history),
            *_failed_actions(history), *_published_early(model), *_stopped(history)]


def _stopped(history: list[dict]) -> list[str]:
    return [f"process {h['who'].removesuffix('-error')} stopped: {h['error']}" for h in history if h["ev"] == "error"]


def _synced_backwards(model: Model) -> list[str]:
    last: dict[int, tuple[int, Change]] = {}
    out = []
    for ch in model.changes:
        if ch.kind != "write" or not ch.op["path"].endswith("locks/synced") or ch.op.get("offset"):
            continue
        state = decode(ch.op["data"])
        if state is None:
            continue
        before = last.get(ch.ino)
        if before is not None and state.position < before[0]:
            out.append(f"the synced position of {ch.op['path']} moved back from {before[0]} to {state.position} "
                       f"(change {ch.i}, process {ch.op.get('pid')}; {before[0]} was written at change "
                       f"{before[1].i} by process {before[1].op.get('pid')})")
        last[ch.ino] = (state.position, ch)
    return out[:3]


def _synced_uncovered(model: Model) -> list[str]:
    out = []
    for ch in model.changes:
        if ch.kind != "write" or not ch.op["path"].endswith("locks/synced") or ch.op.get("offset"):
            continue
        state = decode(ch.op["data"])
        if state is None or not state.end or any(part.startswith(TMP_PREFIX) for part in ch.op["path"].split("/")):
            continue  # (a store built in a temporary folder is checked whole when its rename publishes it)
        seg = os.path.join(os.path.dirname(os.path.dirname(ch.op["path"])), "log", seg_name(state.segment))
        ino = next((c.ino for c in reversed(model.changes[:ch.i]) if c.op["path"] == seg and c.ino >= 0), None)
        for c in model.changes[:ch.i]:
            if (c.kind == "write" and c.ino == ino and c.op.get("offset", 0) < state.end
                    and (c.durable_at is None or c.durable_at >= ch.i)):
                out.append(f"the synced position {state.position} of {ch.op['path']} (change {ch.i}, process "
                           f"{ch.op.get('pid')}) names bytes of {seg} written at change {c.i} that no fsync begun "
                           "after that write had made durable")
                break
    return out[:3]


def _heads_backwards(history: list[dict]) -> list[str]:
    heads: dict[str, tuple[int, int]] = {}
    out = []
    for h in sorted((h for h in history if h["ev"] == "read"), key=lambda h: h["t0"]):
        before = heads.get(h["who"])
        if before is not None and h["head"] < before[0]:
            out.append(f"process {h['who']} read head {before[0]}, then head {h['head']} (at t={h['t0']}): "
                       "a head went back")
        heads[h["who"]] = (h["head"], h["t1"])
    return out[:3]


def _failed_actions(history: list[dict]) -> list[str]:
    return [f"the {h['name']} operation failed with no fault injected: {h.get('error')}"
            for h in history if h["ev"] == "action" and not h["ok"]]


def _published_early(model: Model) -> list[str]:
    out = []
    for r in model.changes:
        if r.kind != "rename" or not r.moved:
            continue
        for path, ident, is_folder in r.moved:
            made = [c for c in model.changes[: r.i] if c.kind in NAMING and c.ino == ident
                    and (c.kind == "mkdir") == is_folder]
            data = [c for c in model.changes[: r.i] if c.kind in DATA_OPS and c.ino == ident and not is_folder]
            final = r.op["path"] + path[len(r.op["src"]):]
            if made and not _durable_before(made[-1], r):
                out.append(f"{final} was published (rename at change {r.i}) before its name was made durable "
                           f"(no fsync of its folder after change {made[-1].i})")
            if data and not _durable_before(data[-1], r):
                out.append(f"{final} was published (rename at change {r.i}) before its last write (change "
                           f"{data[-1].i}) was fsynced")
    return out[:5]


def _durable_before(ch: Change, publish: Change) -> bool:
    return ch.durable_at is not None and ch.durable_at < publish.i
