"""A replica's manifest stays small however many rounds ship one segment (ranges of small
increments are merged), and what it names still restores byte for byte."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from replica_helpers import contents

from kroniko_ops import Event, EventStore
from kroniko_ops.objstore import open_url
from kroniko_ops.ops.replicate import replicate, restore, verify_backup
from kroniko_ops.ops.replicate.manifest import manifest_key, parse
from kroniko_ops.ops.replicate.merge import FANOUT, SEALED_MAX, TOP, UNIT, level, to_merge

LARGE = UNIT * FANOUT ** TOP


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(1, 3000), st.integers(LARGE // 4, 3 * LARGE)), min_size=1, max_size=400))
def test_merging_keeps_a_segment_to_a_few_ranges_and_large_ones_uploaded_once(sizes: list[int]) -> None:
    ranges: list[int] = []  # sizes of the segment's ranges in file order, as the replica names them
    large_reuploaded = 0
    for size in sizes:
        ranges.append(size)
        while span := to_merge(ranges, sealed=False):
            i, j = span
            assert 0 <= i and j <= len(ranges) and j - i >= 2
            large_reuploaded += sum(1 for r in ranges[i:j] if level(r) >= TOP)
            ranges[i:j] = [sum(ranges[i:j])]
        assert len(ranges) <= 2 * FANOUT + 2 * (sum(ranges) // LARGE)
    assert sum(ranges) == sum(sizes)
    assert large_reuploaded == 0  # a range of 256 KiB or more goes up once while the segment is active
    span = to_merge(ranges, sealed=True)
    assert (span == (0, len(ranges))) == (len(ranges) > SEALED_MAX)


def _manifest(url: str):  # type: ignore[no-untyped-def]
    remote = open_url(url)
    try:
        keys = sorted(k for k in remote.list() if k.startswith("manifests/"))
        seq = int(keys[-1].split("/")[-1].split(".")[0])
        return parse(remote.get(manifest_key(seq), 64 << 20), seq)
    finally:
        remote.close()


def test_many_rounds_of_small_batches_keep_the_manifest_small(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    rounds = 150
    with EventStore(src, durable=False, segment_bytes=1 << 20) as store:  # one segment for all rounds
        for i in range(rounds):
            store.append(Event("Tick", {"i": i}, [f"t:{i % 7}"]))
            assert replicate(src, url, once=True).exit_code == 0
    m = _manifest(url)
    [active] = [f for rel, f in m.files.items() if rel.endswith(".seg")]
    assert len(active.objects) <= 2 * FANOUT, [o.key for o in active.objects]
    assert m.head == rounds
    assert verify_backup(url).exit_code == 0
    assert restore(url, str(tmp_path / "r")).exit_code == 0
    assert contents(str(tmp_path / "r")) == contents(src)
