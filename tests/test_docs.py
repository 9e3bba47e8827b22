"""The documentation runs: every shell block of README.md and docs/RUNBOOK.md is run as written,
in document order, so a doc can no longer drift from the tools.

The only change made to a block is where its paths point (README's "Development" says so):
``/srv``, ``/backup``, ``/backups``, ``/scratch``, ``/var/lib/node_exporter``, ``/var/log`` and
``/usr/local/bin`` are moved into a scratch folder, which holds beforehand two stores
(``/srv/app/events`` and ``/srv/events``: 1,500 events in batches of 10, so position 1000 ends
a batch) and a backup set of the first (``/backup/kroniko``, which the runbook's restore section
uses before its nightly job has run); the PostgreSQL URL of a block marked
``<!-- doc-test: postgres -->`` becomes a throwaway server's, and the bucket ``s3://acme-dr/`` of a
block marked ``<!-- doc-test: s3 -->`` a prefix of a throwaway S3 server's bucket (one prefix per
document, so its blocks see each other's objects), with that server's credentials in the
environment. How each kind of block runs:

- ``sh``/``bash``/``shell``: ``bash -e`` (stops at the first failing command); a block that
  starts with ``#!/bin/sh`` and names its path on the next line (``# /usr/local/bin/x``) is a
  script: it is installed there, executable, and run once;
- ``cron``: each entry's command, through ``sh -c``, as cron would;
- ``python``: ``python -c`` in the scratch folder.

``ini``, ``json``, ``yaml``, ``text`` and unlabelled blocks are not run; a block marked
``<!-- doc-test: skip (why) -->`` is not either (README's install-and-test block, which would run
this suite inside itself).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kroniko_ops import Event, EventStore
from kroniko_ops.objstore.seaweed import BUCKET
from kroniko_ops.ops.backup import backup_into, scan
from kroniko_ops.ops.backup import sets as sets_mod

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/RUNBOOK.md")
BLOCK = re.compile(r"(?:^<!-- doc-test: (?P<mark>[^\n]*?) -->\n)?^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.S | re.M)
PATHS = re.compile(r"(?<![\w./-])(/(?:srv|backups?|scratch|var/lib/node_exporter|var/log|usr/local/bin))(?![\w.-])")
PG_URL = "postgresql://app@db.internal/shop"
S3_BUCKET = "s3://acme-dr/"
RUN = ("sh", "bash", "shell", "cron", "python")
TIMEOUT = 300


def blocks(doc: str) -> list[tuple[int, str, str, str]]:
    """``(line, language, marker, body)`` of every fenced block of ``doc``."""
    text = (ROOT / doc).read_text()
    return [(text.count("\n", 0, m.start("body")), m.group("lang"), (m.group("mark") or "").strip(), m.group("body"))
            for m in BLOCK.finditer(text)]


def moved(text: str, sandbox: Path) -> str:
    """``text`` with its system paths moved into ``sandbox``."""
    return PATHS.sub(lambda m: f"{sandbox}{m.group(1)}", text)


def _fill(path: Path) -> None:
    with EventStore(str(path), durable=False, segment_bytes=1 << 16) as s:
        for b in range(150):
            s.append([Event("OrderPlaced", {"order": b, "line": k}, [f"order:{b}"]) for k in range(10)])


def _sandbox(tmp: Path) -> tuple[Path, dict[str, str]]:
    """The scratch folder standing in for the system paths, and the environment to run in."""
    box = tmp / "box"
    for d in ("srv/app", "backup", "backups", "scratch", "var/lib/node_exporter/textfile_collector", "var/log",
              "usr/local/bin", "work"):
        (box / d).mkdir(parents=True)
    _fill(box / "srv/app/events")
    _fill(box / "srv/events")
    backup_into(str(box / "srv/app/events"), str(box / "backup/kroniko"), durable=False)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(box / "usr/local/bin"), os.path.dirname(sys.executable), env["PATH"]])
    env.pop("PYTHONPATH", None)
    return box, env


def _run(argv: list[str], box: Path, env: dict[str, str], what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=box / "work", env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def run_block(lang: str, body: str, box: Path, env: dict[str, str], what: str) -> None:
    """Run one block as its kind says (see the module's docstring)."""
    body = moved(body, box)
    if lang == "python":
        _run([sys.executable, "-c", body], box, env, what)
        return
    if lang == "cron":
        for line in body.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                command = line.split(None, 6)[6]  # m h dom mon dow user command
                _run(["sh", "-c", command], box, env, f"{what}: {command}")
        return
    lines = body.splitlines()
    if lines[0].startswith("#!") and len(lines) > 1 and lines[1].startswith(f"# {box}/"):
        script = Path(lines[1][2:].strip())
        script.write_text(body)
        script.chmod(0o755)
        _run([str(script)], box, env, what)
        return
    _run(["bash", "-e", "-c", body], box, env, what)


@pytest.mark.parametrize("doc", DOCS)
def test_every_shell_block_runs_as_written(doc: str, tmp_path: Path, pg_server, s3_server) -> None:
    box, env = _sandbox(tmp_path)
    ran = 0
    prefix = f"s3://{BUCKET}/docs-{Path(doc).stem.lower()}-{os.getpid()}-{tmp_path.name}/"
    for n, (line, lang, mark, body) in enumerate(blocks(doc)):
        if lang not in RUN or mark.startswith("skip"):
            continue
        if mark.startswith("postgres"):
            body = body.replace(PG_URL, pg_server.create_database(f"docs_{Path(doc).stem.lower()}_{n}"))
        assert PG_URL not in body, f"{doc}:{line}: a block naming a PostgreSQL server needs <!-- doc-test: postgres -->"
        if mark.startswith("s3"):
            body = body.replace(S3_BUCKET, prefix)
            run_block(lang, body, box, {**env, **s3_server.env()}, f"{doc}:{line} ({lang} block)")
            ran += 1
            continue
        assert "s3://" not in body, f"{doc}:{line}: a block naming object storage needs <!-- doc-test: s3 -->"
        run_block(lang, body, box, env, f"{doc}:{line} ({lang} block)")
        ran += 1
    assert ran >= (10 if doc.endswith("RUNBOOK.md") else 3)


def test_skipped_blocks_say_why() -> None:
    for doc in DOCS:
        for line, _lang, mark, _body in blocks(doc):
            assert mark in ("",) or mark.startswith(("postgres ", "s3 ", "skip (")), f"{doc}:{line}: marker {mark!r}"


def script(name: str) -> str:
    """The runbook's script installed as /usr/local/bin/``name``."""
    for _line, _lang, _mark, body in blocks("docs/RUNBOOK.md"):
        if body.startswith("#!/bin/sh\n") and body.splitlines()[1] == f"# /usr/local/bin/{name}":
            return body
    raise AssertionError(f"docs/RUNBOOK.md has no script {name}")


def _install(box: Path, name: str) -> Path:
    path = box / "usr/local/bin" / name
    path.write_text(moved(script(name), box))
    path.chmod(0o755)
    return path


def _metric(prom: Path, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(prom.read_text()):
        for s in fam.samples:
            if s.name == f"kroniko_{name}" and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError((name, labels))


def test_the_runbooks_cron_jobs_keep_n_backups_fail_loudly_and_leave_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box, env = _sandbox(tmp_path)
    store, root = box / "srv/app/events", box / "backup/kroniko"
    prom = box / "var/lib/node_exporter/textfile_collector/kroniko.prom"
    shutil.rmtree(root)  # instead: five weeks of nightly backups before this night, a full one each week
    start = datetime.now(UTC) - timedelta(days=35)
    for day in range(35):
        monkeypatch.setattr(sets_mod.time, "time_ns", lambda d=day: int((start + timedelta(days=d)).timestamp() * 1e9))
        backup_into(str(store), str(root), full_every_days=7, durable=False)
    monkeypatch.undo()
    assert len(scan(str(root))) == 35
    nightly, weekly = _install(box, "kroniko-nightly-backup"), _install(box, "kroniko-weekly-verify")
    for _ in range(2):  # twice the same night: both runs succeed
        _run([str(nightly)], box, env, "the nightly job")
    left = scan(str(root))
    # --keep-last 3 --keep-daily 14 --keep-weekly 8: 14 days of dailies, their chains back to a
    # full backup, and one per week before that; the rest is gone, and all that is left restores.
    assert 14 <= len(left) <= 3 + 14 + 8 + 7 and len(left) < 38
    assert all(e.restorable for e in left) and all(set(e.chain) <= {x.name for x in left} for e in left)
    assert {e.when.date() for e in left} >= {(datetime.now(UTC) - timedelta(days=d)).date() for d in range(1, 13)}
    _run([str(weekly)], box, env, "the weekly job")
    for op, path in (("backup", store), ("verify-backup", root / "latest"), ("prune", root), ("fsck", store),
                     ("verify-backup", root)):
        assert _metric(prom, "last_run_success", operation=op, path=str(path)) == 1, op
    ok_at = _metric(prom, "last_success_timestamp_seconds", operation="verify-backup", path=str(root))
    # Bit rot in the full backup the newest chain builds on: the weekly job fails loudly and
    # names it; the nightly one fails too, before it prunes anything.
    victim = next(e for e in left if e.name == scan(str(root))[-1].chain[0])
    seg = sorted(Path(victim.path, "log").glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x20
    seg.write_bytes(bytes(data))
    proc = subprocess.run([str(weekly)], cwd=box / "work", env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 4 and victim.name in proc.stdout, proc.stdout + proc.stderr
    assert _metric(prom, "last_run_success", operation="verify-backup", path=str(root)) == 0
    assert _metric(prom, "last_success_timestamp_seconds", operation="verify-backup", path=str(root)) == ok_at
    assert _metric(prom, "problems", operation="verify-backup", path=str(root)) > 0
    before = {e.name for e in scan(str(root))}
    proc = subprocess.run([str(nightly)], cwd=box / "work", env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert before <= {e.name for e in scan(str(root))}  # nothing was pruned
    assert _metric(prom, "last_run_success", operation="verify-backup", path=str(root / "latest")) == 0


def test_every_metric_the_docs_name_is_one_the_tools_write() -> None:
    from kroniko_ops.metrics import FINDINGS, GAUGES

    known = {f"kroniko_{name}" for name in (*GAUGES, FINDINGS)}
    for doc in (*DOCS, "docs/FSCK.md"):
        named = set(re.findall(r"\bkroniko_[a-z_]+(?=[{\s`)=]|$)", (ROOT / doc).read_text(), re.M))
        named = {n for n in named if not n.startswith(("kroniko_ops", "kroniko_fsck_"))}
        assert named <= known, (doc, named - known)
