"""The checker finds each kind of violation in fabricated histories, names the operations
involved, and finds nothing in histories of a correct (simulated) store."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from simulate import simulate

from kroniko_ops.harness.checker import LogEntry, Prior, Violation, check
from kroniko_ops.harness.history import COMMITTED, REJECTED, UNKNOWN, History, OpRecord, ReadRecord, read_digest
from kroniko_ops.harness.logsummary import matches
from kroniko_ops.harness.workload import EventPlan, Limits, workloads


def op(w: int, i: int, n: int = 1, *, outcome: str = COMMITTED, pos: int | None = None, inv: int = 0,
       comp: int | None = 10, type_: str = "A", tags: tuple[str, ...] = (), query: tuple | None = None,
       after: int | None = None, conflict: int | None = None, ids: tuple[str, ...] | None = None) -> OpRecord:
    """An append record; ``query`` makes it conditional."""
    return OpRecord(w, i, "conditional" if query is not None else "append",
                    ids or tuple(f"e{w}.{i}.{k}" for k in range(n)), tuple(EventPlan(type_, tags) for _ in range(n)),
                    conditional=query is not None, query=query, after=after, invoke=inv, complete=comp,
                    outcome=outcome, position=pos, conflict=conflict)


def entries(*rows: tuple[int, str, str, tuple[str, ...]]) -> list[LogEntry]:
    return [LogEntry(p, i, t, tags) for p, i, t, tags in rows]


def log_of(*ops: OpRecord) -> list[LogEntry]:
    """The log those ops would leave, in the order given, positions from 1, each batch's last
    record with the commit mark."""
    out: list[LogEntry] = []
    for o in ops:
        for k, (eid, plan) in enumerate(zip(o.ids, o.events, strict=True)):
            out.append(LogEntry(len(out) + 1, eid, plan.type, plan.tags, commit=k == len(o.ids) - 1))
    return out


def read_of(w: int, i: int, log: list[LogEntry], head: int, spec: tuple = (), inv: int = 0, comp: int = 1,
            returned: list[int] | None = None) -> ReadRecord:
    """A read of ``spec`` answering for ``head`` that returned ``returned`` (by default exactly
    the matches in the log up to ``head``), recorded as a worker records it."""
    if returned is None:
        returned = [e.position for e in log if e.position <= head and matches(spec, e.type, e.tags)]
    hashes = {e.position: e.hash for e in log}
    return ReadRecord(w, i, inv, comp, head, len(returned), spec, None, False,
                      read_digest((p, hashes.get(p, b"")) for p in returned), True, tuple(returned))


def only(found: list[Violation], code: str) -> Violation:
    hits = [v for v in found if v.code == code]
    assert hits, f"expected a {code} violation, got {[v.code for v in found]}"
    return hits[0]


def names(v: Violation) -> set[str]:
    return {o.name for o in v.ops} | {r.name for r in v.reads}


def test_a_correct_history_has_no_violation() -> None:
    a = op(0, 0, 2, pos=2, inv=0, comp=10, tags=("t",))
    b = op(1, 0, 1, pos=3, inv=5, comp=20, query=(((), ("u",)),), after=2)
    c = op(1, 1, 1, outcome=REJECTED, inv=30, comp=40, query=(((), ("t",)),), after=0, conflict=1)
    log = log_of(a, b)
    reads = [read_of(1, 0, log, 2, (((), ("u",)),), inv=3, comp=4), read_of(1, 1, log, 0, inv=0, comp=1),
             read_of(0, 1, log, 3, inv=25, comp=26), read_of(0, 2, log, 3, (((), ("t",)),), inv=27, comp=28)]
    assert check(History([a, b, c], reads), log) == []


def test_duplicate_and_missing_positions() -> None:
    a, b = op(0, 0, pos=1), op(0, 1, pos=2, inv=20, comp=30)
    dup = entries((1, a.ids[0], "A", ()), (1, b.ids[0], "A", ()))
    assert only(check(History([a, b]), dup), "duplicate-position").prop == 1
    gap = entries((1, a.ids[0], "A", ()), (3, b.ids[0], "A", ()))
    assert only(check(History([a, b]), gap), "position-gap").prop == 1


def test_lost_acknowledgement_names_the_operation() -> None:
    a, b = op(0, 0, pos=1), op(1, 0, pos=2, inv=20, comp=30)
    v = only(check(History([a, b]), log_of(a)), "lost-ack")
    assert v.prop == 2 and names(v) == {"w1#0"}
    assert "w1#0" in v.render()


def test_rejected_events_must_be_absent() -> None:
    a = op(0, 0, pos=1)
    b = op(1, 0, outcome=REJECTED, inv=20, comp=30, query=((("A",), ()),), after=0, conflict=1)
    v = only(check(History([a, b]), log_of(a, b)), "rejected-present")
    assert names(v) == {"w1#0"}


def test_batches_are_all_or_nothing_and_contiguous() -> None:
    a = op(0, 0, 2, outcome=UNKNOWN, comp=None)
    half = log_of(a)[:1]
    assert names(only(check(History([a]), half), "partial-batch")) == {"w0#0"}
    b = op(1, 0, pos=2, inv=0, comp=5)
    split = entries((1, a.ids[0], "A", ()), (2, b.ids[0], "A", ()), (3, a.ids[1], "A", ()))
    assert names(only(check(History([a, b]), split), "split-batch")) == {"w0#0"}


def test_unknown_outcome_may_be_present_or_absent() -> None:
    a = op(0, 0, 3, outcome=UNKNOWN, comp=None)
    assert check(History([a]), []) == []
    assert check(History([a]), log_of(a)) == []


def test_acknowledged_position_must_match_the_log() -> None:
    a, b = op(0, 0, pos=1), op(1, 0, 2, pos=5, inv=20, comp=30)
    assert names(only(check(History([a, b]), log_of(a, b)), "wrong-position")) == {"w1#0"}


def test_events_no_operation_appended() -> None:
    a = op(0, 0, pos=1)
    log = log_of(a) + entries((2, "intruder", "A", ()))
    assert "intruder" in only(check(History([a]), log), "unexplained-event").message


def test_conditional_append_committed_despite_a_matching_event() -> None:
    a = op(0, 0, pos=1, type_="A", tags=("cart:1",), inv=0, comp=10)
    b = op(1, 0, pos=2, type_="A", tags=("cart:1",), inv=5, comp=20, query=((("A",), ("cart:1",)),), after=0)
    log = log_of(a, b)
    early, late = read_of(1, 0, log, 0, inv=1, comp=2), read_of(1, 0, log, 1, inv=11, comp=12)
    v = only(check(History([a, b], [early]), log), "condition-violated")
    assert v.prop == 3 and names(v) == {"w0#0", "w1#0"}
    # The same two commits are fine when the condition's `after` covers the first one, read
    # before the append was invoked.
    b.after, b.invoke = 1, 13
    assert check(History([a, b], [late]), log) == []


def test_an_inflated_after_hides_a_conflict_but_is_caught() -> None:
    """Worker 1 read head 0, then conditioned its append on after=1 (a head it never read):
    the conflict at position 1 is covered by the inflated `after`, so property 3's replay sees
    nothing wrong; the condition's head is caught as never read."""
    a = op(0, 0, pos=1, type_="A", tags=("cart:1",), inv=0, comp=10)
    b = op(1, 0, pos=2, type_="A", tags=("cart:1",), inv=15, comp=20, query=((("A",), ("cart:1",)),), after=1)
    log = log_of(a, b)
    found = check(History([a, b], [read_of(1, 0, log, 0, inv=1, comp=2)]), log)
    v = only(found, "after-not-read")
    assert v.prop == 3 and names(v) == {"w1#0"} and "after=1" in v.message
    assert not [x for x in found if x.code == "condition-violated"]
    # A head read by another worker does not count: the process itself must have read it.
    other = read_of(0, 1, log, 1, inv=11, comp=12)
    assert only(check(History([a, b], [read_of(1, 0, log, 0, inv=1, comp=2), other]), log), "after-not-read")


