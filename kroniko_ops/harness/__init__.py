"""The proof harness: concurrent multi-process workloads, kills and I/O faults, and a checker
for the six properties of DESIGN section 7.

- :mod:`.workload` draws what every worker will do (seeded RNG or Hypothesis), up front;
- :mod:`.worker` runs workers as processes behind a barrier and records a :mod:`.history`;
- :mod:`.checker` decides properties 1-5 from the history and the log, in one pass;
- :mod:`.verify` adds property 6 (recover + fsck after kills) and reads the store;
- :mod:`.crash` kills processes at random moments and at every file operation of a commit;
- :mod:`.faults` fails the Nth write/fsync/link/rename/open/unlink/truncate with EIO or ENOSPC;
- :mod:`.scenarios` and :mod:`.maint` are the appends and maintenance operations those two sweep;
- :mod:`.race` is the seed's race (N processes, one "first ItemAdded" winner per round);
- :mod:`.torture` is the long-running driver behind ``kroniko-ops torture``.

Workers run in a ``forkserver`` context by default (a clean interpreter, forked per worker with
the engine preloaded: milliseconds per process, which is what makes thousands of kills cheap);
``spawn`` works as well (the seed's race uses it).
"""

from __future__ import annotations

from .checker import LogEntry, Prior, Violation, check
from .history import History, OpRecord, ReadRecord
from .workload import EventPlan, Limits, OpPlan, Workload, generate

__all__ = [
    "EventPlan",
    "History",
    "Limits",
    "LogEntry",
    "OpPlan",
    "OpRecord",
    "Prior",
    "ReadRecord",
    "Violation",
    "Workload",
    "check",
    "generate",
]
