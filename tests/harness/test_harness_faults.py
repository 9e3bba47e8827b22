"""I/O faults: EIO and ENOSPC at every file operation of an append (and of a compaction, a
backup and a recovery), once or from then on.

After each fault: the error is clear (a KronikoError, or an OSError naming the errno and the
path); a handle that saw a failed fsync refuses further appends (after a failed write, which
the engine takes back, it may go on); closing the handle works; recover + fsck find the store
clean; every acknowledged event is there, an unknown outcome is all or nothing; the same call
retried on a new handle lands exactly once, and the store takes new appends.
"""

from __future__ import annotations

import errno
import os

import pytest
from harness_helpers import rendered

import kroniko_ops
from kroniko_ops import DurabilityError, Event, EventStore, fileio
from kroniko_ops.harness import scenarios
from kroniko_ops.harness.faults import FailNth, engine_write_sites, fault_sweep, faulted_lines


def test_every_call_of_an_append_fails_cleanly(sweep_dir) -> None:
    """Every file operation of every append shape fails once (EIO/ENOSPC, once/sticky in turn),
    and every call site the append path has in the engine is among those failed."""
    report = fault_sweep(scenarios.default_shapes(), sweep_dir, cycle=True)
    assert report.cases >= 100, report.summary()
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"
    missed = engine_write_sites() - faulted_lines(report)
    assert not missed, f"engine write sites no shape reached: {sorted(missed)}"
    assert report.raised.get("DurabilityError", 0) > 0


@pytest.mark.soak
def test_every_site_fails_with_each_errno_in_both_modes(sweep_dir) -> None:
    """The first call at each call site, with EIO and ENOSPC, once and from then on."""
    report = fault_sweep(scenarios.default_shapes(), sweep_dir, per_site=True)
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"


@pytest.mark.parametrize("shape", scenarios.maintenance_shapes(), ids=lambda s: s.name)
def test_maintenance_fails_cleanly_at_every_call_site(shape, sweep_dir) -> None:
    report = fault_sweep([shape], sweep_dir, per_site=True, cycle=True)
    assert report.cases >= 5, report.summary()
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"


def test_a_failed_fsync_closes_the_handle_and_the_store_until_recover(tmp_path) -> None:
    path = str(tmp_path / "s")
    with EventStore(path) as s:
        s.append(Event("A", 1, id="first"))
        previous = fileio.set_fault_injector(FailNth("fsync", 1, errno.EIO, sticky=False))
        try:
            with pytest.raises(DurabilityError) as caught:
                s.append(Event("A", 2, id="second"))
        finally:
            fileio.set_fault_injector(previous)
        assert "Input/output" in str(caught.value) and "recover" in str(caught.value)
        with pytest.raises(DurabilityError):  # no fault any more, but this handle is done
            s.append(Event("A", 3, id="third"))
    with EventStore(path) as s, pytest.raises(DurabilityError, match="recover"):
        s.append(Event("A", 4, id="fourth"))  # nor may another handle append before recover
    assert kroniko_ops.recover(path).exit_code in (0, 1)
    with EventStore(path) as s:
        s.append(Event("A", 5, id="fifth"))
        ids = [e.id for e in s.read()]
    assert ids[0] == "first" and ids[-1] == "fifth" and "third" not in ids and "fourth" not in ids


def test_a_failed_write_commits_nothing_and_the_handle_may_retry(tmp_path) -> None:
    path = str(tmp_path / "s")
    with EventStore(path, durable=False) as s:
        s.append(Event("A", 1, id="first"))
        previous = fileio.set_fault_injector(FailNth("write", 1, errno.ENOSPC, sticky=False))
        try:
            with pytest.raises(DurabilityError, match="nothing was committed"):
                s.append(Event("A", 2, id="second"))
        finally:
            fileio.set_fault_injector(previous)
        assert s.head() == 1
        assert s.append(Event("A", 2, id="second")) == 2
    with EventStore(path, durable=False) as s:
        assert [e.id for e in s.read()] == ["first", "second"]


def test_an_injected_fault_names_the_path(tmp_path) -> None:
    injector = FailNth("open", 1, errno.ENOSPC, sticky=True)
    previous = fileio.set_fault_injector(injector)
    try:
        with pytest.raises(OSError) as caught:
            fileio.open_write(os.path.join(tmp_path, "x"), os.O_WRONLY | os.O_CREAT)
    finally:
        fileio.set_fault_injector(previous)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename.endswith("x")
    assert injector.seen == 1 and len(injector.failed) == 1
