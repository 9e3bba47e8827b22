"""Recording a process's changes to the disk: every call of :mod:`kroniko_ops.fileio` that changes
a file or a folder, as one JSON line with its real path, offset, bytes and times."""

from __future__ import annotations

import base64
import os
from typing import IO

import orjson

from ... import fileio


class Recorder:
    """Appends one JSON line per disk change to ``folder/ops-<pid>.jsonl``; install with
    :meth:`start` in the process being recorded (a child installs its own)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._out: IO[bytes] | None = None

    def start(self) -> None:
        """Begin recording in this process."""
        os.makedirs(self.folder, exist_ok=True)
        self._out = open(os.path.join(self.folder, f"ops-{os.getpid()}.jsonl"), "ab", buffering=0)
        fileio.set_recorder(self._write)

    def stop(self) -> None:
        """Stop recording in this process."""
        fileio.set_recorder(None)
        if self._out is not None:
            self._out.close()
            self._out = None

    def _write(self, op: dict) -> None:
        assert self._out is not None
        data = op.get("data")
        if data is not None:
            op = {**op, "data": base64.b64encode(data).decode("ascii")}
        # One unbuffered write per line: a SIGKILL cannot leave half a line that parses.
        self._out.write(orjson.dumps({**op, "pid": os.getpid()}) + b"\n")


def load(folder: str) -> list[dict]:
    """Every recorded change of every process, ordered by completion time."""
    ops: list[dict] = []
    for name in sorted(os.listdir(folder)):
        if not (name.startswith("ops-") and name.endswith(".jsonl")):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # the process was killed mid-line
                op = orjson.loads(line)
                if "data" in op:
                    op["data"] = base64.b64decode(op["data"])
                ops.append(op)
    ops.sort(key=lambda o: (o["t1"], o["t0"]))
    return ops
