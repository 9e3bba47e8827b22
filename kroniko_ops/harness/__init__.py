"""The proof harness: concurrent multi-process workloads, kills and I/O faults, and a checker
for the properties of ``docs/HARNESS.md``.

- :mod:`.workload` draws what every worker will do (seeded RNG or Hypothesis), up front;
- :mod:`.worker` runs workers as processes behind a barrier and records a :mod:`.history`
  (appends, and reads with what they returned);
- :mod:`.checker` decides properties 1-5 from the history and the log, in one pass, and
  :mod:`.reads` property 7 (every read saw exactly a committed prefix), over the summary of
  :mod:`.logsummary`;
- :mod:`.verify` adds property 6 (recover + fsck after kills) and reads the store through the
  engine;
- :mod:`.mutants` are broken engines (``kroniko-ops torture --mutant NAME``) that the kill harness
  or the power-loss simulator (:mod:`.powerloss`) must catch;
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

from .checker import Violation, check
from .history import History, OpRecord, ReadRecord
from .logsummary import LogEntry, Prior
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
