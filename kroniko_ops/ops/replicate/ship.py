"""One upload round of a replica: what the store holds now, shipped, then named by a manifest.

A round takes a snapshot of the store at its synced head (:mod:`..backup.snapshot`: packs,
sealed segments, the head's segment cut at the synced end, all opened before anything is read)
and makes every object of it exist in the replica:

- ``FORMAT``, packs and ``.idx`` files go up whole, once (a file the newest manifest already
  holds, recognised by the checksum its own format records, is not read again);
- a segment goes up as byte ranges: the replica's part of it is kept, and only the bytes past it
  up to the synced end (whole batches: the synced end is a batch's end) are uploaded. Sealing
  adds the ``.idx`` and, when the replica was behind, the segment's last range; the segment's
  SHA-256 is checked against the one its ``.idx`` records.

Only then is the next manifest created (exclusively: a second writer fails instead of
overwriting). An object that exists already (a killed run uploaded it and died before its
manifest) is adopted after its SHA-256 is compared with the local bytes, never uploaded again.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ... import __version__, fileio
from ...errors import InvalidArgument, StoreCorrupted
from ...layout import Layout
from ...objstore import Conflict, ObjectStore, ObjectStoreError, Region
from ...store import EventStore
from ..backup import snapshot
from ..backup.places import refuse_overlap
from . import merge
from .manifest import (
    MAX_MANIFEST_BYTES,
    Obj,
    ReplicaManifest,
    ReplicaManifestError,
    RFile,
    is_replica_key,
    manifest_key,
    manifest_seq,
    parse,
    part_key,
    part_range,
    whole_key,
)

IN_MEMORY = 64 << 20  # a range up to this size is read once into memory; larger ones are streamed
UPLOADS = 8  # objects uploaded at once (a catch-up of many small segments is bound by round trips)
IN_FLIGHT = 256 << 20  # bytes held for uploads in flight


@dataclass
class Counters:
    """What the uploads cost: bytes and objects uploaded (packs apart), objects adopted."""

    bytes: int = 0
    pack_bytes: int = 0
    manifest_bytes: int = 0
    objects: int = 0
    adopted: int = 0
    manifests: int = 0


@dataclass
class History:
    """A manifest present in the replica: when it was written and the objects it names."""

    created_us: int
    keys: set[str] = field(default_factory=set)


def now_us() -> int:
    """The wall clock in microseconds since the epoch."""
    return time.time_ns() // 1000


def sha_of(fd: int, offset: int, size: int) -> str:
    """SHA-256 of ``size`` bytes of ``fd`` from ``offset``."""
    h = hashlib.sha256()
    for chunk in Region(fd, offset, size).chunks():
        h.update(chunk)
    return h.hexdigest()


class Replicator:
    """Ships the store at ``root`` to ``remote``; :meth:`open` first, then :meth:`round`."""

    def __init__(self, root: str, remote: ObjectStore, *, lock_timeout: float = 30.0) -> None:
        self.root = root
        self.remote = remote
        self.lock_timeout = lock_timeout
        self.current: ReplicaManifest | None = None
        self.history: dict[int, History] = {}
        self.objects: dict[str, int] = {}  # every object known to exist: key -> size
        self.checked: set[str] = set()  # objects this process uploaded or compared with local bytes
        self.hashers: dict[str, tuple[int, hashlib._Hash]] = {}  # segment -> (bytes covered, hash so far)
        self.seals: dict[tuple[int, ...], tuple[int, bytes]] = {}  # sealed segments decoded once (snapshot)
        self.count = Counters()
        self.swept: list[str] = []  # temp files of killed uploads removed from a folder replica
        self.pool = ThreadPoolExecutor(UPLOADS, thread_name_prefix="kroniko-upload")
        self.inflight: list[tuple[Future[bool], str, int, bool]] = []  # (future, key, size, is a pack)
        self.store = EventStore(root, create=False, lock_timeout=lock_timeout)

    def close(self) -> None:
        """Release the store handle, the upload threads and the connection."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()
        self.remote.close()

    # -- opening: where the replica is, and whether it is this store's --------------------

    def open(self, empty_only: bool = False) -> None:
        """Read the replica's state; refuse (InvalidArgument, exit 2, nothing written) a prefix
        holding anything but a replica, a replica of another store (or of another history of
        this one), or with ``empty_only`` anything at all."""
        self._check_apart()
        listing = self.remote.list()
        if empty_only and listing:
            raise InvalidArgument(f"{self.remote.url} is not empty ({len(listing)} objects, e.g. {min(listing)}): "
                                  "a backup goes to a new prefix; nothing was written")
        foreign = sorted(k for k in listing if not is_replica_key(k))
        if foreign:
            raise InvalidArgument(f"{self.remote.url} holds objects that are not part of a replica (e.g. "
                                  f"{foreign[0]!r}); replicate into a new or empty prefix; nothing was written")
        seqs = sorted(s for k in listing if (s := manifest_seq(k)) is not None)
        for seq in seqs:
            try:
                m = parse(self.remote.get(manifest_key(seq), MAX_MANIFEST_BYTES), seq)
            except ReplicaManifestError as exc:
                if seq == seqs[-1]:
                    raise StoreCorrupted(f"the newest manifest of {self.remote.url} ({manifest_key(seq)}) does not "
                                         f"check: {exc}; run: kroniko-ops verify-backup {self.remote.url}") from None
                continue  # an older damaged manifest is left alone (verify-backup reports it)
            self.history[seq] = History(m.created_us, m.keys())
            self.current = m
        self.objects = {k: size for k, size in listing.items() if manifest_seq(k) is None}
        if self.current is not None:
            self._check_same_store(self.current)
        sweep = getattr(self.remote, "sweep", None)  # a folder replica: temp files of killed uploads
        if sweep is not None and not empty_only:  # only once the folder is known to be this store's replica
            self.swept = sweep()

    def _check_apart(self) -> None:
        """A folder replica inside the store (or the store inside it) would copy itself: refused."""
        root = getattr(self.remote, "root", None)
        if root is None:
            return
        a, b = os.path.realpath(root), os.path.realpath(self.root)
        if a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep):
            raise InvalidArgument(f"{self.remote.url} and the store {self.root} must not be inside one another: "
                                  "replicate to a folder elsewhere (ideally another disk); nothing was written")
        refuse_overlap(self.root, root, "store", "replica")  # nor inside another store, backup or replica

    def _check_same_store(self, m: ReplicaManifest) -> None:
        fmt = _format_bytes(self.root)
        state = self.store.synced_state()
        why = ""
        if hashlib.sha256(fmt).hexdigest() != m.files["FORMAT"].sha256:
            why = "its FORMAT file differs from this store's (another store)"
        elif m.head > state.position:
            why = f"it holds positions up to {m.head}, this store only up to {state.position}"
        elif m.head and next(iter(self.store.records(m.head, m.head))).chain.hex() != m.chain:
            why = f"its chain hash at position {m.head} differs from this store's"
        if why:
            raise InvalidArgument(f"{self.remote.url} holds a replica of another store, or of another history of "
                                  f"this one ({why}); replicate into a new prefix; nothing was written")

    # -- one round -------------------------------------------------------------------------

    def round(self) -> ReplicaManifest | None:
        """Ship the store as it is at its synced head; return the new manifest, or None when
        the replica was already there."""
        problem = ""
        for _ in range(snapshot.ATTEMPTS):
            staged: dict[str, tuple[int, hashlib._Hash]] = {}
            try:
                with snapshot.take(self.root, self.lock_timeout, self.seals) as snap:
                    files = self._collect(snap, staged)
                    head, chain = snap.state.position, snap.state.chain
                    active = next((p.files[0].rel for p in snap.parts if p.kind == "active"), "")
                break
            except snapshot.Vanished as exc:
                problem = str(exc)  # compaction replaced a file meanwhile: look again
        else:
            raise StoreCorrupted(f"the files of {self.root} kept being replaced while they were shipped ({problem})")
        cur = self.current
        if cur is not None and cur.head == head and cur.files == files and cur.active == active:
            return None
        seq = max(self.history, default=0) + 1
        m = ReplicaManifest(seq, head, chain.hex(), active, self._head_time(head, cur), now_us(), files,
                            os.path.abspath(self.root), f"kroniko-ops {__version__}")
        raw = m.render()
        if len(raw) > MAX_MANIFEST_BYTES:  # readers would refuse it: fail here, loudly, instead
            raise ObjectStoreError(f"{self.remote.url}: manifest {seq} would be {len(raw)} bytes, over the "
                                   f"{MAX_MANIFEST_BYTES} a reader accepts; compact the store (kroniko-ops compact) "
                                   "so that packs replace its many segments, then replicate again")
        try:
            self.remote.put(manifest_key(seq), raw, len(raw), hashlib.sha256(raw).hexdigest(), exclusive=True)
        except Conflict:
            # A retried upload whose first answer was lost finds its own manifest: that is success.
            if not self._same(manifest_key(seq), hashlib.sha256(raw).hexdigest()):
                raise ObjectStoreError(f"{self.remote.url}: manifest {seq} was written by another process meanwhile; "
                                       "run one replicate per URL") from None
        self.count.manifest_bytes += len(raw)
        self.count.manifests += 1
        self.history[seq] = History(m.created_us, m.keys())
        self.current = m
        self.hashers.update(staged)
        return m

    def _head_time(self, head: int, cur: ReplicaManifest | None) -> int:
        if cur is not None and cur.head == head:
            return cur.head_time
        if head == 0:
            return 0
        return next(iter(self.store.records(head, head))).time

    def _collect(self, snap: snapshot.Snapshot, staged: dict[str, tuple[int, hashlib._Hash]]) -> dict[str, RFile]:
        """Every file of the snapshot in the replica (uploads done when it returns)."""
        try:
            files = self._files(snap, staged)
        except BaseException:
            try:
                self._settle()  # let the uploads in flight end (and count) before giving up
            except BaseException:
                pass  # the first failure is the one reported
            raise
        self._settle()
        return files

    def _files(self, snap: snapshot.Snapshot, staged: dict[str, tuple[int, hashlib._Hash]]) -> dict[str, RFile]:
        files = {"FORMAT": self._format(snap.format_bytes)}
        for part in snap.parts:
            with snap.opened(part) as opened:
                for rel, fd, size in opened:
                    if part.kind == "pack":
                        assert part.pack_sha256 is not None
                        files[rel] = self._whole(rel, fd, size, part.pack_sha256.hex())
                    elif rel.endswith(".idx"):
                        assert part.seg_sha256 is not None
                        files[rel] = self._whole(rel, fd, size, part.seg_sha256.hex())
                    else:
                        seal = part.seg_sha256.hex() if part.kind == "sealed" and part.seg_sha256 else ""
                        head = snap.state.chain if part.kind == "active" else None
                        files[rel] = self._segment(rel, fd, size, seal, staged, head)
        return files

    def _format(self, data: bytes) -> RFile:
        sha = hashlib.sha256(data).hexdigest()
        prev = self.current.files["FORMAT"] if self.current is not None else None
        if prev is not None and prev.sha256 == sha:
            return prev
        key = whole_key("FORMAT", sha)
        self._ensure(key, data, len(data), sha)
        return RFile(len(data), sha, [Obj(key, 0, len(data), sha)])

    def _whole(self, rel: str, fd: int, size: int, seal: str) -> RFile:
        """A pack or offset index: the replica's entry when it holds the same file (same size
        and self-recorded checksum), else uploaded whole."""
        prev = self.current.files.get(rel) if self.current is not None else None
        if prev is not None and prev.size == size and prev.seal == seal:
            return prev
        sha = sha_of(fd, 0, size)
        key = whole_key(rel, sha)
        self._ensure(key, _source(fd, 0, size), size, sha, pack=rel.startswith("packs/"))
        return RFile(size, sha, [Obj(key, 0, size, sha)], seal)

    def _segment(self, rel: str, fd: int, end: int, seal: str, staged: dict[str, tuple[int, hashlib._Hash]],
                 head: bytes | None = None) -> RFile:
        """A segment up to ``end``: the replica's ranges, then the bytes past them (checked
        record by record first when it is the head's segment, whose chain at ``end`` is
        ``head``: it has no checksum of its own)."""
        prev = self.current.files.get(rel) if self.current is not None else None
        objs = list(prev.objects) if prev is not None else []
        covered = prev.size if prev is not None else 0
        if covered > end:
            raise StoreCorrupted(f"{self.root}/{rel} holds {end} synced bytes but its replica {covered}: the store "
                                 f"lost synced records; run: kroniko-ops fsck {self.root}")
        if covered == end and prev is not None and prev.seal == seal:
            return prev
        if head is not None:
            snapshot.check_records(self.root, rel, fd, covered, end, head)
        h = self._hasher(rel, fd, objs, covered)
        while covered < end:
            start = covered
            adopted = self._orphan(rel, fd, start, end)
            stop = adopted or end
            objs.append(self._range(rel, fd, start, stop, h, upload=not adopted))
            covered = stop
        if seal and h.hexdigest() != seal:
            raise StoreCorrupted(f"{self.root}/{rel} does not match the SHA-256 its .idx records (segment-corrupt); "
                                 f"run: kroniko-ops fsck {self.root}")
        while span := merge.to_merge([o.size for o in objs], bool(seal)):
            for o in objs[span[0]:span[1]]:  # the bytes merged must still be those shipped before
                if sha_of(fd, o.offset, o.size) != o.sha256:
                    raise StoreCorrupted(f"{self.root}/{rel}: bytes {o.offset}..{o.offset + o.size} changed since "
                                         f"they were replicated (segment-corrupt); run: kroniko-ops fsck {self.root}")
            first, last = objs[span[0]], objs[span[1] - 1]
            objs[span[0]:span[1]] = [self._range(rel, fd, first.offset, last.offset + last.size, None, upload=True)]
        staged[rel] = (covered, h.copy())
        return RFile(end, h.hexdigest(), objs, seal)

    def _range(self, rel: str, fd: int, start: int, stop: int, h: hashlib._Hash | None, upload: bool) -> Obj:
        """The object of bytes ``start..stop`` of the segment ``rel`` (uploaded unless ``upload``
        is False: adopted), its bytes fed to the segment's hasher ``h`` when given."""
        size = stop - start
        if size <= IN_MEMORY:
            data = os.pread(fd, size, start)
            if len(data) != size:
                raise OSError(f"{rel}: unexpected end of file at byte {start + len(data)}")
            if h is not None:
                h.update(data)
            sha = hashlib.sha256(data).hexdigest()
            source: bytes | Region = data
        else:
            sha = sha_of(fd, start, size)
            if h is not None:
                for chunk in Region(fd, start, size).chunks():
                    h.update(chunk)
            source = Region(fd, start, size)
        key = part_key(rel, start, stop)
        if upload:
            self._ensure(key, source, size, sha)
        return Obj(key, start, size, sha)

    def _hasher(self, rel: str, fd: int, objs: list[Obj], covered: int) -> hashlib._Hash:
        """The SHA-256 of the segment's first ``covered`` bytes, so far: kept from the last
        round, or computed from the local file, each range compared with the replica's (bytes
        that differ mean another store: refused)."""
        known = self.hashers.get(rel)
        if known is not None and known[0] == covered:
            return known[1].copy()
        h = hashlib.sha256()
        for o in objs:
            part = hashlib.sha256()
            for chunk in Region(fd, o.offset, o.size).chunks():
                part.update(chunk)
                h.update(chunk)
            if part.hexdigest() != o.sha256:
                raise InvalidArgument(f"{self.remote.url}: {o.key} differs from bytes {o.offset}..{o.offset + o.size} "
                                      f"of {self.root}/{rel}: a replica of another store; nothing was written")
        return h

    def _orphan(self, rel: str, fd: int, start: int, end: int) -> int:
        """The end of the longest range of ``rel`` from ``start`` that a killed run uploaded and
        no manifest names, when its bytes are this store's; else 0."""
        ends = sorted((r[2] for k in self.objects if (r := part_range(k)) and r[0] == rel and r[1] == start
                       and r[2] <= end), reverse=True)
        for stop in ends:
            key = part_key(rel, start, stop)
            if self.objects[key] == stop - start and self._same(key, sha_of(fd, start, stop - start)):
                self.count.adopted += 1
                self.checked.add(key)
                return stop
        return 0

    def _same(self, key: str, sha: str) -> bool:
        recorded = self.remote.sha256(key)
        if recorded is None:
            h = hashlib.sha256()
            self.remote.download(key, h.update)
            recorded = h.hexdigest()
        return recorded == sha

    def _ensure(self, key: str, source: bytes | Region, size: int, sha: str, pack: bool = False) -> None:
        """Make the object ``key`` exist with these bytes: already checked, or (in a worker
        thread, up to UPLOADS at once and IN_FLIGHT bytes held) adopted after a comparison or
        uploaded. A source too big to hold in memory is shipped at once, from its open file."""
        if key in self.checked or any(k == key for _f, k, _s, _p in self.inflight):
            return
        if isinstance(source, Region):
            self._settle()
            self._done(key, size, pack, self._ship(key, source, size, sha))
            return
        while self.inflight and sum(n for _f, _k, n, _p in self.inflight) + size > IN_FLIGHT:
            self._settle(oldest=True)
        self.inflight.append((self.pool.submit(self._ship, key, source, size, sha), key, size, pack))

    def _ship(self, key: str, source: bytes | Region, size: int, sha: str) -> bool:
        """Upload the object unless the replica holds it already with these bytes (a killed
        run's upload): True when uploaded."""
        if self.objects.get(key) == size and self._same(key, sha):
            return False
        self.remote.put(key, source, size, sha)
        return True

    def _done(self, key: str, size: int, pack: bool, uploaded: bool) -> None:
        if uploaded:
            self.objects[key] = size
            if pack:
                self.count.pack_bytes += size
            else:
                self.count.bytes += size
            self.count.objects += 1
        else:
            self.count.adopted += 1
        self.checked.add(key)  # only once it is there: a failed upload is never taken for done

    def _settle(self, oldest: bool = False) -> None:
        """Wait for the uploads in flight (or the oldest one), recording each that succeeded;
        after a failure, wait for the others too, then raise it."""
        failure: BaseException | None = None
        while self.inflight:
            future, key, size, pack = self.inflight.pop(0)
            try:
                self._done(key, size, pack, future.result())
            except BaseException as exc:
                failure = failure or exc
                for other, *_rest in self.inflight:
                    other.cancel()
            if oldest and failure is None:
                return
        if failure is not None:
            raise failure


def _source(fd: int, offset: int, size: int) -> bytes | Region:
    if size <= IN_MEMORY:
        return b"".join(Region(fd, offset, size).chunks())
    return Region(fd, offset, size)


def _format_bytes(root: str) -> bytes:
    return fileio.read_small(Layout(root).format_file, 4096)
