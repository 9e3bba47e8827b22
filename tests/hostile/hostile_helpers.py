"""Shared by the hostile-store tests (issue 13): a small store with every kind of file, the
CLI run in a child under a timeout (a hang fails the test), and a sentinel outside the store
whose bytes and mtime must never change."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kroniko_ops import Event, EventStore
from kroniko_ops.ops.backup import backup as run_backup
from kroniko_ops.ops.compact import compact as run_compact

TIMEOUT = 60.0
# Every command of the CLI that takes a store; {s} is the store, {d} a new destination folder,
# {b} a backup of the store, {e} a JSON-lines file of two events.
STORE_COMMANDS: dict[str, list[str]] = {
    "init": ["init", "{s}"],
    "append": ["append", "{s}", "-f", "{e}"],
    "read": ["read", "{s}"],
    "head": ["head", "{s}"],
    "stats": ["stats", "{s}", "--json"],
    "fsck": ["fsck", "{s}", "--json", "--lock-timeout", "5"],
    "fsck-repair": ["fsck", "{s}", "--repair", "--json", "--lock-timeout", "5"],
    "recover": ["recover", "{s}", "--json", "--lock-timeout", "5"],
    "reindex": ["reindex", "{s}", "--json", "--lock-timeout", "5"],
    "compact": ["compact", "{s}", "--json", "--prune-age", "0", "--lock-timeout", "5"],
    "backup": ["backup", "{s}", "{d}", "--json"],
}
# Commands whose only write is a destination they were given: they run on the sealed/backup side.
ALL_COMMANDS = [*STORE_COMMANDS, "verify-backup", "restore", "migrate", "torture"]

_CHILD = """
import resource, sys
limit_as, limit_files = int(sys.argv[1]), int(sys.argv[2])
if limit_as:
    resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
if limit_files:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit_files, limit_files))
from kroniko_ops.cli import cli
cli(sys.argv[3:], prog_name="kroniko-ops")
"""


@dataclass
class Result:
    """What one child run of the CLI did."""

    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout: {self.out[-2000:]}\nstderr: {self.err[-3000:]}"


def run_cli(args: list[str], timeout: float = TIMEOUT, memory: int = 0, files: int = 0,
            stdin: bytes | None = None) -> Result:
    """Run ``kroniko-ops ARGS`` in a child; ``memory`` caps its address space (bytes), ``files``
    its open descriptors. A child still running after ``timeout`` is killed and the test fails
    (``subprocess.run`` reaps it)."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(memory), str(files), *args], capture_output=True,
                          timeout=timeout, input=stdin if stdin is not None else b"")
    return Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


_MANY = """
import json, resource, signal, sys, traceback
limit_as, limit_files, per_call = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
if limit_as:
    resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
if limit_files:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit_files, limit_files))
from click.testing import CliRunner
from kroniko_ops.cli import cli

class Hang(BaseException):
    pass

def alarm(*_):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
out = []
for args in json.loads(sys.stdin.read()):
    signal.setitimer(signal.ITIMER_REAL, per_call)
    try:
        r = CliRunner().invoke(cli, args, catch_exceptions=True)
        signal.setitimer(signal.ITIMER_REAL, 0)
        exc = r.exc_info
        tb = "" if exc is None or isinstance(exc[1], SystemExit) else "Traceback\\n" + "".join(
            traceback.format_exception(*exc))
        out.append({"code": -1 if "Hang" in tb else r.exit_code, "out": r.stdout, "err": r.stderr + tb})
    except Hang:
        out.append({"code": -1, "out": "", "err": "HANG"})
    signal.setitimer(signal.ITIMER_REAL, 0)
sys.stdout.write(json.dumps(out))
"""


