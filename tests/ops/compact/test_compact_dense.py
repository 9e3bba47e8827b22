"""Dense packs (pack version 4) in a store: old version 3 packs read and rewritten by the next
compaction, stats per pack, damage inside a pack (a flipped byte in a block, a truncated table, a
block whose chain does not continue) named by fsck, refused by compaction and by reads, and the
power-loss simulation of a compaction that rewrites old packs."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from compact_helpers import SMALL, compact_dying_at, files, fill, fsck_problems, reads, removing_packs, soundness

from kroniko_ops import EventStore, StoreCorrupted, fsck
from kroniko_ops.format import pack as packfmt
from kroniko_ops.format import packwrite
from kroniko_ops.format import record as recfmt
from kroniko_ops.format import segment as segfmt
from kroniko_ops.harness.powerloss.run import ACTIONS, STORE, Action
from kroniko_ops.harness.powerloss.simulate import OPERATIONS, simulate
from kroniko_ops.ops.compact import compact
from kroniko_ops.ops.stats import stats

V3Writer = Callable[..., None]


def sealed(path: str) -> list[int]:
    """The first positions of the store's sealed segments."""
    return [p[0] for n in files(path, "log") if (p := segfmt.parse_name(n)) and p[1] == "seg"][:-1]


def into_v3_pack(path: str, v3_pack: V3Writer, count: int) -> str:
    """Move the first ``count`` sealed segments into one version 3 pack, as an older compaction
    did; returns its name."""
    log = os.path.join(path, "log")
    firsts = sealed(path)[:count]
    raw = b"".join(Path(log, segfmt.seg_name(f)).read_bytes() for f in firsts)
    last = recfmt.parse_at(raw, raw.rfind(b"\n", 0, len(raw) - 1) + 1).position
    name = packfmt.name_of(firsts[0], last)
    v3_pack(os.path.join(path, "packs", name), raw, block_bytes=2048)
    for f in firsts:
        os.unlink(os.path.join(log, segfmt.seg_name(f)))
        os.unlink(os.path.join(log, segfmt.idx_name(f)))
    return name


def versions(path: str) -> list[int]:
    """The version of each pack of the store, in position order."""
    out = []
    for name in files(path, "packs"):
        with packfmt.PackReader(os.path.join(path, "packs", name)) as r:
            out.append(r.version)
    return out


def test_old_packs_read_and_are_rewritten_by_the_next_compaction(store_path: str, v3_pack: V3Writer) -> None:
    fill(store_path, 300)
    want = reads(store_path)
    into_v3_pack(store_path, v3_pack, 6)
    assert versions(store_path) == [3]
    assert reads(store_path) == want  # read as they are, through every kind of read
    assert fsck_problems(store_path) == []
    report = compact(store_path)
    assert report.exit_code == 0, report.findings
    assert versions(store_path) == [4] and report.figures["events_rewritten"] > 0
    assert reads(store_path) == want and soundness(store_path) == [] and fsck_problems(store_path) == []


def test_an_old_pack_with_nothing_to_join_waits_then_is_rewritten(store_path: str, v3_pack: V3Writer) -> None:
    fill(store_path, 200)
    compact(store_path)
    [name] = files(store_path, "packs")
    with packfmt.PackReader(os.path.join(store_path, "packs", name)) as r:
        raw = b"".join(r.read_range(r.first, r.last))
    os.unlink(os.path.join(store_path, "packs", name))  # the same records again, as an old pack
    v3_pack(os.path.join(store_path, "packs", name), raw)
    want = reads(store_path)
    assert compact(store_path).exit_code == 0 and versions(store_path) == [3]  # only the active segment after it
    fill(store_path, 150, start=200)
    assert compact(store_path).exit_code == 0 and versions(store_path) == [4]
    assert reads(store_path)["all"][:len(want["all"])] == want["all"] and fsck_problems(store_path) == []


def test_stats_show_each_pack(store_path: str) -> None:
    fill(store_path, 300)
    compact(store_path)
    report = stats(store_path)
    [pack] = report.pack_files
    assert (pack.first, pack.events, pack.version) == (1, pack.last, 4)
    assert pack.bytes == os.path.getsize(os.path.join(store_path, "packs", pack.name))
    assert 0 < pack.ratio < 0.5 and report.packed_events == pack.events


def test_stats_count_the_events_of_leftover_packs_once(store_path: str) -> None:
    # A merge published before its inputs were removed: three pack files on disk, 300 events.
    fill(store_path, 150)
    compact(store_path)
    fill(store_path, 150, start=150)

    compact_dying_at(store_path, removing_packs)
    report = stats(store_path)
    assert len(report.pack_files) == 2 and report.packs == 1
    assert report.packed_events + report.segment_events == report.head
    assert report.packed_events == max(p.last for p in report.pack_files)
    assert report.pack_bytes == sum(p.bytes for p in report.pack_files)  # the disk they take, all of them


# -- damage ------------------------------------------------------------------------------------

