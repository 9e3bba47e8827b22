"""The full walk shared by worker processes: the log's files are cut into contiguous groups, each
walked by a forked child (hashing and JSON parsing are CPU-bound, and one process does about
100k records/s). A child keeps its rows (ids past the index checkpoint, references, damaged
positions) in its own scratch database and sends back its findings and digest sums; the parent
adds them up in position order, so the report is the same as a walk in one process.

Forked children inherit the parent's plan (each opens the log's files itself, a bounded number at
a time, see :mod:`.parts`) and its hash secret (the digests compare Python hashes); where
``fork`` is not available the walk runs in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from ...errors import KronikoError
from ...format import pack as packfmt
from ...format import record as recfmt
from ...progress import Meter
from ...report import Report
from .context import Context, StopChecking
from .coverage import Part
from .index_check import IndexCheck
from .parts import PACK
from .records import Walker
from .refs import RefCheck
from .spill import Spill

MIN_PER_JOB = 20_000  # positions below which a worker costs more than it saves
MAX_JOBS = 8
CHILD_TIMEOUT = 6 * 3600.0
POLL = 0.2  # seconds between looks at the workers' progress


def default_jobs() -> int:
    """Worker processes for the full walk: the CPUs this process may use, at most MAX_JOBS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_JOBS))


