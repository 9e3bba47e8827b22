"""Checking one crash state: open the store as a fresh boot would (the engine re-verifies what was
never synced), then require every append acknowledged before the cut and every event a reader was
shown before it, at its position, a gap-free log, and a store that takes the next append."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from ...errors import KronikoError
from ...model import Event
from ...store import EventStore
from . import materialize
from .model import CrashState
from .run import STORE, Recorded


@dataclass
class Outcome:
    """What one checked state showed."""

    state: CrashState
    acked_checked: int = 0
    lost: int = 0
    problems: list[str] = field(default_factory=list)


def check(rec: Recorded, state: CrashState, scratch: str, full_fsck: bool = False) -> Outcome:
    """Build ``state`` under ``scratch`` and check it; ``full_fsck`` also runs ``fsck``."""
    dest = os.path.join(scratch, "state")
    shutil.rmtree(dest, ignore_errors=True)
    materialize.build(rec.model, state, rec.base, dest, [os.path.join(STORE, "index")])
    store_dir = os.path.join(dest, STORE)
    materialize.as_rebooted(store_dir)
    out = Outcome(state)
    cut = rec.model.cut_time(state.cut)
    try:
        with EventStore(store_dir, create=False) as store:
            found = {e.position: e.id for e in store.read()}
            head = store.head()
            if sorted(found) != list(range(1, head + 1)):
                out.problems.append(f"positions are not 1..{head}: {sorted(found)[:10]}...")
            for h in rec.history:
                if h["t1"] > cut:
                    continue
                if h["ev"] == "append":
                    first = h["last"] - len(h["ids"]) + 1
                    for pos, eid in zip(range(first, h["last"] + 1), h["ids"], strict=True):
                        out.acked_checked += 1
                        if found.get(pos) != eid:
                            out.lost += 1
                            out.problems.append(f"acknowledged {eid} at {pos} ({h['who']}) is "
                                                f"{'missing' if pos not in found else found[pos]}")
                elif h["ev"] == "read":
                    for pos, eid in h["events"]:
                        if found.get(pos) != eid:
                            out.lost += 1
                            out.problems.append(f"{eid} at {pos}, shown to a reader ({h['who']}), is "
                                                f"{'missing' if pos not in found else found[pos]}")
            last = store.append(Event("AfterTheCut", {}))
            if last != head + 1:
                out.problems.append(f"the first append after recovery got {last}, not {head + 1}")
    except KronikoError as exc:
        out.problems.append(f"the store does not open and recover: {type(exc).__name__}: {exc}")
    except Exception as exc:  # a crash of the engine on a state a power cut can leave is a finding too
        out.problems.append(f"the engine failed on this state: {type(exc).__name__}: {exc}")
    action = next((h for h in rec.history if h["ev"] == "action-start"), None)
    if action is not None and not out.problems:
        from .run import ACTIONS

        out.problems.extend(ACTIONS[action["name"]].verify(dest))
    if full_fsck and not out.problems:
        from ... import fsck

        report = fsck(store_dir)
        if report.exit_code:
            codes = sorted({f.code for f in report.findings if f.severity != "info"})
            out.problems.append(f"fsck after recovery exits {report.exit_code}: {codes}")
    return out
