"""The pack format: what a writer writes a reader reads back, and check_packs finds damage."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore
from kroniko_ops.ops.compact import compact
from kroniko_ops.ops.compact_write import PackWriter
from kroniko_ops.packs import PACK_TRAILER_LEN, PackSet, check_packs, list_packs, pack_name
from kroniko_ops.report import Report

events_bytes = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=60)


def write_pack(folder: str, first: int, raws: list[bytes]) -> str:
    os.makedirs(folder, exist_ok=True)
    w = PackWriter(folder, first, durable=False)
    w.add(raws)
    w.finish()
    return w.publish()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raws=events_bytes, first=st.integers(1, 10**6))
def test_what_is_written_is_read_back_by_position(tmp_path: Path, raws: list[bytes], first: int) -> None:
    folder = str(tmp_path / os.urandom(6).hex())  # tmp_path is shared by the examples
    write_pack(folder, first, raws)
    ps = PackSet(folder)
    last = first + len(raws) - 1
    assert [ps.get(first + k) for k in range(len(raws))] == raws
    assert ps.get(first - 1) is None and ps.get(last + 1) is None
    assert list(ps.iter_range(first, last)) == list(enumerate(raws, first))
    assert list(ps.iter_range(first, last, backwards=True)) == list(reversed(list(enumerate(raws, first))))
    assert ps.count() == len(raws)
    pack = ps.packs()[0]
    assert pack.checksums()  # both trailers verify
    ps.close()


def test_files_are_json_lines_with_checksums_sha256sum_can_verify(tmp_path: Path) -> None:
    folder = str(tmp_path / "packs")
    raws = [b'{"a":1}', b'{"b":2}']
    path = write_pack(folder, 5, raws)
    data = Path(path).read_bytes()
    assert data.startswith(b'{"a":1}\n{"b":2}\n')
    assert data[-PACK_TRAILER_LEN:].startswith(b"kroniko-pack 1 000000000005 000000000006 ")
    for f in (path, path[:-5] + ".idx"):
        raw = Path(f).read_bytes()
        assert hashlib.sha256(raw[:-65]).hexdigest().encode() == raw[-65:-1]
    idx = Path(path[:-5] + ".idx").read_bytes().split(b"\n")
    assert idx[:3] == [b"000000000000", b"000000000008", b"000000000016"]
    if shutil.which("sha256sum"):
        head = subprocess.run(["head", "-c", "-65", path], capture_output=True, check=True).stdout
        assert hashlib.sha256(head).hexdigest().encode() == data[-65:-1]


def test_a_pack_published_later_is_found_by_a_reader_that_listed_before(tmp_path: Path) -> None:
    folder = str(tmp_path / "packs")
    write_pack(folder, 1, [b"a", b"b"])
    ps = PackSet(folder)
    assert ps.get(2) == b"b"
    write_pack(folder, 3, [b"c"])
    assert ps.get(3, refresh=False) is None  # the cached listing does not know it yet
    assert ps.get(3) == b"c"


def test_an_open_pack_stays_readable_after_a_merge_removed_it(tmp_path: Path) -> None:
    folder = str(tmp_path / "packs")
    path = write_pack(folder, 1, [b"a", b"b"])
    ps = PackSet(folder)
    assert ps.get(1) == b"a"
    os.unlink(path)
    os.unlink(path[:-5] + ".idx")
    assert ps.get(2) == b"b"  # mapped before the removal


def test_a_listed_pack_removed_before_it_was_opened_is_found_in_its_successor(tmp_path: Path) -> None:
    folder = str(tmp_path / "packs")
    old = write_pack(folder, 1, [b"a"])
    ps = PackSet(folder)
    ps.refresh()
    write_pack(folder, 1, [b"a", b"b"])  # the merged pack: published first ...
    os.unlink(old)  # ... then the part is removed
    os.unlink(old[:-5] + ".idx")
    assert ps.get(1) == b"a" and ps.get(2) == b"b"


def _store_with_pack(tmp_path: Path, n: int = 30) -> str:
    path = str(tmp_path / "store")
    with EventStore(path, durable=False) as s:
        s.append([Event("T", {"i": i}, [f"k:{i % 3}"]) for i in range(n)])
    assert compact(path).exit_code == 0
    return path


def _check(path: str, full: bool = True) -> Report:
    report = Report("fsck", path)
    check_packs(path, report, full)
    return report


def test_check_packs_is_clean_after_compaction(tmp_path: Path) -> None:
    path = _store_with_pack(tmp_path)
    assert _check(path).findings == []
    assert _check(path, full=False).findings == []


@pytest.mark.parametrize("where", ["pack-data", "pack-trailer", "idx-offset", "idx-trailer"])
def test_a_flipped_byte_anywhere_is_pack_corrupt(tmp_path: Path, where: str) -> None:
    path = _store_with_pack(tmp_path)
    stem = os.path.join(path, "packs", pack_name(1, 30))
    target = stem + (".pack" if where.startswith("pack") else ".idx")
    raw = bytearray(Path(target).read_bytes())
    at = {"pack-data": 10, "pack-trailer": len(raw) - 3, "idx-offset": 20, "idx-trailer": len(raw) - 40}[where]
    raw[at] ^= 0x01
    os.chmod(target, 0o644)
    Path(target).write_bytes(bytes(raw))
    codes = {f.code for f in _check(path, full=False).problems}
    assert codes == {"pack-corrupt"}


def test_a_pack_whose_bytes_are_not_the_logged_events_is_caught_by_the_full_check(tmp_path: Path) -> None:
    path = _store_with_pack(tmp_path, 3)
    folder = os.path.join(path, "packs")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    write_pack(folder, 1, [b'{"x":1}', b'{"x":2}', b'{"x":3}'])  # self-consistent, wrong content
    assert _check(path, full=False).problems == []
    bad = _check(path, full=True).problems
    assert {f.code for f in bad} == {"pack-corrupt"} and sorted(f.position for f in bad) == [1, 2, 3]


def test_leftovers_of_an_interrupted_compaction_are_harmless_info(tmp_path: Path) -> None:
    path = _store_with_pack(tmp_path)
    folder = os.path.join(path, "packs")
    stem = os.path.join(folder, pack_name(1, 30))
    shutil.copy(stem + ".idx", os.path.join(folder, pack_name(31, 40) + ".idx"))  # idx without pack
    part = [raw for _pos, raw in PackSet(folder).iter_range(1, 10)]
    write_pack(folder, 1, part)  # a part a merge into 1..30 did not remove yet
    report = _check(path, full=True)
    assert report.problems == []
    assert report.counts() == {"pack-orphan-index": 1, "pack-superseded": 1}


def test_a_pack_without_its_index_and_a_stray_file_are_problems(tmp_path: Path) -> None:
    path = _store_with_pack(tmp_path)
    folder = os.path.join(path, "packs")
    os.unlink(os.path.join(folder, pack_name(1, 30) + ".idx"))
    Path(folder, "notes.txt").write_text("hello")
    assert {f.code for f in _check(path).problems} == {"pack-corrupt", "stray-file"}
    assert list_packs(folder)[0] == []


def test_a_pack_past_the_head_is_pack_corrupt(tmp_path: Path) -> None:
    path = _store_with_pack(tmp_path, 3)
    write_pack(os.path.join(path, "packs"), 4, [b"{}"])
    bad = _check(path, full=False).problems
    assert [(f.code, f.position) for f in bad] == [("pack-corrupt", 4)]


def _flip_event_byte(path: str, first: int, last: int) -> None:
    target = os.path.join(path, "packs", pack_name(first, last) + ".pack")
    raw = bytearray(Path(target).read_bytes())
    raw[raw.index(b'"i":7') + 4] ^= 0x01  # 7 -> 6: still valid JSON, other bytes
    os.chmod(target, 0o644)
    Path(target).write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["all", "all-backwards", "short", "tag", "one"])
def test_a_damaged_pack_makes_reads_fail_loudly_never_return_other_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    from kroniko_ops import Query, QueryItem, StoreCorrupted, packs

    path = _store_with_pack(tmp_path)
    _flip_event_byte(path, 1, 30)
    # Treat the pack as big, so that a short read hashes its events instead of the whole pack.
    monkeypatch.setattr(packs, "SMALL_PACK", 0)
    with EventStore(path, create=False) as s:
        read = {
            "all": lambda: list(s.read()),
            "all-backwards": lambda: list(s.read(backwards=True)),
            "short": lambda: list(s.read(start=8, limit=1)),
            "tag": lambda: list(s.read(Query([QueryItem(tags=["k:1"])]))),
            "one": lambda: list(s.read(Query([QueryItem(tags=["k:1"])]), start=8, limit=1)),
        }[how]
        with pytest.raises(StoreCorrupted, match="fsck"):
            read()
        assert list(s.read(limit=5))[4].data == {"i": 4}  # the rest of the pack still reads


def test_a_short_read_of_a_big_pack_does_not_hash_the_whole_pack(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from kroniko_ops import packs

    path = _store_with_pack(tmp_path)
    monkeypatch.setattr(packs, "SMALL_PACK", 0)
    with EventStore(path, create=False) as s:
        assert [e.position for e in s.read(start=3, limit=2)] == [3, 4]
        assert not s.packs.packs()[0].verified
        assert len(list(s.read())) == 30
        assert s.packs.packs()[0].verified
