"""fsck on healthy stores (several sizes, while another process appends, after compaction), its
figures, caps and limits, metrics for cron, legacy stores, and the Hypothesis rule that any
single-byte change to any file of a store is detected or provably harmless."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from fsck_helpers import build, codes, dead_pid, flip, line, observe
from fsck_workers import append_batches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore, InvalidArgument, StoreNotFound, compact, fsck
from kroniko_ops.log import ZERO_CHAIN
from kroniko_ops.ops import checks_common, checks_spill


@pytest.mark.parametrize("size", [0, 1, 12, 700])
@pytest.mark.parametrize("durable", [True, False], ids=["durable", "fast"])
def test_a_clean_store_of_any_size_is_clean(tmp_path: Path, size: int, durable: bool) -> None:
    path = str(tmp_path / "s")
    with EventStore(path, durable=durable) as store:
        n = 0
        while n < size:
            k = min(size - n, 1 + n % 37)
            store.append([Event(f"T{(n + i) % 5}", {"i": n + i}, [f"cart:{(n + i) % 11}"]) for i in range(k)])
            n += k
    for level in ("full", "quick"):
        report = fsck(path, level)
        assert report.exit_code == 0, [f.as_json() for f in report.findings]
        assert codes(report) == set()
        assert report.head == size
        assert report.figures["events_checked"] == size
        assert report.figures["chain_at_head"] == (line(path, size).chain if size else ZERO_CHAIN)


def _tree(root: str) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in files:
            out[os.path.relpath(os.path.join(dirpath, f), root)] = Path(dirpath, f).read_bytes()
    return out


def test_fsck_writes_nothing_even_on_a_damaged_store(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    flip(Path(path, "events", "ev-0003.json"), 5)
    Path(path, "events", f".tmp-{dead_pid()}-ab").write_bytes(b"x")
    with open(Path(path, "log", "append.log"), "ab") as f:
        f.write(b"torn")
    before = _tree(path)
    for level in ("full", "quick"):
        assert fsck(path, level).exit_code == 4
        assert fsck(path, level, repair=True, dry_run=True).exit_code == 4
    assert _tree(path) == before


def test_dry_run_says_what_repair_would_do(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    Path(path, "notes.txt").write_text("x")
    report = fsck(path, repair=True, dry_run=True)
    [finding] = [f for f in report.findings if f.code == "stray-file"]
    assert "--repair would move it into lost-found/" in finding.message
    assert not finding.repaired and Path(path, "notes.txt").exists()


def test_fsck_while_another_process_appends_reports_clean(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    ctx = mp.get_context("spawn")
    writer = ctx.Process(target=append_batches, args=(path, 150, 3, False, 0.002))
    writer.start()
    try:
        runs = 0
        while writer.is_alive() or runs < 2:
            for level in ("full", "quick"):
                report = fsck(path, level)
                assert report.exit_code == 0, [f.as_json() for f in report.findings]
                runs += 1
    finally:
        writer.join(timeout=60)
        if writer.is_alive():  # pragma: no cover - only on a hung writer
            writer.kill()
            writer.join()
    assert writer.exitcode == 0
    final = fsck(path)
    assert final.exit_code == 0 and final.head == 12 + 450
    assert runs >= 2


def test_many_partitions_give_the_same_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk-backed comparisons work partition by partition: force many tiny partitions."""
    path = str(tmp_path / "s")
    build(path)
    os.unlink(Path(path, "events", "ev-0004.json"))
    Path(path, "events", "stray.json").write_bytes(b"{}")
    os.unlink(Path(path, "index", "types", "Paid.pos"))
    expected = {(f.code, f.path, f.position, f.message) for f in fsck(path, "quick").findings}
    full = {(f.code, f.path, f.position) for f in fsck(path).findings}
    monkeypatch.setattr(checks_spill, "ROWS_PER_PART", 2)
    assert {(f.code, f.path, f.position, f.message) for f in fsck(path, "quick").findings} == expected
    assert {(f.code, f.path, f.position) for f in fsck(path).findings} == full
    assert {"missing-event", "dangling-event", "index-missing-entry"} <= {c for c, *_ in full}