@pytest.fixture
def packed(store_path: str) -> str:
    """A store of 400 events whose first ones are in one pack of many small blocks."""
    fill(store_path, 400)
    assert compact(store_path, block_bytes=4096).exit_code == 0
    return store_path


def _the_pack(path: str) -> tuple[str, packfmt.PackReader]:
    [name] = files(path, "packs")
    full = os.path.join(path, "packs", name)
    return full, packfmt.PackReader(full)


def test_a_flipped_byte_in_a_block_is_named_and_left_alone(packed: str) -> None:
    path, reader = _the_pack(packed)
    with reader:
        block = reader.blocks[2]
    data = bytearray(Path(path).read_bytes())
    data[block.offset + block.clen // 2] ^= 0x10
    Path(path).write_bytes(bytes(data))
    report = fsck(packed)
    codes = {(f.code, f.position) for f in report.problems}
    assert ("pack-corrupt", block.first) in codes, report.findings
    # Only the damage: the index entries of the blocks around it are not "extra" for it.
    assert {code for code, _ in codes} == {"pack-corrupt"}, report.findings
    assert report.exit_code == 4
    with EventStore(packed, create=False) as s:
        assert s.read(start=block.first - 1, limit=1).__iter__().__next__().position == block.first - 1
        with pytest.raises(StoreCorrupted, match="fsck"):
            list(s.read(start=block.first, limit=1))
    fill(packed, 200, start=400)  # more sealed segments: compaction would merge them with the pack
    before = sorted(os.listdir(os.path.join(packed, "packs")))
    report = compact(packed)
    assert report.exit_code == 4 and any(f.code == "pack-corrupt" for f in report.problems)
    assert os.path.basename(path) in sorted(os.listdir(os.path.join(packed, "packs")))
    assert before[0] in os.listdir(os.path.join(packed, "packs"))


def test_a_truncated_table_is_named(packed: str) -> None:
    path, reader = _the_pack(packed)
    with reader:
        nblocks = len(reader.blocks)
    data = Path(path).read_bytes()
    trailer = data[-packfmt.TRAILER_SIZE:]
    fields = list(packfmt.TRAILER.unpack(trailer))
    table_offset = fields[5]
    short = data[table_offset:table_offset + 32 + (nblocks - 1) * packfmt.ENTRY_SIZE]
    fields[4], fields[6] = nblocks - 1, zlib.crc32(short)
    body = packfmt.TRAILER.pack(*fields)[:-4]
    Path(path).write_bytes(data[:table_offset] + short + body + struct.pack(">I", zlib.crc32(body)))
    report = fsck(packed, quick=True)
    assert any(f.code == "pack-corrupt" and "table" in f.message for f in report.problems), report.findings
    with pytest.raises(StoreCorrupted):
        with EventStore(packed, create=False) as s:
            list(s.read())


def test_a_block_whose_chain_does_not_continue_is_named(packed: str) -> None:
    """A pack rewritten with the events of one block changed and every checksum made right again:
    only recomputing the chain shows it, and fsck names that block's positions."""
    path, reader = _the_pack(packed)
    with reader:
        before, blocks = reader.chain_before, reader.blocks
        spans = [reader.block(i) for i in range(len(blocks))]
    target = 3
    os.unlink(path)
    with packwrite.PackWriter(path, before, block_bytes=4096) as w:
        for i, d in enumerate(spans):
            bodies = list(d.bodies)
            chains = None
            if i == target:  # one event's JSON changed, the table keeps the chains of the true ones
                bodies[0] = bodies[0].replace(b'"x', b'"y', 1) if b'"x' in bodies[0] else bodies[0][:-1] + b' }'
                chains = [blocks[i].chain] * len(bodies)
            w.add(d.first, bodies, d.commits, None, chains)
        w.finish()
    report = fsck(packed)
    found = [f for f in report.problems if f.code == "chain-mismatch"]
    assert found and found[0].position == blocks[target].first, report.findings
    assert compact(packed).exit_code in (0, 4)  # never merges it while it does not verify
    with packfmt.PackReader(path) as r:
        assert r.check_block(target).problems


# -- the power-loss simulation of a compaction rewriting old packs --------------------------------

def test_no_crash_state_of_a_compaction_rewriting_old_packs_loses_anything(tmp_path: Path, v3_pack: V3Writer) -> None:
    def prepare(root: str) -> None:
        into_v3_pack(os.path.join(root, STORE), v3_pack, 2)

    ACTIONS["compact-old-packs"] = Action(prepare, ACTIONS["compact"].run, ACTIONS["compact"].verify)
    try:
        scenario = replace(OPERATIONS["compact"], name="compact-old-packs", action="compact-old-packs",
                           segment_bytes=SMALL)
        figures = simulate({"compact-old-packs": scenario}, seed=19, runs=1, exhaustive_limit=200, samples=40,
                           scratch=str(tmp_path))["compact-old-packs"]
    finally:
        del ACTIONS["compact-old-packs"]
    assert figures.states > 50 and figures.acked > 0
    assert (figures.lost, figures.violations) == (0, 0), "\n".join(x.describe() for x in figures.failures)