def _groups(parts: Sequence[Part], head: int, jobs: int | None) -> list[list[Part]]:
    """Contiguous groups of parts of about equal numbers of positions (as many as ``jobs``, or
    by default one per CPU for every MIN_PER_JOB positions). A dense pack bigger than a share is
    cut at block boundaries first (see :func:`_pieces`), so that one big pack is walked by every
    worker, not one."""
    parts = [p for p in parts if p.first <= head]
    total = sum(min(p.last, head) - p.first + 1 for p in parts)
    want = jobs or max(1, min(default_jobs(), total // MIN_PER_JOB))
    if want > 1:
        parts = [piece for p in parts for piece in _pieces(p, max(MIN_PER_JOB // 2, total // (2 * want)))]
    jobs = max(1, min(jobs, len(parts))) if jobs else max(1, min(default_jobs(), len(parts), total // MIN_PER_JOB))
    groups: list[list[Part]] = [[]]
    share, acc = total / jobs, 0
    for p in parts:
        if groups[-1] and acc >= share * len(groups) and len(groups) < jobs:
            groups.append([])
        groups[-1].append(p)
        acc += min(p.last, head) - p.first + 1
    return groups



def _pieces(part: Part, size: int) -> list[Part]:
    """``part`` cut into parts of about ``size`` positions at its block boundaries when it is a
    dense pack bigger than that (each piece ends on the chain its block table records, which the
    walk of its last block proves); any other part as it is."""
    if part.kind != PACK or part.last - part.first + 1 <= 2 * size:
        return [part]
    try:
        with packfmt.PackReader(part.path) as reader:
            if reader.version < 4 or (reader.first, reader.last) != (part.first, part.last):
                return [part]
            blocks = reader.blocks
    except (packfmt.PackError, OSError):
        return [part]  # the walk reports it
    out: list[Part] = []
    start = 0
    for k, b in enumerate(blocks):
        if b.last - blocks[start].first + 1 >= size or k == len(blocks) - 1:
            out.append(replace(part, first=blocks[start].first, last=b.last, last_chain=b.chain, reader=None, fd=-1))
            start = k + 1
    return out

def walk(sctx: Context, parts: Sequence[Part], head: int, index: IndexCheck, refs: RefCheck, spill: Spill,
         hashes: bool, jobs: int | None, meanwhile: Callable[[], None], meter: Meter) -> int:
    """Walk every record of ``parts`` up to ``head`` (findings into ``sctx``); return how many
    were checked. ``meanwhile`` is run in this process while the workers walk; ``meter``
    counts the events (and bytes) walked, the workers' too."""
    groups = _groups(parts, head, jobs)
    if len(groups) <= 1 or "fork" not in mp.get_all_start_methods():
        meanwhile()
        index.walk_trusted = index.trusted  # an index found unreadable meanwhile vouches for nothing
        walker = Walker(sctx, [index.sink, refs.sink], hashes=hashes, bad=spill.add_bad)
        walker.walk(meter.over(parts, _weight), head)
        return walker.checked
    spill.flush()
    fork = mp.get_context("fork")
    children = []
    done = fork.Value("q", 0)  # events the workers walked, for the meter
    chain = recfmt.GENESIS
    for i, group in enumerate(groups):
        start = (group[0].first, chain)
        recv, send = fork.Pipe(duplex=False)
        child = fork.Process(target=_child, args=(send, i, group, head, start, sctx, index, refs, hashes, spill,
                                                  done), daemon=True)
        child.start()
        send.close()
        children.append((child, recv))
        chain = group[-1].last_chain
    results = []
    try:
        meanwhile()
        for child, recv in children:
            waited = 0.0
            while not recv.poll(POLL):
                meter.to(done.value)
                waited += POLL
                if waited > CHILD_TIMEOUT:
                    raise KronikoError(f"an fsck worker (pid {child.pid}) gave no answer")
            results.append(recv.recv())
        meter.to(done.value)
    finally:
        for child, recv in children:
            recv.close()
            if len(results) < len(children) and child.is_alive():
                child.kill()  # the walk was cut short (Ctrl-C, SIGTERM, a worker failed): stop at once
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
                child.join(10)
    checked = 0
    for result in results:
        if result[0] != "ok":
            raise KronikoError(f"an fsck worker failed:\n{result[1]}")
        _, findings, sums, ref_count, n, path, stopped = result
        for code, severity, path_, message, position, action in findings:
            sctx.add(code, severity, path_, message, position, action)
        index.post_sum += sums[0]
        index.post_count += sums[1]
        index.ids_sum += sums[2]
        index.ids_count += sums[3]
        refs.count += ref_count
        spill.absorb(path)
        os.unlink(path)
        checked += n
        if stopped:
            raise StopChecking
    return checked


def _weight(part: Part) -> tuple[int, int]:
    """A part's events and bytes, for the meter."""
    try:
        size = os.path.getsize(part.path)
    except OSError:
        size = 0  # removed by a compaction meanwhile: read from its pack
    return part.last - part.first + 1, size


def _counted(group: list[Part], done: Any) -> Iterator[Part]:
    """A worker's parts, adding each one's events to the shared count once walked."""
    for part in group:
        yield part
        with done.get_lock():
            done.value += part.last - part.first + 1


def _child(send: Any, i: int, group: list[Part], head: int, start: tuple[int, bytes], sctx: Context,
           index: IndexCheck, refs: RefCheck, hashes: bool, spill: Spill, done: Any) -> None:
    """A worker: walk ``group`` into its own scratch database and report back."""
    try:
        cctx = Context(sctx.root, Report("fsck", sctx.root), sctx.full, sctx.max_errors)
        own = Spill(spill.folder, f"worker-{i}")
        own.begin()
        cindex = IndexCheck(cctx, own, index.full)
        cindex.trusted = cindex.walk_trusted = index.walk_trusted
        crefs = RefCheck(cctx, own, refs.fields)
        walker = Walker(cctx, [cindex.sink, crefs.sink], hashes=hashes, bad=own.add_bad)
        walker.next_pos, walker.chain = start
        stopped = False
        try:
            walker.walk(_counted(group, done), head)
        except StopChecking:
            stopped = True
        own.flush()
        own.con.execute("COMMIT")
        own.con.close()
        actions = {id(f): a for f, a in cctx.actions}
        findings = [(f.code, f.severity, f.path, f.message, f.position, actions.get(id(f)))
                    for f in cctx.report.findings]
        sums = (cindex.post_sum, cindex.post_count, cindex.ids_sum, cindex.ids_count)
        send.send(("ok", findings, sums, crefs.count, walker.checked, own.path, stopped))
    except BaseException:
        send.send(("error", traceback.format_exc()))
    finally:
        send.close()
