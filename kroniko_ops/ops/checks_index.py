"""Index checks: safe file names, a sane checkpoint, ascending lines, and (full) exactly the lines
the log and the events imply up to the trusted checkpoint.

Lines past the trusted checkpoint are ignored: a writer appends index lines after its commit and
advances the checkpoint last, and the next writer cuts what a dead one left there. The content
comparison is a :class:`~kroniko_ops.ops.checks_common.Digest` of ``(kind, name, position)``
keys on both sides; only on a mismatch are both sides spilled to disk and compared file by file.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from ..codec import ID_RE
from ..index import BOOT_ID, CHECKPOINT_LEN, Checkpoint, decode_name, encode_name, id_bucket, parse_checkpoint
from ..progress import progress
from .checks_common import MASK64, Context, Digest, stale_temp
from .checks_events import ID_KEY, TAG_KEY, TYPE_KEY, Entry
from .checks_spill import Spill

KIND_KEYS = {"types": TYPE_KEY, "tags": TAG_KEY}
_HASHED_RE = re.compile(r"\A~[0-9a-f]{64}\Z")
_BUCKET_RE = re.compile(r"\A[0-9a-f]{3}\.ids\Z")
IndexFile = tuple[str, str, str]  # (kind, name or bucket, path)


def read_checkpoint(index_root: str) -> tuple[Checkpoint | None, str | None]:
    """The checkpoint and, when it is present but not valid, why. Absent: ``(None, None)``."""
    path = os.path.join(index_root, "CHECKPOINT")
    for _attempt in range(3):
        try:
            with open(path, "rb") as f:
                raw = f.read(CHECKPOINT_LEN + 1)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"cannot be read ({exc})"
        try:
            cp = parse_checkpoint(raw)
            break
        except (ValueError, KeyError, UnicodeDecodeError):
            time.sleep(0.001)  # a writer may be rewriting it in place right now: read again
    else:
        return None, f"is damaged (fails its CRC or does not parse: {raw[:80]!r})"
    if cp.durable > cp.written:
        return None, f"says durable={cp.durable} past written={cp.written}"
    return cp, None


def trusted_upto(cp: Checkpoint | None, head: int) -> int:
    """Up to which position the index must be exact."""
    return 0 if cp is None else min(cp.trusted, head)


def _hashed_name(folder: str, stem: str) -> str | None:
    """The name behind a hashed file name, from its ``.name`` file, if it verifies."""
    try:
        with open(os.path.join(folder, stem + ".name"), "rb") as f:
            name = f.read().decode("utf-8", "surrogatepass")
    except (OSError, UnicodeDecodeError):
        return None
    ok = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest() == stem[1:]
    return name if ok and encode_name(name) == stem else None


def index_files(ctx: Context | None, index_root: str, deep: bool = True) -> Iterator[IndexFile]:
    """The index's position and id files (in folder order). With a ``ctx``, report everything
    else found under ``index/`` (unsafe names, stale temp files, stray files). Not ``deep``: only
    the top level of ``index/`` is looked at, and nothing is yielded."""
    def finding(code: str, severity: str, path: str, message: str) -> None:
        if ctx is not None:
            ctx.add(code, severity, ctx.rel(path), message)

    if not os.path.isdir(index_root) or os.path.islink(index_root):
        if os.path.lexists(index_root):
            finding("index-unsafe-name", "error", index_root, "index/ is not a plain folder; reindex rebuilds it")
        return
    now = time.time()
    for top in sorted(os.scandir(index_root), key=lambda e: e.name):
        if top.name == "CHECKPOINT" and top.is_file(follow_symlinks=False):
            continue
        if top.name in ("types", "tags", "ids") and top.is_dir(follow_symlinks=False):
            if deep:
                yield from _kind_files(top.name, top.path, finding, now)
            continue
        stale = stale_temp(top.name, top.path, now)
        if stale is not None:
            if stale:
                finding("stale-temp-file", "warning", top.path, "a temp file left by a writer that is gone")
            continue
        if top.is_symlink():
            finding("index-unsafe-name", "error", top.path, "a symbolic link inside index/ may point anywhere")
        else:
            finding("stray-file", "warning", top.path, "not part of the index layout; reindex sets it aside")


def _kind_files(kind: str, folder: str, finding: Callable[[str, str, str, str], None],
                now: float) -> Iterator[IndexFile]:
    with os.scandir(folder) as it:  # streamed, not sorted: a folder may hold millions of names
        yield from _named_files(kind, folder, it, finding, now)


def _named_files(kind: str, folder: str, entries: Iterable[os.DirEntry[str]],
                 finding: Callable[[str, str, str, str], None], now: float) -> Iterator[IndexFile]:
    for entry in entries:
        name = entry.name
        stale = stale_temp(name, entry.path, now)
        if stale is not None:
            if stale:
                finding("stale-temp-file", "warning", entry.path, "a temp file left by a writer that is gone")
            continue
        if not entry.is_file(follow_symlinks=False):
            finding("index-unsafe-name", "error", entry.path,
                    "not a plain file (a link or a folder inside the index may point anywhere)")
            continue
        if kind == "ids":
            if _BUCKET_RE.match(name):
                yield kind, name[:-4], entry.path
            else:
                finding("index-unsafe-name", "error", entry.path, "not an id bucket name (xyz.ids)")
            continue
        stem, dot, suffix = name.rpartition(".")
        if dot and suffix == "name" and _HASHED_RE.match(stem):
            continue  # the full name of a hashed file name, checked with its .pos file
        decoded = None
        if dot and suffix == "pos":
            decoded = _hashed_name(folder, stem) if stem.startswith("~") else _decode(stem)
        if decoded is None:
            finding("index-unsafe-name", "error", entry.path,
                    "not a valid encoding of a type or tag name (or a hashed name without its .name)")
            continue
        yield kind, decoded, entry.path


CHUNK = 13 * 20_000  # files are read in chunks of whole .pos lines: memory stays flat
_LITERAL_NAME = re.compile(r"\A[A-Za-z0-9_:-][A-Za-z0-9_:.-]{0,179}\Z")


def _decode(stem: str) -> str | None:
    """:func:`~kroniko_ops.index.decode_name`, with a fast path for names that encode as
    themselves (most types and tags)."""
    return stem if _LITERAL_NAME.match(stem) else decode_name(stem)


def _lines(fd: int, offset: int) -> Iterator[bytes]:
    """The lines of a file from ``offset`` (without their ``\\n``), read in chunks; a last line
    without ``\\n`` is yielded with a trailing ``\\0`` so that it never parses."""
    carry = b""
    while True:
        chunk = os.pread(fd, CHUNK, offset)
        if not chunk:
            break
        offset += len(chunk)
        parts = (carry + chunk).split(b"\n")
        carry = parts.pop()
        yield from parts
    if carry:
        yield carry + b"\0"


def _fast_positions(data: bytes, prev: int) -> list[int] | None:
    """The positions of well-formed ``.pos`` lines that ascend strictly from above ``prev``;
    None when anything is off (the line-by-line path then says what)."""
    n = len(data)
    if n % 13 or data.translate(None, b"0123456789\n") or data.count(b"\n") != n // 13 \
            or data[12::13].count(b"\n") != n // 13:
        return None
    positions = [int(data[i : i + 12]) for i in range(0, n, 13)]
    if positions[0] <= prev or not all(map(int.__lt__, positions, positions[1:])):
        return None
    return positions


def parse_file(ctx: Context | None, kind: str, name: str, path: str, upto: int) -> Iterator[tuple[int, str | None]]:
    """``(position, id)`` of each line at or below ``upto`` (id None in ``.pos`` files). With a
    ``ctx``, report lines out of order and lines that are not index lines (unless they trail
    every line at or below ``upto``: a dead writer's unfinished append, cut by the next one).

    ``.pos`` files are checked a chunk at a time with C-level operations; from the first chunk
    that is not perfect on, lines are parsed one by one to say what is wrong.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # removed by a reindex swapping the index meanwhile
    try:
        offset = prev = lines = 0
        if kind != "ids":
            while True:
                data = os.pread(fd, CHUNK, offset)
                fast = _fast_positions(data, prev) if data else None
                if fast is None:
                    break
                for pos in fast[: bisect.bisect_right(fast, upto)]:
                    yield pos, None
                prev, offset, lines = fast[-1], offset + len(data), lines + len(fast)
            if not data:
                return
        yield from _parse_lines(ctx, kind, name, path, upto, _lines(fd, offset), lines, prev)
    finally:
        os.close(fd)


def _parse_lines(ctx: Context | None, kind: str, name: str, path: str, upto: int, lines: Iterable[bytes],
                 skipped: int = 0, prev: int = 0) -> Iterator[tuple[int, str | None]]:
    """The line-by-line parse of :func:`parse_file`, after ``skipped`` good lines up to ``prev``."""
    last_in = 0
    beyond = prev > upto
    garbled: list[int] = []
    disorder: int | None = None
    bucket = name + ".ids"
    for n, line in enumerate(lines, skipped + 1):
        eid = None
        if kind == "ids":
            head, _, raw_id = line.partition(b" ")
            eid = raw_id.decode("ascii", "replace")
            # An id filed in the wrong bucket is never found by a reader: not a valid line.
            ok = len(head) == 12 and head.isdigit() and ID_RE.match(eid) is not None and id_bucket(eid) == bucket
        else:
            head = line
            ok = len(head) == 12 and head.isdigit()
        if not ok:
            if len(garbled) < 1000:
                garbled.append(n)
            continue
        pos = int(head)
        if pos > upto:
            beyond = True
            continue
        if (beyond or pos < prev) and disorder is None:
            disorder = n
        prev, last_in = max(prev, pos), n
        yield pos, eid
    if ctx is None:
        return
    bad = [g for g in garbled if g < last_in]
    if bad:
        ctx.add("index-extra-entry", "error", ctx.rel(path),
                f"line {bad[0]} (and {len(bad) - 1} more) is not an index line; reindex rebuilds the index",
                None)
    if disorder is not None:
        ctx.add("index-extra-entry", "error", ctx.rel(path),
                f"line {disorder} is out of order (positions must ascend); reindex rebuilds the index")


def check_index(ctx: Context, index_root: str, upto: int, expected: Digest | None, skip: set[int],
                expected_entries: Callable[[], Iterable[Entry]] | None) -> bool:
    """Check the index folder; with ``expected`` (the full check), also its content up to
    ``upto``; without (the quick check) only its top level. Returns True when no problem was
    found. Index lines at positions in ``skip`` (events that cannot be read) are left out."""
    before = ctx.problems
    if expected is None:
        for _ in index_files(ctx, index_root, deep=False):
            pass
        return ctx.problems == before
    total = count = 0
    for kind, name, path in progress(index_files(ctx, index_root), None, "fsck: index files", ctx.quiet):
        key = KIND_KEYS.get(kind, ID_KEY)
        if kind == "ids":
            for pos, eid in parse_file(ctx, kind, name, path, upto):
                if pos not in skip:
                    total += hash((key, eid, pos))
                    count += 1
        else:
            for pos, _ in parse_file(ctx, kind, name, path, upto):
                if pos not in skip:
                    total += hash((key, name, pos))
                    count += 1
    actual = Digest()
    actual.total, actual.count = total & MASK64, count
    if actual != expected and expected_entries is not None:
        _diff(ctx, index_root, upto, skip, expected_entries(), max(expected.count, actual.count))
    return ctx.problems == before


def _diff(ctx: Context, index_root: str, upto: int, skip: set[int], entries: Iterable[Entry],
          size: int) -> None:
    """Name the exact missing and extra lines, file by file, through a disk spill."""
    with Spill(size) as spill:
        for pos, eid, etype, tags in entries:
            spill.put(("types", etype), [0, "types", etype, pos, None])
            for tag in dict.fromkeys(tags):
                spill.put(("tags", tag), [0, "tags", tag, pos, None])
            bucket = id_bucket(eid)[:-4]
            spill.put(("ids", bucket), [0, "ids", bucket, pos, eid])
        for kind, name, path in index_files(None, index_root):
            for pos, eid in parse_file(None, kind, name, path, upto):
                if pos not in skip:
                    spill.put((kind, name), [1, kind, name, pos, eid])
        for rows in spill.partitions():
            sides: dict[tuple[str, str], tuple[Counter[tuple[int, str | None]], Counter[tuple[int, str | None]]]] = {}
            for side, kind, name, pos, eid in rows:
                pair = sides.setdefault((kind, name), (Counter(), Counter()))
                pair[side][(pos, eid)] += 1
            for (kind, name), (exp, act) in sorted(sides.items()):
                rel = _rel_path(ctx, index_root, kind, name)
                for code, diff, verb in (("index-missing-entry", exp - act, "lacks"),
                                         ("index-extra-entry", act - exp, "holds")):
                    if diff:
                        positions = sorted(p for p, _ in diff.elements())
                        shown = ", ".join(map(str, positions[:10])) + (" ..." if len(positions) > 10 else "")
                        implied = "that the log implies" if verb == "lacks" else "that the log does not imply"
                        ctx.add(code, "error", rel,
                                f"{verb} {len(positions)} line(s) {implied} (positions {shown}); "
                                "reindex rebuilds the index", positions[0])


def _rel_path(ctx: Context, index_root: str, kind: str, name: str) -> str:
    if kind == "ids":
        return ctx.rel(os.path.join(index_root, "ids", name + ".ids"))
    return ctx.rel(os.path.join(index_root, kind, encode_name(name) + ".pos"))


def checkpoint_findings(ctx: Context, cp: Checkpoint | None, problem: str | None, head: int) -> None:
    """Report a checkpoint that is unreadable or past the head."""
    if problem is not None:
        ctx.add("index-checkpoint-bad", "warning", "index/CHECKPOINT",
                f"the checkpoint {problem}; readers and writers then trust none of the index; reindex "
                "rebuilds it")
    elif cp is not None and cp.written > head:
        ctx.add("index-checkpoint-ahead", "error", "index/CHECKPOINT",
                f"the checkpoint says position {cp.written} is indexed but the log ends at {head}; "
                "writers refuse to append until reindex rebuilds the index", cp.written)
    elif cp is not None and cp.boot != BOOT_ID and cp.durable < cp.written:
        ctx.add("index-behind", "info", "index/CHECKPOINT",
                f"written on another boot: only positions up to {cp.durable} are trusted; the next append "
                "or recover catches up")
