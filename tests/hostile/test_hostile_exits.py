"""Class 3 and 6 of issue 13 (second half): exit codes and messages that must not mislead.

* Ctrl-C: a real SIGINT sent from another process to a long fsck, compact, backup, reindex or
  restore ends it with exit 130 and ``interrupted``, never 0 or fsck's 1 ("all repaired"), and
  leaves the store checking clean.
* A 10,000-level nested JSON line on ``append``: exit 2, nothing written.
* A file name that is not UTF-8 inside a store: every command reports it (escaped, JSON-safe)
  or ignores it, never a traceback.
* A batch whose preparation fails before the log write (ENOSPC, EACCES, EMFILE): the error
  says nothing was written, never "may or may not be committed".
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from hostile_helpers import STORE_COMMANDS, Template, args_for, events_file, no_traceback, run_many
from interrupt_helpers import fail_at, interrupt_at, temp_names, trace_points

from kroniko_ops import EventStore
from kroniko_ops.legacy.synth import write_shop_store

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

LONG_COMMANDS = {
    "fsck": ["fsck", "{s}", "--json"],
    "fsck-repair": ["fsck", "{s}", "--repair", "--json"],
    "compact": ["compact", "{s}", "--json", "--prune-age", "0"],
    "backup": ["backup", "{s}", "{d}", "--json"],
    "reindex": ["reindex", "{s}", "--json"],
    "restore": ["restore", "{b}", "{d}", "--json"],
}


def _tree(folder: str) -> dict[str, bytes]:
    out = {}
    for root, _dirs, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, folder)] = open(p, "rb").read() if not os.path.islink(p) else b"link"
    return out


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, EXIT_INTERRUPTED, "interrupted"),
                                             (signal.SIGTERM, EXIT_TERMINATED, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("name", list(LONG_COMMANDS))
def test_a_signal_mid_run_exits_130_or_143_and_leaves_the_store_clean(template: Template, tmp_path: Path, name: str,
                                                                      sig: int, code: int, word: str) -> None:
    # SIGTERM (systemd, timeout) is handled like Ctrl-C: clean up, say so, exit 143.
    backup = template.copy_backup(tmp_path / "backup")

    def args(tag: str) -> tuple[list[str], str, str]:
        store, dest = template.copy(tmp_path / tag / "store"), str(tmp_path / tag / "dest")
        return [a.format(s=store, d=dest, b=backup) for a in LONG_COMMANDS[name]], store, dest

    ops, full = trace_points(args("counted")[0])
    assert full.code in (0, 1), str(full)
    argv, store, dest = args("interrupted")
    stopped = interrupt_at(argv, len(ops) // 2, sig)
    no_traceback(stopped)
    assert stopped.code == code, f"{name} after a {signal.Signals(sig).name} half-way:\n{stopped}"
    assert word in stopped.err
    assert temp_names(store) == [] and temp_names(dest) == [], f"{name} left temp files"
    # What was interrupted is the store's business no more: it checks clean, and a restore
    # or backup that was cut short left nothing under the destination's name.
    calls = [["fsck", store, "--json"]]
    [fsck] = run_many(calls)
    assert fsck.code == 0, f"fsck after {name} was interrupted:\n{fsck}"
    assert not os.path.lexists(dest) or name not in ("backup", "restore"), f"{name} published a cut-short {dest}"


@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}")])
def test_deeply_nested_json_line_is_refused_with_exit_2(tmp_path: Path, opener: str, closer: str) -> None:
    store = str(tmp_path / "store")
    EventStore(store, durable=False).close()  # an empty store
    before = _tree(store)
    line = tmp_path / "deep.jsonl"
    line.write_text('{"type":"A","data":' + opener * 10_000 + "1" * (opener == '{"a":') + closer * 10_000 + "}\n")
    [r] = run_many([["append", store, "-f", str(line)]])
    no_traceback(r)
    assert r.code == 2, str(r)
    assert "nested too deeply" in r.err
    assert _tree(store) == before, "a refused append wrote something"


BAD_NAME = b"\xff\xfe"
PLACES = ["segments", "log", "packs", "index", "locks", "lost-found", "lost-found-entry", "root"]


def _plant(store: str, where: str) -> None:
    root = os.fsencode(store)
    if where == "root":
        folder = root
    elif where == "lost-found-entry":
        folder = os.path.join(root, b"lost-found", b"20260101T000000Z-1-abcdef-tail" + BAD_NAME)
    else:
        folder = os.path.join(root, os.fsencode(where))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, BAD_NAME), "wb") as f:
        f.write(b"not a store file\n")


@pytest.mark.parametrize("where", PLACES)
def test_non_utf8_names_are_reported_escaped_never_a_traceback(template: Template, tmp_path: Path,
                                                                where: str) -> None:
    events = events_file(tmp_path)
    names = [n for n in STORE_COMMANDS if n != "init"]
    calls = []
    for name in names:
        store = template.copy(tmp_path / name / "store")
        _plant(store, where)
        calls.append(args_for(name, store, str(tmp_path / name / "dest"), events))
    for name, r in zip(names, run_many(calls), strict=True):
        assert r.code != -1, f"{name} hung with a non-UTF-8 name in {where}"
        no_traceback(r)
        assert r.code in (0, 1, 4), f"{name} with a non-UTF-8 name in {where}:\n{r}"
        if "--json" in STORE_COMMANDS[name]:
            docs = [json.loads(line) for line in r.out.splitlines() if line.strip()]  # every line is JSON
            if name in ("fsck", "fsck-repair") and where not in ("lost-found", "lost-found-entry"):
                # A folder the layout does not know is named itself; a name it holds, escaped.
                named = "segments" if where == "segments" else "\\xff\\xfe"
                paths = [d.get("path", "") for d in docs if d.get("kind") == "finding"]
                assert any(named in p for p in paths), f"{name} did not name the file in {where}:\n{r}"


def test_non_utf8_name_in_text_output(template: Template, tmp_path: Path) -> None:
    store = template.copy(tmp_path / "store")
    _plant(store, "log")
    [r] = run_many([["fsck", store]])
    no_traceback(r)
    assert r.code == 4 and "\\xff\\xfe" in r.out, str(r)


def test_non_utf8_names_in_a_backup_and_a_legacy_store(template: Template, tmp_path: Path) -> None:
    """The commands whose argument is a backup or a Ruby store report such names escaped too."""
    backup = template.copy_backup(tmp_path / "backup")
    for where in (b"", b"log", b"packs"):
        with open(os.path.join(os.fsencode(backup), where, BAD_NAME), "wb") as f:
            f.write(b"x")
    legacy = str(tmp_path / "legacy")
    write_shop_store(legacy, 30, seed=5)
    with open(os.path.join(os.fsencode(legacy), b"events", BAD_NAME + b".json"), "wb") as f:
        f.write(b"{}")
    calls = [["verify-backup", backup, "--json"], ["verify-backup", backup],
             ["restore", backup, str(tmp_path / "restored"), "--json"],
             ["migrate", legacy, str(tmp_path / "migrated"), "--json"], ["fsck", legacy, "--json"]]
    for argv, r in zip(calls, run_many(calls), strict=True):
        no_traceback(r)
        shown = r.out
        if "--json" in argv:  # every line is JSON; the name is in a finding's path or message
            docs = [json.loads(line) for line in r.out.splitlines() if line.strip()]
            shown = " ".join(f"{d.get('path')} {d.get('message')}" for d in docs if d.get("kind") == "finding")
        assert "\\xff\\xfe" in shown, f"{argv} did not name the file escaped:\n{r}"
    assert not os.path.lexists(tmp_path / "restored"), "restore published a backup that does not verify"


# -- class 6: a batch that fails before anything is written -------------------------------------

SAYS_NOTHING = ("nothing was written", "nothing was committed", "nothing new was committed")
@pytest.mark.parametrize("errname", ["ENOSPC", "EACCES", "EMFILE"])
def test_failure_before_the_log_write_says_nothing_was_written(template: Template, tmp_path: Path,
                                                               errname: str) -> None:
    """Every disk-changing call an append makes before it writes the batch into the log fails
    in turn (and, for EMFILE, every file it opens to read): each time the command exits
    non-zero, says nothing was written (never 'may or may not be committed'), and the store's
    head is what it was."""
    events = events_file(tmp_path, count=40)
    ops, full = trace_points(["append", template.copy(tmp_path / "counted"), "-f", events])
    assert full.code == 0, str(full)
    batch_write = ops.index("write active segment") + 1
    points = [n for n in range(1, batch_write + 1) if errname == "EMFILE" or not ops[n - 1].startswith("read ")]
    stores = [(nth, template.copy(tmp_path / f"at-{nth}")) for nth in points]
    results = [fail_at(["append", store, "-f", events], nth, errname) for nth, store in stores]
    heads = run_many([["head", store] for _nth, store in stores])
    head_before = run_many([["head", template.store]])[0].out
    wrong = []
    for (nth, _store), r, head in zip(stores, results, heads, strict=True):
        what = f"{errname} at point {nth} ({ops[nth - 1].split(' ')[0]} {os.path.basename(ops[nth - 1])})"
        no_traceback(r)
        assert r.code not in (0, -1), f"{what}:\n{r}"
        assert head.out == head_before, f"{what}: the head moved"
        message = r.err.lower()
        if "may or may not" in message or not any(s in message for s in SAYS_NOTHING):
            wrong.append(f"{what}: exit {r.code}: {r.err.strip()[:300]}")
    assert not wrong, "\n".join(wrong)


def test_append_of_a_refused_batch_leaves_no_new_folder(tmp_path: Path) -> None:
    """append never creates a store: a missing folder stays missing (exit 8, says so)."""
    events = events_file(tmp_path)
    missing = str(tmp_path / "missing")
    [r] = run_many([["append", missing, "-f", events]])
    no_traceback(r)
    assert r.code == 8 and "no store" in r.err, str(r)
    assert not os.path.lexists(missing)