def test_rejections_need_a_cause() -> None:
    a = op(0, 0, pos=1, type_="B", inv=0, comp=10)
    q = ((("A",), ()),)
    not_matching = op(1, 0, outcome=REJECTED, inv=20, comp=30, query=q, after=0, conflict=1)
    assert only(check(History([a, not_matching]), log_of(a)), "unexplained-rejection").prop == 4
    too_early = op(1, 0, outcome=REJECTED, inv=20, comp=30, query=(((), ()),), after=1, conflict=1)
    assert only(check(History([a, too_early]), log_of(a)), "unexplained-rejection").prop == 4
    past_head = op(1, 0, outcome=REJECTED, inv=20, comp=30, query=q, after=0, conflict=7)
    assert "past the head" in only(check(History([a, past_head]), log_of(a)), "unexplained-rejection").message


def test_rejection_citing_an_event_written_later() -> None:
    rejected = op(1, 0, outcome=REJECTED, inv=0, comp=10, query=((("A",), ()),), after=0, conflict=1)
    later = op(0, 0, pos=1, inv=20, comp=30)
    v = only(check(History([rejected, later]), log_of(later)), "rejection-before-cause")
    assert names(v) == {"w1#0", "w0#0"}


def test_rejection_must_cite_the_first_conflict() -> None:
    a, b = op(0, 0, pos=1, inv=0, comp=5), op(0, 1, pos=2, inv=6, comp=9)
    r = op(1, 0, outcome=REJECTED, inv=10, comp=20, query=((("A",), ()),), after=0, conflict=2)
    assert names(only(check(History([a, b, r]), log_of(a, b)), "wrong-conflict")) == {"w1#0"}


