"""Regressions for engine bugs the harness found, each as a minimal reproduction.

1. A writer killed after appending its index lines but before advancing the index checkpoint:
   the next writer (not ``recover``) caught the index up and listed those positions twice
   (fsck: index-extra-entry). Found by the crash sweep's index-lag shapes and by torture.
2. The log fsync failed after the batch's lines were written: the engine raised
   DurabilityError (right: the outcome is unknown) but also removed the batch's event files,
   while its lines stayed in the log: a committed position whose event was missing
   (StoreCorrupted on read, missing-event in fsck). Found by the I/O-fault sweep.

Both were fixed in the engine; these keep them fixed.
"""

from __future__ import annotations

import errno
import os
import tempfile

from kroniko_ops import DurabilityError, Event, EventStore, KronikoError, fileio
from kroniko_ops.harness.crash import run_forked


def index_lines_twice() -> bool:
    """A writer killed after appending its index lines but before advancing the index checkpoint;
    the next writer (not recover) catches the index up and lists those positions a second time."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s")
        with EventStore(path, durable=False) as s:
            s.append(Event("A", 1, ["t"]))

        def die_at_checkpoint() -> None:
            def injector(op: str, p: str) -> None:
                if p.endswith("CHECKPOINT"):
                    os.kill(os.getpid(), 9)

            fileio.set_fault_injector(injector)
            with EventStore(path, durable=False) as s:
                s.append(Event("A", 2, ["t"]))

        killed, _ = run_forked(die_at_checkpoint)
        assert killed
        with EventStore(path, durable=False) as s:
            s.append(Event("A", 3, ["t"]))  # a writer, not recover, catches the index up
            lines = open(s.index.path("types", "A"), "rb").read().split()
        return len(lines) != len(set(lines))


def failed_log_fsync_loses_events() -> bool:
    """The log fsync fails after the batch's lines were written: the engine raises
    DurabilityError (outcome unknown, fine) but also removes the batch's event files, while its
    lines stay in the log: a committed position whose event is missing."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s")
        with EventStore(path) as s:
            log = s.layout.log

            def injector(op: str, p: str) -> None:
                if op == "fsync" and p == log:
                    raise OSError(errno.EIO, "injected", p)

            previous = fileio.set_fault_injector(injector)
            try:
                s.append(Event("A", 1, id="e1"))
            except DurabilityError:
                pass
            finally:
                fileio.set_fault_injector(previous)
        with EventStore(path) as s:
            try:
                list(s.read())
            except KronikoError:
                return True
        return False


def test_writer_catching_up_after_a_kill_lists_each_position_once() -> None:
    assert not index_lines_twice()


def test_failed_log_fsync_never_leaves_a_position_without_its_event() -> None:
    assert not failed_log_fsync_loses_events()
