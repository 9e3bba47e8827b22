"""``fsck --repair --accept-loss`` (issue 16 item 7): a disk that lost acknowledged records at the
end of the log used to leave a stuck store (``fsck --repair``, ``recover`` and ``append`` all
exit 4, the only advice "restore from a backup"), with messages that contradicted each other.
Now ``--repair`` refuses and names the flag and the positions at stake; with the flag every
record that verifies is kept, the rest copied into lost-found/, the synced position reset, the
index rebuilt, each lost position reported, exit 1; and the messages say what is true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fsck_store_helpers import build, flip, lose_last_bytes, seg_path, segments

from kroniko_ops import Event, EventStore, InvalidArgument, fsck

CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]


def _tree(root: str) -> dict[str, bytes]:
    """The store's data: the log, packs, lost-found/, FORMAT and the synced position (the index
    is derived, and a check may open its WAL; lock files are created on first use)."""
    out = {}
    for folder, _dirs, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(folder, n), root)
            if rel.split(os.sep)[0] in ("log", "packs", "lost-found") or rel in ("FORMAT", "locks/synced"):
                out[rel] = Path(root, rel).read_bytes()
    return out


def _store_with_a_cut_tail(path: str, cut: int = 7, truncate: bool = False) -> tuple[int, bytes]:
    """A durable store of 5 batches of 2 events in one segment whose records' last ``cut`` bytes
    the disk lost (zeros again in the preallocated segment, or a file cut short with
    ``truncate``); the synced position still names position 10. Returns the head and the
    records as they were."""
    with EventStore(path) as store:
        for b in range(5):
            store.append([Event("T", {"b": b, "k": k}, ["t"]) for k in range(2)])
        assert store.head() == 10
    seg = seg_path(path, segments(path)[-1])
    if truncate:
        data = seg.read_bytes().rstrip(b"\0")
        os.truncate(seg, len(data) - cut)
        return 10, data
    return 10, lose_last_bytes(seg, cut)


def _codes(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.code for f in report.findings}


def test_repair_alone_refuses_and_names_the_flag_and_the_positions(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    _store_with_a_cut_tail(path)
    before = _tree(path)
    report = fsck(path, repair=True)
    assert report.exit_code == 4
    [need] = [f for f in report.findings if f.code == "accept-loss-needed"]
    assert "--accept-loss" in need.message and "9..10" in need.message
    [ahead] = [f for f in report.findings if f.code == "synced-ahead"]
    # What is true: the log ends at 8 (not "0"), and 9..10 were acknowledged.
    assert "end of the log (8)" in ahead.message and "9..10" in ahead.message
    assert "no append was acknowledged" not in " ".join(f.message for f in report.findings)
    assert _tree(path) == before, "a refused repair changed the store"


@pytest.mark.parametrize("truncate", [False, True], ids=["zeroed", "file-cut-short"])
def test_accept_loss_keeps_what_verifies_and_unsticks_the_store(tmp_path: Path, truncate: bool) -> None:
    path = str(tmp_path / "s")
    _, original = _store_with_a_cut_tail(path, truncate=truncate)
    size = seg_path(path, segments(path)[-1]).stat().st_size
    report = fsck(path, repair=True, accept_loss=True)
    assert report.exit_code == 1, report.findings
    lost = sorted(f.position for f in report.findings if f.code == "acknowledged-lost")
    assert lost == [9, 10] and all(f.repaired for f in report.findings if f.severity != "info")
    assert fsck(path).exit_code == 0
    # Nothing deleted: the bytes after position 8 are in lost-found/, as they were on disk; the
    # segment keeps its size (the preallocated zeros), zeros where the cut bytes were.
    seg = seg_path(path, segments(path)[-1]).read_bytes()
    kept = seg.rstrip(b"\0")
    assert len(seg) == size and not any(seg[len(kept):])
    [folder] = [d for d in os.listdir(Path(path, "lost-found")) if d.endswith("accepted-loss")]
    tail = next(Path(path, "lost-found", folder).glob("*.tail")).read_bytes()
    assert kept + tail == original[:len(original) - 7]
    with EventStore(path) as store:
        assert store.head() == 8
        assert [e.position for e in store.read()] == list(range(1, 9))
        assert store.append(Event("After", 1, ["t"])) == 9
        assert [e.type for e in store.read(start=9)] == ["After"]
    assert fsck(path).exit_code == 0


def test_the_command_line_exits_1_then_0(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    _store_with_a_cut_tail(path)
    for args in (["recover", path], ["fsck", path, "--repair"]):
        assert subprocess.run([*CLI, *args], capture_output=True, timeout=120).returncode == 4
    done = subprocess.run([*CLI, "fsck", path, "--repair", "--accept-loss"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "acknowledged-lost" in done.stdout
    assert subprocess.run([*CLI, "fsck", path], capture_output=True, timeout=120).returncode == 0
    done = subprocess.run([*CLI, "append", path], input=b'{"type":"A","data":1}\n', capture_output=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == b"9"


def test_accept_loss_needs_repair(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    _store_with_a_cut_tail(path)
    with pytest.raises(InvalidArgument):
        fsck(path, accept_loss=True)
    done = subprocess.run([*CLI, "fsck", path, "--accept-loss"], capture_output=True, timeout=120)
    assert done.returncode == 2


def test_damage_elsewhere_is_never_salvaged(tmp_path: Path) -> None:
    # A sealed segment damaged as well: that needs a backup, and --accept-loss cuts nothing.
    path = str(tmp_path / "s")
    build(path, batches=12, durable=True)
    flip(seg_path(path, segments(path)[0]), 300)
    lose_last_bytes(seg_path(path, segments(path)[-1]), 7)
    before = _tree(path)
    report = fsck(path, repair=True, accept_loss=True)
    assert report.exit_code == 4
    assert "accept-loss-refused" in _codes(report) and "acknowledged-lost" not in _codes(report)
    assert _tree(path) == before


@pytest.mark.parametrize("truncate", [False, True], ids=["zeroed", "file-cut-short"])
def test_head_never_names_a_position_the_log_lost(tmp_path: Path, truncate: bool) -> None:
    # The synced position says 10, the log holds 8: `head` refuses (exit 4, naming the way out)
    # rather than print a position no read returns; once the loss is accepted it prints 8.
    path = str(tmp_path / "s")
    _store_with_a_cut_tail(path, truncate=truncate)
    done = subprocess.run([*CLI, "head", path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and done.stdout == ""
    assert "fsck" in done.stderr and "--accept-loss" in done.stderr
    assert subprocess.run([*CLI, "fsck", path, "--repair", "--accept-loss"], capture_output=True,
                          timeout=120).returncode == 1
    done = subprocess.run([*CLI, "head", path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "8"


def test_a_handle_open_across_the_cut_appends_after_what_was_kept(tmp_path: Path) -> None:
    # A server keeps its handle open while an operator salvages the store: the tail that handle
    # remembers (position 10) no longer exists. Its next append must follow position 8, not
    # land past the zeros, and a retry of a lost event's id must write it again.
    path = str(tmp_path / "s")
    with EventStore(path) as server:
        for b in range(5):
            server.append([Event("T", {"b": b, "k": k}, ["t"], None, f"t-{b}-{k}") for k in range(2)])
        lose_last_bytes(seg_path(path, segments(path)[-1]), 7)
        assert fsck(path, repair=True, accept_loss=True).exit_code == 1
        assert server.append(Event("T", {"b": 4, "k": 1}, ["t"], None, "t-4-1")) == 9
        assert server.append(Event("After", 1, ["t"])) == 10
        assert [e.position for e in server.read()] == list(range(1, 11))
        assert next(iter(server.read(start=9))).id == "t-4-1"
    report = fsck(path)
    assert report.exit_code == 0, report.findings


@pytest.mark.parametrize("pad", [0, 100, 400])
def test_a_reader_open_across_the_cut_reads_the_log_as_it_is_now(tmp_path: Path, pad: int) -> None:
    # The reader learned the active segment's offsets before the repair cut the last record;
    # new records then took its bytes, at other offsets. It must read them as they are now.
    path = str(tmp_path / "s")
    with EventStore(path) as writer:
        for b in range(6):
            writer.append([Event("T", {"b": b, "pad": "x" * 100}, ["t"], id=f"old-{b}")])
    with EventStore(path) as reader:
        assert len(list(reader.read())) == 6
        lose_last_bytes(seg_path(path, segments(path)[-1]), 7)
        assert fsck(path, repair=True, accept_loss=True).exit_code == 1
        with EventStore(path) as writer:
            writer.append([Event("N", {"pad": "y" * pad}, ["t"], id="new-a"),
                           Event("N", {"pad": "z"}, ["t"], id="new-b")])
        want = [f"old-{b}" for b in range(5)] + ["new-a", "new-b"]
        assert [e.id for e in reader.read()] == want
        assert [e.position for e in reader.read()] == list(range(1, 8))
        assert [e.id for e in reader.read(start=6)] == want[5:]
        assert [e.id for e in reader.read(backwards=True, limit=3)] == want[:-4:-1]
        assert reader.head() == 7
