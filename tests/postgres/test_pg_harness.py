"""The proof harness (kroniko_ops.harness) against the PostgreSQL store: concurrent conditional
appends, reads and retries in several processes, SIGKILLs at random moments and inside an
append's transaction, then the checker's properties and fsck. CI-sized: a few rounds."""

from __future__ import annotations

from kroniko_ops.harness.checker import Prior, check
from kroniko_ops.harness.history import UNKNOWN
from kroniko_ops.harness.torture import torture
from kroniko_ops.harness.verify import entry_reader, read_log, recover_and_fsck
from kroniko_ops.harness.worker import context, create_store, run_workload
from kroniko_ops.harness.workload import Limits, generate

LIMITS = Limits(min_workers=4, max_workers=4, min_ops=4, max_ops=8, max_batch=20, kill_chance=0.3)


def test_torture_rounds_with_kills_find_no_violation(pg_url: str) -> None:
    report = torture(pg_url, workers=4, rounds=4, duration=None, kill_rate=0.5, seed=7, durable=False)
    assert report.exit_code == 0, [f.message for f in report.findings]
    assert report.figures["rounds"] == 4
    assert report.figures["commits"] > 0 and report.head > 1
    assert "kroniko-test-pw" not in report.path


def test_workloads_killed_inside_the_commit_leave_the_properties_intact(pg_url: str) -> None:
    ctx = context("forkserver")
    base = 0
    killed = unknown = 0
    prior = Prior(entry_at=entry_reader(pg_url))
    for seed in range(3):
        workload = generate(1000 + seed, LIMITS, durable=False)
        if seed == 0:
            create_store(pg_url, workload)
        result = run_workload(pg_url, workload, kills=[(1, 0.02)], ctx=ctx)
        killed += result.kills
        unknown += result.history.count(UNKNOWN)  # an append cut short by its own SIGKILL
        log = read_log(pg_url, base)
        assert check(result.history, log, base, prior) == []
        assert recover_and_fsck(pg_url) == []
        prior.advance(log)
        base = log[-1].position if log else base
    assert killed >= 1 and unknown >= 1