def test_real_time_reordering() -> None:
    first = op(0, 0, pos=2, inv=0, comp=10)  # completed before `second` was invoked ...
    second = op(1, 0, pos=1, inv=20, comp=30)  # ... yet got the lower position
    v = only(check(History([first, second]), log_of(second, first)), "real-time-order")
    assert v.prop == 5 and names(v) == {"w0#0", "w1#0"}
    overlapping = op(1, 0, pos=1, inv=5, comp=30)  # concurrent: either order is fine
    assert check(History([first, overlapping]), log_of(overlapping, first)) == []


def test_stale_read() -> None:
    a = op(0, 0, pos=1, inv=0, comp=10)
    r = ReadRecord(1, 0, 20, 25, head=0)
    v = only(check(History([a], [r]), log_of(a)), "stale-read")
    assert names(v) == {"w0#0", "w1#0r"}


def test_a_head_that_goes_back_within_a_process() -> None:
    """A worker that read head 3 and then, in a later read, head 1 saw the head go back (the
    synced position was lowered under it), even though each read alone is a committed prefix."""
    a = op(0, 0, pos=1, inv=0, comp=5)
    b = op(0, 1, 2, pos=3, inv=6, comp=10)
    log = log_of(a, b)
    first, again = read_of(1, 0, log, 3, inv=11, comp=12), read_of(1, 1, log, 1, inv=13, comp=14)
    v = only(check(History([a, b], [first, again]), log), "head-went-back")
    assert v.prop == 7 and names(v) == {"w1#0r", "w1#1r"} and "head 1" in v.message
    overlapping = read_of(1, 1, log, 1, inv=5, comp=14)  # started before the other read ended: no order
    assert check(History([a, b], [first, overlapping]), log) == []


def test_a_read_in_the_middle_of_a_batch() -> None:
    """A read whose head splits a batch of three saw part of it (even if what it returned is
    exactly the log up to that head)."""
    a = op(0, 0, 3, pos=3, inv=0, comp=10)
    log = log_of(a)
    r = read_of(1, 0, log, 2, inv=5, comp=6)
    v = only(check(History([a], [r]), log), "read-mid-batch")
    assert v.prop == 7 and names(v) == {"w1#0r"} and "head 2" in v.message
    assert check(History([a], [read_of(1, 0, log, 3, inv=11, comp=12)]), log) == []


def test_a_read_past_the_final_head() -> None:
    """A read answering for a head the log never reached saw records that were not committed
    (a dead writer's batch that recovery cut, say)."""
    a = op(0, 0, 2, pos=2, inv=0, comp=10)
    ghost = op(1, 0, 2, outcome=UNKNOWN, inv=0, comp=None)
    log = log_of(a)
    r = read_of(2, 0, log_of(a, ghost), 4, inv=11, comp=12)
    v = only(check(History([a, ghost], [r]), log), "read-past-head")
    assert v.prop == 7 and "final committed head is 2" in v.message