def run_many(calls: list[list[str]], per_call: float = 30.0, memory: int = 0, files: int = 0) -> list[Result]:
    """Run several CLI invocations in ONE child (cheaper than a child each) with the same limits;
    each call that outlives ``per_call`` seconds is interrupted and reported with code -1 (a hang),
    and the child as a whole is killed after the sum of those."""
    proc = subprocess.run([sys.executable, "-c", _MANY, str(memory), str(files), str(per_call)],
                          input=json.dumps(calls).encode(), capture_output=True,
                          timeout=per_call * len(calls) + 30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return [Result(d["code"], d["out"], d["err"]) for d in json.loads(proc.stdout)]


def no_traceback(r: Result) -> None:
    """A clear error, never a Python traceback."""
    assert "Traceback" not in r.err, str(r)


def make_store(path: str, events: int = 80) -> str:
    """A store with a pack, sealed segments with their ``.idx``, an active segment, an index
    generation and ``locks/synced``: every kind of file format 3 has."""
    with EventStore(path, durable=False, segment_bytes=4096) as s:
        for i in range(events // 2):
            s.append([Event("Thing", {"n": i, "pad": "x" * 40}, (f"k:{i % 5}",))])
    run_compact(path, prune_age=0, durable=False)
    with EventStore(path, durable=False) as s:
        for i in range(events - events // 2):
            s.append([Event("Other", {"n": i, "pad": "y" * 40}, ("k:1",))])
    return path


class Template:
    """One store (and its backup) built once per session, copied for each test."""

    def __init__(self, base: Path) -> None:
        self.store = make_store(str(base / "tpl-store"))
        self.backup = str(base / "tpl-backup")
        run_backup(self.store, self.backup)

    def copy(self, dest: Path) -> str:
        """A fresh copy of the store at ``dest``."""
        shutil.copytree(self.store, dest, symlinks=True)
        return str(dest)

    def copy_backup(self, dest: Path) -> str:
        """A fresh copy of the backup at ``dest``."""
        shutil.copytree(self.backup, dest, symlinks=True)
        return str(dest)


def events_file(folder: Path, count: int = 2) -> str:
    """A JSON-lines file of ``count`` events."""
    path = folder / "events.jsonl"
    with open(path, "w") as f:
        for i in range(count):
            f.write(json.dumps({"type": "Added", "data": {"i": i}, "tags": [f"t:{i % 7}"]}) + "\n")
    return str(path)


def args_for(name: str, store: str, dest: str, events: str) -> list[str]:
    """The CLI arguments of a STORE_COMMANDS entry."""
    return [a.format(s=store, d=dest, e=events) for a in STORE_COMMANDS[name]]


class Sentinel:
    """A file (and a folder with a file) outside the store: their bytes and mtimes must not change."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.file = folder / "outside.bin"
        self.file.write_bytes(b"precious bytes outside the store\n" * 10)
        self.dir = folder / "outside-dir"
        self.dir.mkdir(exist_ok=True)
        (self.dir / "keep.txt").write_bytes(b"keep me\n")
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        """Every file under the sentinel folder with its bytes and mtime, and the listing."""
        out: dict[str, tuple[bytes, int]] = {}
        for root, dirs, names in os.walk(self.file.parent):
            for n in names + dirs:
                p = os.path.join(root, n)
                st = os.lstat(p)
                data = open(p, "rb").read() if os.path.isfile(p) and not os.path.islink(p) else b""
                out[p] = (data, st.st_mtime_ns)
        return out

    def check(self, what: str = "") -> None:
        """Fail when anything outside changed."""
        assert self.snapshot() == self.before, f"{what}: something outside the store changed"


def listing(folder: str) -> list[tuple[str, bool]]:
    """Every path under ``folder`` (relative), with whether it is a folder."""
    out = []
    for root, dirs, names in os.walk(folder):
        for n in dirs + names:
            p = os.path.join(root, n)
            out.append((os.path.relpath(p, folder), os.path.isdir(p)))
    return sorted(out)


def segments(store: str) -> tuple[list[str], list[str], str]:
    """The sealed segment names, the ``.idx`` names and the active segment name of ``store``."""
    names = sorted(os.listdir(os.path.join(store, "log")))
    segs = [n for n in names if n.endswith(".seg")]
    return segs[:-1], [n for n in names if n.endswith(".idx")], segs[-1]


def packs(store: str) -> list[str]:
    """The pack names of ``store``."""
    return sorted(n for n in os.listdir(os.path.join(store, "packs")) if n.endswith(".pack"))


def index_db(store: str) -> str:
    """The current index database's name."""
    return sorted(n for n in os.listdir(os.path.join(store, "index")) if n.endswith(".sqlite3"))[-1]
