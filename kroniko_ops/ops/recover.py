"""``recover``: the light crash recovery a writer also does when it opens a store, on demand.

Under the append lock: cut a torn or uncommitted log tail (its bytes go to ``lost-found/`` with
a note), set aside temp files of writers that are gone, and catch the index up from its trusted
checkpoint. Idempotent, and safe to interrupt and rerun: the tail is set aside before the log is
truncated, and catching up first cuts whatever a dead writer left past the checkpoint.

Damage in the middle of the log is never repaired: it is reported (exit 4) with the advice to
restore from a backup. A tail that looks like damage to committed lines rather than a dead
writer's batch (see :func:`kroniko_ops.ops.checks_log.classify_tail`) is not cut either.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

from .. import layout
from ..errors import StoreCorrupted
from ..index import Checkpoint
from ..layout import Layout
from ..locking import held
from ..log import find_head
from ..report import Report
from ..store import EventStore
from .checks_common import LOG_PATH, Context, StopChecking, stale_temp
from .checks_log import LogScanner
from .checks_tail import DAMAGED, TORN, classify_tail
from .reindex import require_format2, sync_folder

CATCH_UP_CHUNK = 32768


class CheckpointAhead(StoreCorrupted):
    """The index checkpoint names a position past the log's head: only reindex fixes that."""


def recover(path: str | os.PathLike[str], *, lock_timeout: float = 30.0) -> Report:
    """Recover the store at ``path`` after a crash; return a report (exit 0 nothing to do,
    1 repaired, 4 damage remains that needs a person)."""
    root = os.fspath(path)
    require_format2(root)
    report = Report("recover", root)
    with EventStore(root, create=False, lock_timeout=lock_timeout) as store:
        with held(store.layout.append_lock, lock_timeout, "append"):
            recover_locked(store, report)
        head = store.head()
        # Mid-log damage is only reported: a structural pass over the committed lines.
        ctx = Context(root, report, full=False)
        try:
            for _ in LogScanner(ctx, store._read_fd, head, head, chain=False):
                pass
        except StopChecking:  # pragma: no cover - no max_errors here
            pass
    report.head = head
    report.figures["head"] = head
    return report.finish()


def recover_locked(store: EventStore, report: Report, catch_up: bool = True) -> None:
    """The recovery steps; the caller holds the append lock."""
    ctx = Context(store.path, report)
    tail = find_head(store._read_fd)
    if not tail.clean:
        raw = os.pread(store._read_fd, tail.file_size - tail.committed_bytes, tail.committed_bytes)
        kind, note = classify_tail(raw, tail.head)
        if kind == DAMAGED:
            ctx.add("log-bad-line", "error", LOG_PATH,
                    f"after position {tail.head}: {note}. Not cut: this is damage to committed data; "
                    "restore the store from a backup", tail.head + 1)
        else:
            store._writable_tail()
            code = "log-torn-tail" if kind == TORN else "log-uncommitted-tail"
            ctx.add(code, "error", LOG_PATH, f"{note}: cut into lost-found/ (no append was acknowledged "
                    "for these bytes)", tail.head + 1, repaired=True)
    set_aside_temps(ctx)
    if catch_up:
        head = find_head(store._read_fd).head
        try:
            added = catch_up_index(store, head)
        except CheckpointAhead as exc:
            ctx.add("index-checkpoint-ahead", "error", "index/CHECKPOINT", str(exc))
        except StoreCorrupted as exc:
            ctx.add("index-behind", "error", "index/CHECKPOINT", f"the index cannot be caught up: {exc}")
        else:
            if added:
                # Routine after a crash (the next append would do it too): info, not a repair.
                ctx.add("index-behind", "info", "index/CHECKPOINT",
                        f"the index was {added} position(s) behind the log; caught up")


def catch_up_index(store: EventStore, head: int) -> int:
    """Index the positions between the trusted checkpoint and ``head`` with the engine's own
    catch-up (which cuts lines a dead writer left past the checkpoint), then make the index
    durable; return how many positions were indexed."""
    cp = store.index.read_checkpoint()
    if cp.written > head:
        raise CheckpointAhead(
            f"the index checkpoint names position {cp.written} but the log ends at {head}; run: "
            f"kroniko-ops reindex {store.path}"
        )
    base = cp.trusted
    if base >= head:
        return 0
    cp = store._catch_up(head)
    if store.durable:
        sync_folder(store.layout.index)
        store.index.write_checkpoint(Checkpoint(cp.written, cp.written, cp.boot), durable=True)
    return head - base


def set_aside_temps(ctx: Context) -> int:
    """Move temp files (and unfinished reindex folders) of processes that are gone into
    ``lost-found/``, one folder per place; return how many."""
    lay = Layout(ctx.root)
    places = [ctx.root, lay.events, lay.log_dir, lay.packs, lay.index]
    places += [os.path.join(lay.index, k) for k in ("types", "tags", "ids")]
    found: dict[str, list[str]] = defaultdict(list)
    now = time.time()
    for folder in places:
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        with os.scandir(folder) as it:
            for entry in it:
                if stale_temp(entry.name, entry.path, now):
                    found[folder].append(entry.path)
    for folder, paths in found.items():
        rel = ctx.rel(folder)
        layout.set_aside(
            ctx.root, "temp-files",
            f"Temp files found in {rel}/ by recovery, left by processes that are gone (an event being "
            "prepared, a checkpoint being replaced, or an unfinished index rebuild). None of them was "
            "committed; they are kept here only for inspection.",
            move=sorted(paths),
        )
        for p in sorted(paths):
            ctx.add("stale-temp-file", "warning", ctx.rel(p), "a temp file left by a process that is gone: "
                    "set aside into lost-found/", repaired=True)
    return sum(len(v) for v in found.values())