def test_a_read_must_return_exactly_the_committed_matches() -> None:
    a = op(0, 0, 2, pos=2, inv=0, comp=10, tags=("t",))
    b = op(0, 1, 1, pos=3, inv=11, comp=20, tags=("u",))
    log = log_of(a, b)
    spec = (((), ("t",)),)
    dropped = read_of(1, 0, log, 3, spec, inv=21, comp=22, returned=[2])
    v = only(check(History([a, b], [dropped]), log), "read-wrong-result")
    assert v.prop == 7 and "missing [1]" in v.message
    extra = read_of(1, 0, log, 2, spec, inv=21, comp=22, returned=[1, 2, 3])
    assert "extra [3]" in only(check(History([a, b], [extra]), log), "read-wrong-result").message
    # The right positions with another body: the digest covers the body hashes too.
    other = [LogEntry(e.position, e.id, e.type, e.tags, e.commit, b"tampered" if e.position == 1 else b"")
             for e in log]
    bodies = read_of(1, 0, other, 3, spec, inv=21, comp=22)
    assert "other event bodies" in only(check(History([a, b], [bodies]), log), "read-wrong-result").message
    unordered = read_of(1, 0, log, 3, spec, inv=21, comp=22)
    unordered.ordered = False
    assert only(check(History([a, b], [unordered]), log), "read-unordered").prop == 7


def test_idempotent_retry() -> None:
    a = op(0, 0, 2, pos=2, inv=0, comp=10)
    ok = op(0, 1, 2, pos=2, inv=20, comp=30, ids=a.ids)
    assert check(History([a, ok]), log_of(a)) == []
    refused = op(0, 1, 2, outcome=REJECTED, inv=20, comp=30, ids=a.ids, query=(((), ()),), after=2, conflict=1)
    assert names(only(check(History([a, refused]), log_of(a)), "retry-rejected")) >= {"w0#1"}
    dup = log_of(a) + entries((3, a.ids[0], "A", ()), (4, a.ids[1], "A", ()))
    assert only(check(History([a, ok]), dup), "duplicate-event").prop == 2


def test_prior_positions_explain_rejections_and_conditions() -> None:
    """A run on a store that already had events (torture's later rounds)."""
    old = LogEntry(1, "old", "A", ("cart:1",))
    prior = Prior(entry_at=lambda p: old if p == 1 else None)
    prior.advance([old])
    r = op(0, 0, outcome=REJECTED, inv=0, comp=5, query=((("A",), ("cart:1",)),), after=None, conflict=1)
    assert check(History([r]), [], base=1, prior=prior) == []
    c = op(0, 1, pos=2, inv=6, comp=9, type_="A", tags=("cart:1",), query=((("A",), ("cart:1",)),), after=None)
    log = [LogEntry(2, c.ids[0], "A", ("cart:1",))]
    assert only(check(History([c]), log, base=1, prior=prior), "condition-violated").prop == 3


@settings(max_examples=60, deadline=None)
@given(workloads(Limits(max_workers=5, max_ops=8)), st.integers(0, 2**32 - 1))
def test_histories_of_a_correct_store_pass(workload, seed) -> None:
    """No false alarm: a simulated linearizable store's histories always pass, and dropping an
    acknowledged event from its log is always caught."""
    history, log = simulate(workload, random.Random(seed))
    assert check(history, log) == []
    acked = [o for o in history.ops if o.outcome == COMMITTED and o.position is not None]
    if acked:
        victim = acked[0].position
        broken = [e for e in log if e.position != victim]
        assert {v.prop for v in check(history, broken)} & {1, 2}
    # A read that lost one of its events is caught.
    seen = [r for r in history.reads if r.positions]
    if seen:
        r = seen[0]
        r.positions, r.found = r.positions[1:], r.found - 1
        r.digest = read_digest((p, b"") for p in r.positions)
        assert "read-wrong-result" in {v.code for v in check(history, log)}


def test_a_worker_stopped_by_an_exception_is_reported() -> None:
    history = History(errors=[(3, "StoreCorrupted: event x at position 4 is missing")])
    v = only(check(history, []), "worker-error")
    assert v.prop == 2 and "worker 3" in v.message and "position 4" in v.message