def test_findings_per_code_are_capped_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "s")
    build(path)
    for n in range(6):
        os.unlink(Path(path, "events", f"ev-{n:04d}.json"))
    monkeypatch.setattr(checks_common, "MAX_FINDINGS_PER_CODE", 2)
    report = fsck(path)
    assert report.counts()["missing-event"] == 2
    assert report.figures["findings_not_listed"] == {"missing-event": 4}
    assert report.exit_code == 4


def test_max_errors_stops_the_check(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    for n in range(6):
        os.unlink(Path(path, "events", f"ev-{n:04d}.json"))
    report = fsck(path, max_errors=3)
    assert len(report.problems) == 3
    assert "stopped" in report.counts()
    assert report.exit_code == 4


def test_metrics_file_for_cron(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    metrics = tmp_path / "m" / "kroniko.prom"
    fsck(path, metrics_file=str(metrics))
    text = metrics.read_text()
    assert "kroniko_fsck_exit_code{" in text and 'store="' in text
    assert "kroniko_fsck_events_checked{" in text and " 12\n" in text
    os.unlink(Path(path, "events", "ev-0001.json"))
    fsck(path, metrics_file=str(metrics))
    assert "kroniko_fsck_findings_missing_event{" in metrics.read_text()
    with pytest.raises(StoreNotFound):
        fsck(str(tmp_path / "absent"), metrics_file=str(metrics))
    text = metrics.read_text()
    assert "kroniko_fsck_up{" in text and "} 0\n" in text and "exit_code" in text


def test_bad_arguments_and_missing_stores(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    with pytest.raises(InvalidArgument):
        fsck(path, "deep")
    with pytest.raises(InvalidArgument):
        fsck(path, max_errors=0)
    with pytest.raises(StoreNotFound):
        fsck(str(tmp_path / "nothing"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("x")
    with pytest.raises(InvalidArgument):
        fsck(str(tmp_path / "plain"))
    with pytest.raises(InvalidArgument):
        fsck(str(tmp_path / "plain" / "x.txt"))


def test_a_compacted_store_is_clean(tmp_path: Path) -> None:
    compact = pytest.importorskip("kroniko_ops.ops.compact").compact
    path = str(tmp_path / "s")
    build(path, batches=(3, 1, 4, 2, 2) * 4)
    compact(path)
    assert any(n.endswith(".pack") for n in os.listdir(Path(path, "packs")))
    for level in ("full", "quick"):
        report = fsck(path, level)
        assert report.exit_code == 0, [f.as_json() for f in report.findings]
        assert report.figures["events_checked"] == 48


def test_a_legacy_store_is_checked_and_never_written(legacy_clean: str) -> None:
    pytest.importorskip("kroniko_ops.legacy.check")
    before = _tree(legacy_clean)
    report = fsck(legacy_clean)
    assert report.operation == "fsck"
    repaired = fsck(legacy_clean, repair=True)
    assert "legacy-store" in repaired.counts()
    assert not any(f.repaired for f in repaired.findings)
    assert _tree(legacy_clean) == before


# -- any single-byte change is detected or harmless ---------------------------------------


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str], object]:
    path = str(tmp_path_factory.mktemp("small") / "store")
    build(path, batches=(2, 1, 3))
    files = sorted(
        os.path.relpath(os.path.join(d, f), path)
        for d, _dirs, names in os.walk(path) for f in names
        if os.path.getsize(os.path.join(d, f)) > 0
    )
    return path, files, observe(path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_is_detected_or_harmless(small_store: tuple[str, list[str], object],
                                                        data: st.DataObject) -> None:
    template, files, seen = small_store
    rel = data.draw(st.sampled_from(files), label="file")
    size = os.path.getsize(os.path.join(template, rel))
    offset = data.draw(st.integers(0, size - 1), label="offset")
    folder = tempfile.mkdtemp(prefix="kroniko-hyp-")
    try:
        store = os.path.join(folder, "s")
        shutil.copytree(template, store)
        target = Path(store, rel)
        raw = bytearray(target.read_bytes())
        value = data.draw(st.integers(0, 255).filter(lambda b: b != raw[offset]), label="byte")
        raw[offset] = value
        os.chmod(target, 0o644)
        target.write_bytes(bytes(raw))
        report = fsck(store)
        if report.exit_code == 0:
            # Not detected: then nothing a reader relies on may have changed.
            assert observe(store) == seen, (rel, offset, value)
        else:
            assert report.exit_code == 4
            assert fsck(store, "quick").exit_code in (0, 4)
    finally:
        shutil.rmtree(folder)


def test_index_files_read_in_small_chunks_give_the_same_answers(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Index files are checked a chunk at a time: damage past the first chunk is still found."""
    from kroniko_ops.ops import checks_index

    path = str(tmp_path / "s")
    build(path, batches=(3, 1, 4, 2, 2) * 4)
    monkeypatch.setattr(checks_index, "CHUNK", 13 * 3)
    assert fsck(path).exit_code == 0
    ordered = Path(path, "index", "types", "Ordered.pos")
    lines = ordered.read_bytes().splitlines(keepends=True)
    lines[7], lines[8] = lines[8], lines[7]
    ordered.write_bytes(b"".join(lines))
    report = fsck(path)
    assert [(f.code, f.path) for f in report.problems] == [("index-extra-entry", "index/types/Ordered.pos")]
    assert "line 9 is out of order" in report.problems[0].message


def test_events_of_a_lost_pack_are_missing(tmp_path: Path) -> None:
    compact = pytest.importorskip("kroniko_ops.ops.compact").compact
    path = str(tmp_path / "s")
    build(path, batches=(3, 1, 4, 2, 2) * 4)
    compact(path)
    packs = sorted(n for n in os.listdir(Path(path, "packs")) if n.endswith(".pack"))
    os.unlink(Path(path, "packs", packs[0]))
    for level in ("full", "quick"):
        report = fsck(path, level)
        assert "missing-event" in codes(report), (level, [f.as_json() for f in report.findings])
        assert report.exit_code == 4


@pytest.mark.soak
def test_soak_fsck_while_two_processes_append(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=append_batches, args=(path, 600, 1 + i, i == 0, 0.0)) for i in range(2)]
    for w in writers:
        w.start()
    runs = 0
    try:
        while any(w.is_alive() for w in writers):
            for level in ("full", "quick"):
                report = fsck(path, level)
                assert report.exit_code == 0, [f.as_json() for f in report.problems]
                runs += 1
    finally:
        for w in writers:
            w.join(timeout=120)
            if w.is_alive():  # pragma: no cover
                w.kill()
                w.join()
    assert all(w.exitcode == 0 for w in writers)
    assert fsck(path).exit_code == 0 and runs > 2


def test_repair_while_another_process_appends(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    Path(path, "notes.txt").write_text("x")
    os.unlink(Path(path, "index", "types", "Paid.pos"))
    ctx = mp.get_context("spawn")
    writer = ctx.Process(target=append_batches, args=(path, 100, 2, False, 0.002))
    writer.start()
    try:
        report = fsck(path, repair=True)
    finally:
        writer.join(timeout=60)
        if writer.is_alive():  # pragma: no cover
            writer.kill()
            writer.join()
    assert writer.exitcode == 0
    assert report.exit_code == 1, [f.as_json() for f in report.findings]
    final = fsck(path)
    assert final.exit_code == 0 and final.head == 12 + 200


def test_an_event_whose_id_looks_like_a_temp_name_is_not_a_temp_file(tmp_path: Path) -> None:
    # ".tmp-<dead pid>-x" is a legal id; its file ends in ".json", which no temp name does.
    path = str(tmp_path / "s")
    with EventStore(path, durable=False) as s:
        s.append([Event("A", 1, id=".tmp-999999999-x"), Event("B", 2)])
    report = fsck(path, repair=True)
    assert report.exit_code == 0, [f.code for f in report.findings]
    assert compact(path, prune_after=0).exit_code == 0
    with EventStore(path) as s:
        assert [e.id for e in s.read()] == [".tmp-999999999-x", next(iter(s.read(start=2))).id]
    assert fsck(path).exit_code == 0
