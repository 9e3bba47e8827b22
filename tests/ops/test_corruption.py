"""The corruption corpus: each damage kind a crash, a bad disk or a careless person can cause.

Each case builds a store through the public API, damages it, and asserts the exact finding code
and exit code; then runs ``fsck --repair`` and asserts that what may be repaired is (fsck clean
afterwards, appends work again), that what may not (damage to committed data) is left as it was
and still reported, and that every committed event the damage did not destroy is still readable
at its position.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from fsck_helpers import (
    LONG_TAG,
    assert_readable,
    build,
    codes,
    dead_pid,
    flip,
    line,
    log_path,
    make_old,
    next_line,
    rewrite_line,
    write,
)

from kroniko_ops import Event, EventStore, fsck
from kroniko_ops.index import BOOT_ID, Checkpoint, encode_name, id_bucket
from kroniko_ops.log import LINE_LEN

HEAD = 12
ALL = tuple(range(1, HEAD + 1))


def event(store: str, pos: int) -> Path:
    return Path(store, "events", f"ev-{pos - 1:04d}.json")


def index_file(store: str, kind: str, name: str) -> Path:
    return Path(store, "index", kind, encode_name(name) + ".pos")


def _edit_id(store: str) -> None:
    doc = orjson.loads(event(store, 3).read_bytes())
    doc["id"] = "someone-else"
    write(event(store, 3), orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))


def _replace_by_folder(store: str) -> None:
    os.unlink(event(store, 3))
    os.mkdir(event(store, 3))


def _truncate_log(store: str) -> None:
    os.truncate(log_path(store), log_path(store).stat().st_size - 100)


def _append(store: str, data: bytes) -> None:
    with open(log_path(store), "ab") as f:
        f.write(data)


def _uncommitted(store: str) -> None:
    """What a writer that died before writing its batch's last line leaves: event files and
    whole lines without a commit mark."""
    lines = b""
    for k in range(2):
        raw = orjson.dumps({"data": k, "id": f"lost-{k}", "metadata": None, "tags": [], "type": "Lost"},
                           option=orjson.OPT_SORT_KEYS)
        Path(store, "events", f"lost-{k}.json").write_bytes(raw)
        _append(store, lines := next_line(store, f"lost-{k}", hashlib.sha256(raw).hexdigest(), False))
    assert lines


def _duplicate_line(store: str) -> None:
    data = log_path(store).read_bytes()
    third = data[2 * LINE_LEN : 3 * LINE_LEN]
    log_path(store).write_bytes(data[: 3 * LINE_LEN] + third + data[3 * LINE_LEN :])


def _insert_bytes(store: str) -> None:
    data = log_path(store).read_bytes()
    at = 4 * LINE_LEN + 30  # inside line 5; lines 1-4 stay committed
    log_path(store).write_bytes(data[:at] + b"12345" + data[at:])


def _reuse_id(store: str) -> None:
    first = line(store, 1)
    _append(store, next_line(store, first.event_id, first.event_hash, True))


def _index_lines(path: Path, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(edit(lines)))


def _extra_line(store: str) -> None:
    # Position 2 is a "Paid" event; list it among the "Ordered" ones, in order.
    _index_lines(index_file(store, "types", "Ordered"), lambda ls: sorted([*ls, b"%012d\n" % 2]))


def _unsafe_name(store: str) -> None:
    Path(store, "index", "tags", "a b.pos").write_bytes(b"000000000001\n")


def _symlink(store: str) -> None:
    os.symlink("/etc/hostname", Path(store, "index", "tags", "evil.pos"))


def _long_name_lost(store: str) -> None:
    stem = encode_name(LONG_TAG)
    os.unlink(Path(store, "index", "tags", stem + ".name"))


def _stale_reindex(store: str) -> None:
    folder = Path(store, f".tmp-{dead_pid()}-0000-reindex")
    folder.mkdir()
    (folder / "CHECKPOINT").write_bytes(b"half built")


def _dangling_old(store: str) -> None:
    raw = orjson.dumps({"data": 1, "id": "ev-9999", "metadata": None, "tags": [], "type": "Orphan"},
                       option=orjson.OPT_SORT_KEYS)
    path = Path(store, "events", "ev-9999.json")
    path.write_bytes(raw)
    make_old(path)


@dataclass
class Case:
    """One damage kind: what it does, the finding it must produce, and what repair may do."""

    damage: Callable[[str], None]
    code: str
    repairable: bool
    destroyed: tuple[int, ...] = ()
    quick: bool = True  # whether --quick finds it too


CASES: dict[str, Case] = {
    # events
    "event-byte-flipped": Case(lambda s: flip(event(s, 3), 12), "event-hash-mismatch", False, (3,), quick=False),
    "event-emptied": Case(lambda s: write(event(s, 3), b""), "event-unreadable", False, (3,), quick=False),
    "event-deleted": Case(lambda s: os.unlink(event(s, 3)), "missing-event", False, (3,)),
    "event-id-edited": Case(_edit_id, "event-id-mismatch", False, (3,), quick=False),
    "event-replaced-by-folder": Case(_replace_by_folder, "event-unreadable", False, (3,), quick=False),
    # the log's tail: a dead writer's leftovers, cut by recovery
    "log-truncated-mid-line": Case(_truncate_log, "log-torn-tail", True, (11, 12)),
    "log-garbage-appended": Case(lambda s: _append(s, b"\x00\x00garbage\nmore"), "log-torn-tail", True),
    "log-uncommitted-lines": Case(_uncommitted, "log-uncommitted-tail", True),
    # the log's committed lines: never repaired
    "log-line-flipped-mid": Case(lambda s: flip(log_path(s), LINE_LEN + 50), "log-bad-line", False, (2,)),
    "log-line-duplicated": Case(_duplicate_line, "log-position-mismatch", False, ALL[3:]),
    "log-position-edited": Case(lambda s: rewrite_line(s, 2, position=9), "log-position-mismatch", False, (2,)),
    "log-chain-edited": Case(lambda s: rewrite_line(s, 3, chain="ab" * 32), "chain-mismatch", False, quick=False),
    "log-hash-edited": Case(lambda s: rewrite_line(s, 3, event_hash="cd" * 32), "event-hash-mismatch", False, (3,),
                            quick=False),
    "log-id-reused": Case(_reuse_id, "log-duplicate-id", False),
    "log-last-line-flipped": Case(lambda s: flip(log_path(s), 11 * LINE_LEN + 100), "log-bad-line", False, (11, 12)),
    "log-bytes-inserted": Case(_insert_bytes, "log-bad-line", False, ALL[4:]),
    "log-deleted": Case(lambda s: os.unlink(log_path(s)), "log-missing", False, ALL),
    # FORMAT
    "format-missing": Case(lambda s: os.unlink(Path(s, "FORMAT")), "format-missing", True),
    "format-garbage": Case(lambda s: write(Path(s, "FORMAT"), b"\x00\x01garbage"), "format-unknown", True),
    "format-newer": Case(lambda s: write(Path(s, "FORMAT"), b"kroniko-ops format 3\n"), "format-unknown", False,
                         ALL),
    # the index: derived, rebuilt by repair
    "index-type-file-deleted": Case(lambda s: os.unlink(index_file(s, "types", "Paid")), "index-missing-entry",
                                    True, quick=False),
    "index-id-bucket-deleted": Case(lambda s: os.unlink(Path(s, "index", "ids", id_bucket("ev-0003"))),
                                    "index-missing-entry", True, quick=False),
    "index-lines-reordered": Case(lambda s: _index_lines(index_file(s, "types", "Ordered"),
                                                         lambda ls: [ls[1], ls[0], *ls[2:]]),
                                  "index-extra-entry", True, quick=False),
    "index-extra-line": Case(_extra_line, "index-extra-entry", True, quick=False),
    "index-line-duplicated": Case(lambda s: _index_lines(index_file(s, "tags", "vip"), lambda ls: [ls[0], *ls]),
                                  "index-extra-entry", True, quick=False),
    "index-line-garbled": Case(lambda s: _index_lines(index_file(s, "tags", "cart:1"),
                                                      lambda ls: [b"garbage-line\n", *ls[1:]]),
                               "index-extra-entry", True, quick=False),
    "index-unsafe-name": Case(_unsafe_name, "index-unsafe-name", True, quick=False),
    "index-symlink": Case(_symlink, "index-unsafe-name", True, quick=False),
    "index-long-name-lost": Case(_long_name_lost, "index-unsafe-name", True, quick=False),
    "index-stray-file": Case(lambda s: Path(s, "index", "notes.txt").write_text("x"), "stray-file", True),
    "checkpoint-garbage": Case(lambda s: write(Path(s, "index", "CHECKPOINT"), b"garbage"), "index-checkpoint-bad",
                               True),
    "checkpoint-ahead": Case(lambda s: write(Path(s, "index", "CHECKPOINT"), Checkpoint(99, 99, BOOT_ID).render()),
                             "index-checkpoint-ahead", True),
    # leftovers and strangers
    "stale-temp-event": Case(lambda s: Path(s, "events", f".tmp-{dead_pid()}-abcdef").write_bytes(b"{"),
                             "stale-temp-file", True),
    "stale-reindex-folder": Case(_stale_reindex, "stale-temp-file", True),
    "stray-file-top": Case(lambda s: Path(s, "notes.txt").write_text("mine"), "stray-file", True),
    "stray-file-events": Case(lambda s: Path(s, "events", "README").write_text("x"), "stray-file", True),
    "dangling-event-old": Case(_dangling_old, "dangling-event", True),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[int, Event]]:
    path = str(tmp_path_factory.mktemp("template") / "store")
    return path, build(path)


def _copy(template: str, dest: Path) -> str:
    import shutil

    target = str(dest / "store")
    shutil.copytree(template, target, symlinks=True)
    return target


def test_the_corpus_has_at_least_25_damage_kinds() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", sorted(CASES))
def test_damage_is_found_and_repaired_where_allowed(name: str, template: tuple[str, dict[int, Event]],
                                                    tmp_path: Path) -> None:
    case = CASES[name]
    base, expected = template
    store = _copy(base, tmp_path)
    assert fsck(store).exit_code == 0
    case.damage(store)
    log_before = log_path(store).read_bytes() if log_path(store).exists() else None

    report = fsck(store)
    assert case.code in codes(report), [f.as_json() for f in report.findings]
    assert report.exit_code == 4
    if case.quick:
        assert case.code in codes(fsck(store, "quick"))

    repaired = fsck(store, repair=True)
    if case.repairable:
        assert repaired.exit_code == 1, [f.as_json() for f in repaired.findings]
        assert all(f.repaired for f in repaired.findings if f.code == case.code and f.severity != "info")
        assert fsck(store).exit_code == 0
        assert fsck(store, "quick").exit_code == 0
    else:
        assert repaired.exit_code & 4
        assert case.code in codes(repaired)
        if case.code.startswith("log-") or case.code == "chain-mismatch":
            # Damage to committed lines is never cut or rewritten.
            assert (log_path(store).read_bytes() if log_path(store).exists() else None) == log_before
    if set(case.destroyed) != set(ALL):
        assert_readable(store, expected, case.destroyed)
    if case.repairable:
        with EventStore(store, create=False) as s:
            s.append(Event("AfterRepair", {}))
        assert fsck(store).exit_code == 0


def test_a_young_dangling_event_is_only_info(template: tuple[str, dict[int, Event]], tmp_path: Path) -> None:
    """An event file no line names, written moments ago, may belong to an append in progress."""
    store = _copy(template[0], tmp_path)
    raw = orjson.dumps({"data": 1, "id": "ev-new", "metadata": None, "tags": [], "type": "T"},
                       option=orjson.OPT_SORT_KEYS)
    Path(store, "events", "ev-new.json").write_bytes(raw)
    report = fsck(store)
    assert report.exit_code == 0
    assert [f.severity for f in report.findings if f.code == "dangling-event"] == ["info"]
    assert fsck(store, repair=True).exit_code == 0
    assert Path(store, "events", "ev-new.json").exists()


def test_dangling_events_are_kept_while_the_log_is_damaged(template: tuple[str, dict[int, Event]],
                                                           tmp_path: Path) -> None:
    """A damaged log line may be the one that names a 'dangling' event: repair leaves it alone."""
    store = _copy(template[0], tmp_path)
    flip(log_path(store), LINE_LEN + 50)
    make_old(event(store, 2))
    report = fsck(store, repair=True)
    assert report.exit_code & 4
    assert event(store, 2).exists()


def test_a_missing_index_folder_is_not_damage_and_recover_rebuilds_it(
        template: tuple[str, dict[int, Event]], tmp_path: Path) -> None:
    import shutil

    from kroniko_ops import recover

    store = _copy(template[0], tmp_path)
    shutil.rmtree(Path(store, "index"))
    assert fsck(store).exit_code == 0
    report = recover(store)
    assert report.exit_code == 0
    assert fsck(store).exit_code == 0
    assert Path(store, "index", "CHECKPOINT").exists()
    assert_readable(store, template[1])
