"""Reading a backup, folder or tar archive, and refusing hostile archives.

:class:`Container` gives the same view of both: the manifest's bytes, the entries found (with
what makes one unfit: a link, a device, an unknown name), each file's bytes in chunks, and a
real file for a container the format modules must open by path (a pack; for an archive, the
member copied to a temp file that disappears after use).

:func:`check_archive` refuses, before a single byte is extracted, an archive with any member that
is not a plain file of the backup layout named safely (absolute paths, ``..``, links, devices,
FIFOs, unknown or repeated names, plus ``tarfile``'s own ``data`` extraction filter), members
whose size differs from the manifest, and an archive that does not fit where it goes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from ... import fileio
from ...errors import InvalidArgument
from .manifest import DIRS, FILE_RE, MANIFEST, MAX_MANIFEST_BYTES, Manifest, ManifestError, parse

CHUNK = 1 << 20


class UnsafeArchive(InvalidArgument):
    """An archive restore refuses to extract (link, device, escaping or unknown path, oversized
    member); nothing was written."""


@dataclass
class Found:
    """One entry found in a backup: its relative name, whether a folder, and why it is unfit."""

    rel: str
    is_dir: bool
    problem: str = ""


# Magic numbers of the compressors people run over an archive before storing it.
_COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip -k"), (b"BZh", "bzip2", "bunzip2 -k"),
               (b"\xfd7zXZ\x00", "xz", "unxz -k"), (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"))


def refuse_compressed(path: str) -> None:
    """Refuse (bad input, exit 2) an archive that was compressed after it was written: backups
    are read as uncompressed tar only, and a compressed one is not damaged."""
    try:
        fd = fileio.open_read(path)
    except OSError:
        return  # not a regular file we can open: reading it says what is wrong
    try:
        head = os.pread(fd, 6, 0)
    finally:
        os.close(fd)
    for magic, name, tool in _COMPRESSED:
        if head.startswith(magic):
            raise InvalidArgument(f"{path} is a {name}-compressed file, not an uncompressed tar archive: decompress "
                                  f"it first ({tool} {path}), then give the .tar; nothing was read or written")


def is_archive(path: str) -> bool:
    """True when ``path`` is a file (a backup archive) rather than a backup folder."""
    return os.path.isfile(path)


class Container:
    """A backup folder or archive opened for reading."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        self.damage = ""
        self._found: list[Found] = []
        if is_archive(path):
            refuse_compressed(path)
            self._open_archive()
        elif not os.path.isdir(path):
            raise FileNotFoundError(f"no backup at {path}")

    def _open_archive(self) -> None:
        try:
            self.tar = tarfile.open(self.path, mode="r:")
            members = self.tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            self.damage = f"{self.path} is not a readable uncompressed tar archive ({exc})"
            return
        for m in members:
            name = m.name.rstrip("/") if m.isdir() else m.name
            problem = "" if m.isreg() or m.isdir() else _kind(m)
            if name in self.members:
                problem = "a second member of that name"
            else:
                self.members[name] = m
            self._found.append(Found(name, m.isdir(), problem))

    def close(self) -> None:
        """Release the archive."""
        if self.tar is not None:
            self.tar.close()
            self.tar = None

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifest_bytes(self) -> bytes:
        """The manifest's bytes; FileNotFoundError when there is none, ManifestError when it is
        not a plain file of a sane size."""
        if self.tar is None:
            if self.damage:
                raise ManifestError(self.damage)
            path = os.path.join(self.path, MANIFEST)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{path} is not a regular file of a sane size")
            return fileio.read_small(path, MAX_MANIFEST_BYTES)
        m = self.members.get(MANIFEST)
        if m is None:
            raise FileNotFoundError(MANIFEST)
        if not m.isreg() or m.size > MAX_MANIFEST_BYTES:
            raise ManifestError("the archive's MANIFEST.json is not a regular member of a sane size")
        return b"".join(self.chunks(MANIFEST))

    def manifest(self) -> Manifest:
        """The checked manifest (raises FileNotFoundError or ManifestError)."""
        return parse(self.manifest_bytes())

    def entries(self) -> list[Found]:
        """Every file and folder found (the manifest included)."""
        if self.tar is not None or self.damage:
            return list(self._found)
        out: list[Found] = []
        stack = [("", self.path)]
        while stack:
            prefix, folder = stack.pop()
            with os.scandir(folder) as it:
                for entry in it:
                    rel = prefix + entry.name
                    if entry.is_symlink():
                        out.append(Found(rel, False, "a symbolic link"))
                    elif entry.is_dir(follow_symlinks=False):
                        out.append(Found(rel, True))
                        stack.append((rel + "/", entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        out.append(Found(rel, False))
                    else:
                        out.append(Found(rel, False, "not a regular file (a device, FIFO or socket)"))
        return out

    def size(self, rel: str) -> int:
        """The size of the file ``rel``."""
        if self.tar is not None:
            return self.members[rel].size
        return os.lstat(os.path.join(self.path, rel)).st_size

    def chunks(self, rel: str) -> Iterator[bytes]:
        """The bytes of file ``rel`` in chunks."""
        if self.tar is not None:
            f = self.tar.extractfile(self.members[rel])
            if f is None:
                raise OSError(f"{rel} is not a regular member of {self.path}")
            with f:
                while chunk := f.read(CHUNK):
                    yield chunk
            return
        fd = fileio.open_read(os.path.join(self.path, rel))
        try:
            while chunk := os.read(fd, CHUNK):
                yield chunk
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def real_path(self, rel: str) -> Iterator[str]:
        """A path holding the bytes of ``rel``: the file itself in a folder, a temp copy of an
        archive member (removed on exit)."""
        if self.tar is None:
            yield os.path.join(self.path, rel)
            return
        with tempfile.TemporaryDirectory(prefix="kroniko-verify-") as tmp:
            path = os.path.join(tmp, os.path.basename(rel))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                for chunk in self.chunks(rel):
                    os.write(fd, chunk)
            finally:
                os.close(fd)
            yield path


def _kind(member: tarfile.TarInfo) -> str:
    for test, name in ((member.issym, "a symbolic link"), (member.islnk, "a hard link"),
                       (member.ischr, "a character device"), (member.isblk, "a block device"),
                       (member.isfifo, "a FIFO")):
        if test():
            return name
    return "not a regular file or folder"


def check_archive(path: str, dest: str) -> Manifest:
    """Refuse the archive at ``path`` unless every member is a plain file or folder of the
    backup layout, named safely, listed in its manifest with that size, and the whole fits in
    the free space at ``dest``'s folder; returns the manifest. Raises :class:`UnsafeArchive`
    (exit 2); reads headers and the manifest only, writes nothing."""
    refuse_compressed(path)
    try:
        tar = tarfile.open(path, mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise UnsafeArchive(f"{path} is not a readable uncompressed tar archive ({exc}); "
                            "nothing was extracted") from None
    seen: set[str] = set()
    try:
        for m in members:
            _check_member(path, m, dest, seen)
        with Container(path) as c:
            try:
                manifest = c.manifest()
            except (FileNotFoundError, ManifestError) as exc:
                raise UnsafeArchive(f"archive {path}: its manifest does not check ({exc}); "
                                    "nothing was extracted") from None
    finally:
        tar.close()
    total = 0
    for m in members:
        if m.isdir() or m.name == MANIFEST:
            continue
        entry = manifest.files.get(m.name)
        where = f"archive {path}: member {m.name!r}"
        if entry is None or entry.in_base:
            raise UnsafeArchive(f"{where} is not a file the manifest says this archive holds; nothing was extracted")
        if m.size != entry.size:
            raise UnsafeArchive(f"{where} is {m.size} bytes but the manifest says {entry.size}; nothing was extracted")
        total += m.size
    folder = os.path.dirname(os.path.abspath(dest)) or "/"
    free = shutil.disk_usage(folder if os.path.isdir(folder) else "/").free
    if total > free:
        raise UnsafeArchive(f"archive {path} needs {total} bytes but only {free} are free at {folder}")
    return manifest


def _check_member(path: str, m: tarfile.TarInfo, dest: str, seen: set[str]) -> None:
    name = m.name
    where = f"archive {path}: member {name!r}"
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeArchive(f"{where} has an absolute path; refused, nothing was extracted")
    if ".." in name.split("/") or "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"{where} escapes the target with '..'; refused, nothing was extracted")
    if not (m.isreg() or m.isdir()):
        raise UnsafeArchive(f"{where} is {_kind(m)}; only files and folders are restored, nothing was extracted")
    try:
        tarfile.data_filter(m, dest)
    except tarfile.FilterError as exc:
        raise UnsafeArchive(f"{where} is refused by tarfile's data filter ({exc}); nothing was extracted") from None
    clean = name.rstrip("/")
    if not (clean in DIRS if m.isdir() else (clean == MANIFEST or FILE_RE.match(clean))):
        raise UnsafeArchive(f"{where} is not part of a backup's layout; refused, nothing was extracted")
    if clean in seen:
        raise UnsafeArchive(f"{where} appears twice; refused, nothing was extracted")
    seen.add(clean)
    if clean == MANIFEST and m.size > MAX_MANIFEST_BYTES:
        raise UnsafeArchive(f"{where} is {m.size} bytes, over the {MAX_MANIFEST_BYTES} limit; nothing was extracted")
