"""Backup archives: the tar format backup writes, and reading archives back safely.

A backup archive is an uncompressed POSIX tar (ustar, plus a pax ``x`` header when a name is
over 100 bytes or a size over 8 GiB) whose every header is a pure function of the member's
name, size and type and of the manifest's ``created_at`` (mode by path, uid/gid 0, no owner
names): :func:`member_header` writes it, and verification rebuilds and compares it byte for
byte, so no byte of an archive goes unchecked. The headers are generated here rather than by
``tarfile`` so that they do not change with the Python version; ``tarfile`` reads them.

Reading: :func:`open_archive` lists the members (headers only), :func:`check_members` refuses
anything but plain files and folders of the store layout (absolute paths, ``..``, links,
devices, FIFOs, unknown or repeated names, plus ``tarfile``'s own ``data`` extraction filter)
and :func:`check_sizes` members whose size differs from the manifest, oversized events, or an
archive that does not fit, all before a single byte is written.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass

from ..errors import InvalidArgument
from .manifest import DIR_RE, FILE_RE, MANIFEST, MAX_MANIFEST_BYTES, Manifest

CHUNK = 4 << 20
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
_MAX_OCTAL_SIZE = 8**11 - 1
PAX_NAME = b"././@PaxHeader"


class UnsafeArchive(InvalidArgument):
    """An archive member that restore refuses to extract (link, device, escaping or unknown path,
    oversized); nothing was written."""


def mode_for(rel: str, is_dir: bool = False) -> int:
    """Permission bits of a backup file: events and packs are read-only, as in a store."""
    if is_dir:
        return 0o755
    return 0o444 if rel.startswith(("events/", "packs/")) else 0o644


_USTAR_MID = b"".join((b"%07o\0" % 0, b"%07o\0" % 0))  # uid, gid
_USTAR_TAIL = bytes(100) + b"ustar\x0000" + bytes(64 + 16 + 155 + 12)  # no owner names, no device numbers
_TAIL_SUM = sum(_USTAR_TAIL) + 8 * 32  # the tail, and the checksum field counted as spaces


def _ustar(name: bytes, size: int, mtime: int, mode: int, typeflag: bytes) -> bytes:
    """One ustar header block (fields as POSIX and GNU tar write them: octal numbers with a NUL,
    checksum as six digits, NUL, space)."""
    head = (name[:100].ljust(100, b"\0") + b"%07o\0" % mode + _USTAR_MID
            + b"%011o\0%011o\0" % (min(size, _MAX_OCTAL_SIZE), mtime))
    return head + b"%06o\0 " % (sum(head) + typeflag[0] + _TAIL_SUM) + typeflag + _USTAR_TAIL


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body)
    while True:  # the length counts its own digits
        total = len(body) + len(str(length))
        if total == length:
            return str(length).encode() + body
        length = total


def padding(size: int) -> bytes:
    """Zeros that bring ``size`` bytes of member data to a whole block."""
    return bytes(-size % BLOCK)


def member_header(rel: str, size: int, mtime: int, is_dir: bool = False) -> bytes:
    """The header bytes (pax header included when needed) of one backup archive member."""
    name = rel.encode("ascii") + (b"/" if is_dir else b"")
    size = 0 if is_dir else size
    typeflag = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    records = b""
    if len(name) > 100:
        records += _pax_record(b"path", name)
    if size > _MAX_OCTAL_SIZE:
        records += _pax_record(b"size", str(size).encode())
    head = _ustar(name, size, mtime, mode_for(rel, is_dir), typeflag)
    if not records:
        return head
    pax = _ustar(PAX_NAME, len(records), mtime, 0o644, tarfile.XHDTYPE)
    return pax + records + padding(len(records)) + head


def end_of_archive(size: int) -> bytes:
    """Two zero blocks, then zeros up to a whole tar record, after ``size`` bytes of archive."""
    end = size + 2 * BLOCK
    return bytes(2 * BLOCK + (-end % RECORD))


def is_archive(path: str) -> bool:
    """True when ``path`` is a file (a backup archive) rather than a backup folder."""
    return os.path.isfile(path)


def open_archive(path: str) -> tuple[tarfile.TarFile, list[tarfile.TarInfo]]:
    """Open an uncompressed tar and read every member header (no data is read)."""
    try:
        tar = tarfile.open(path, mode="r:")
        return tar, tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise UnsafeArchive(f"{path} is not a readable uncompressed tar archive ({exc})") from None


def _kind(member: tarfile.TarInfo) -> str:
    for test, name in ((member.issym, "a symbolic link"), (member.islnk, "a hard link"),
                       (member.ischr, "a character device"), (member.isblk, "a block device"),
                       (member.isfifo, "a FIFO")):
        if test():
            return name
    return "not a regular file or folder"


def check_members(path: str, members: list[tarfile.TarInfo], dest: str) -> None:
    """Refuse an archive with any member that is not a plain file or folder of the backup layout,
    named safely; runs before anything is extracted. Raises :class:`UnsafeArchive`."""
    seen: set[str] = set()
    for m in members:
        name = m.name
        where = f"archive {path}: member {name!r}"
        if name.startswith("/") or os.path.isabs(name):
            raise UnsafeArchive(f"{where} has an absolute path; refused, nothing was extracted")
        if ".." in name.split("/") or "\\" in name or "\x00" in name:
            raise UnsafeArchive(f"{where} escapes the target with '..'; refused, nothing was extracted")
        if not (m.isreg() or m.isdir()):
            raise UnsafeArchive(f"{where} is {_kind(m)}; only files and folders are restored, nothing "
                                "was extracted")
        try:
            tarfile.data_filter(m, dest)
        except tarfile.FilterError as exc:
            raise UnsafeArchive(f"{where} is refused by tarfile's data filter ({exc})") from None
        known = DIR_RE.match(name) if m.isdir() else (name == MANIFEST or FILE_RE.match(name))
        if not known:
            raise UnsafeArchive(f"{where} is not part of a backup's layout; refused, nothing was extracted")
        if name in seen:
            raise UnsafeArchive(f"{where} appears twice; refused, nothing was extracted")
        seen.add(name)
        if name == MANIFEST and m.size > MAX_MANIFEST_BYTES:
            raise UnsafeArchive(f"{where} is {m.size} bytes, over the {MAX_MANIFEST_BYTES} limit")


def check_sizes(path: str, members: list[tarfile.TarInfo], manifest: Manifest, dest_dir: str) -> None:
    """Refuse members whose size differs from the manifest, events over the store's limit, and an
    archive that does not fit in the free space at ``dest_dir``."""
    total = 0
    for m in members:
        if m.isdir() or m.name == MANIFEST:
            continue
        entry = manifest.files.get(m.name)
        where = f"archive {path}: member {m.name!r}"
        if entry is None:
            raise UnsafeArchive(f"{where} is not listed in the manifest; refused, nothing was extracted")
        if m.size != entry.size:
            raise UnsafeArchive(f"{where} is {m.size} bytes but the manifest says {entry.size}; refused")
        if m.name.startswith("events/") and m.size > manifest.max_event_bytes:
            raise UnsafeArchive(f"{where} is {m.size} bytes, over the event limit {manifest.max_event_bytes}")
        total += m.size
    free = shutil.disk_usage(dest_dir).free
    if total > free:
        raise UnsafeArchive(f"archive {path} needs {total} bytes but only {free} are free at {dest_dir}")


# -- walking an archive the way backup writes it (verification) ---------------------------


@dataclass
class Member:
    """One member found by :func:`scan_archive`: where its headers and data are."""

    name: str
    offset: int  # first header byte (the pax header when there is one)
    data: int  # first data byte
    size: int
    typeflag: bytes

    @property
    def is_dir(self) -> bool:
        """A folder member."""
        return self.typeflag == tarfile.DIRTYPE

    @property
    def is_file(self) -> bool:
        """A regular file member."""
        return self.typeflag in (tarfile.REGTYPE, tarfile.AREGTYPE)


class ArchiveDamaged(ValueError):
    """The archive stops being readable at some byte (the walk cannot go on)."""


def _octal(field: bytes) -> int:
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text or not text.isdigit() or b"8" in text or b"9" in text:
        raise ArchiveDamaged(f"header field {field!r} is not an octal number")
    return int(text, 8)


def _pax(records: bytes) -> dict[bytes, bytes]:
    out = {}
    pos = 0
    while pos < len(records):
        space = records.find(b" ", pos)
        if space < 0 or not records[pos:space].isdigit():
            raise ArchiveDamaged("a pax header record does not parse")
        end = pos + int(records[pos:space])
        if end > len(records) or end <= space or records[end - 1 : end] != b"\n" or b"=" not in records[space:end]:
            raise ArchiveDamaged("a pax header record does not parse")
        key, _, value = records[space + 1 : end - 1].partition(b"=")
        out[key] = value
        pos = end
    return out


def scan_archive(fd: int, file_size: int) -> tuple[list[Member], int]:
    """Walk the member headers of an archive (no data is read); return the members and the byte
    where the end-of-archive blocks start. Raises :class:`ArchiveDamaged` (with what was found so
    far in ``args[1]``) where the walk cannot go on."""
    members: list[Member] = []
    pos = 0
    try:
        while True:
            block = os.pread(fd, BLOCK, pos)
            if len(block) < BLOCK:
                raise ArchiveDamaged(f"the archive ends inside a header at byte {pos} (truncated)")
            if not any(block):
                return members, pos
            start, typeflag, extra = pos, block[156:157], {}
            if typeflag == tarfile.XHDTYPE:
                n = _octal(block[124:136])
                if n > 1 << 20 or pos + BLOCK + n > file_size:
                    raise ArchiveDamaged(f"the pax header at byte {pos} is oversized or truncated")
                extra = _pax(os.pread(fd, n, pos + BLOCK))
                pos += BLOCK + n + (-n % BLOCK)
                block = os.pread(fd, BLOCK, pos)
                if len(block) < BLOCK:
                    raise ArchiveDamaged(f"the archive ends inside a header at byte {pos} (truncated)")
                typeflag = block[156:157]
            raw_name = extra.get(b"path", block[:100].split(b"\0", 1)[0])
            size = int(extra[b"size"]) if b"size" in extra and extra[b"size"].isdigit() else _octal(block[124:136])
            name = raw_name.decode("utf-8", "replace")
            if typeflag == tarfile.DIRTYPE:
                name = name.rstrip("/")
            data = pos + BLOCK
            stored = size if typeflag in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            if data + stored > file_size:
                raise ArchiveDamaged(f"member {name!r} runs past the end of the archive (truncated)")
            members.append(Member(name, start, data, stored, typeflag))
            pos = data + stored + (-stored % BLOCK)
    except ArchiveDamaged as exc:
        raise ArchiveDamaged(str(exc), members) from None
