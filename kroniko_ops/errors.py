"""One exception tree, rooted at :class:`KronikoError`.

Every class carries the CLI exit code it maps to (the README lists them), so the command line maps
exceptions to exit codes in one place, the way click's ``ClickException.exit_code`` does.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_REPAIRED = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_PROBLEMS = 4
EXIT_OPERATIONAL = 8


class KronikoError(Exception):
    """Base of every error kroniko-ops raises on purpose; an operational failure by default."""

    exit_code = EXIT_OPERATIONAL


class InvalidEvent(KronikoError, ValueError):
    """An event or a batch was refused before anything was written (bad type, tags, data, id, size)."""

    exit_code = EXIT_USAGE


class InvalidArgument(KronikoError, ValueError):
    """A caller passed a malformed query, option or path; nothing was written."""

    exit_code = EXIT_USAGE


class AppendConditionFailed(KronikoError):
    """An append's condition matched an event committed after ``after``; nothing was written.

    ``position`` is the first conflicting position.
    """

    exit_code = EXIT_CONFLICT

    def __init__(self, position: int, message: str | None = None) -> None:
        self.position = position
        super().__init__(
            message
            or f"append condition failed: position {position} matches the condition's query; "
            "read again, decide again, and retry with the new head as 'after'"
        )


class StoreLocked(KronikoError):
    """A lock could not be taken within its timeout."""


class StoreNotFound(KronikoError):
    """The path names no store (and the operation does not create one)."""


class NotAStore(StoreNotFound):
    """The path is a folder but holds no store (empty, or a creation that never finished), and
    the operation does not create one: bad usage (exit 2), nothing was written. A missing path
    stays :class:`StoreNotFound` (exit 8)."""

    exit_code = EXIT_USAGE


class StoreCorrupted(KronikoError):
    """The store is damaged in a way the operation cannot work around; run ``kroniko-ops fsck``."""

    exit_code = EXIT_PROBLEMS


class LegacyStore(KronikoError):
    """The path holds a store written by the Ruby kroniko (format 1), which is never written to."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} is a legacy Ruby kroniko store (format 1), which kroniko-ops never writes; "
            f"migrate it first: kroniko-ops migrate {path} NEW_STORE"
        )


class DurabilityError(KronikoError):
    """A write or fsync failed: the outcome of the operation is unknown and the handle is unusable.

    A failed fsync is never retried (the kernel may already have dropped the dirty pages); open a
    new :class:`~kroniko_ops.EventStore`, which recovers the log tail, and read to learn what
    was committed.
    """


class StoreClosed(KronikoError):
    """A call on a store handle after its ``close()``: open a new
    :class:`~kroniko_ops.EventStore` (nothing was read or written by the call)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"the store handle on {path} is closed; nothing was read or written: open a new "
                         f"EventStore({path!r}) to go on")


class NothingWritten(KronikoError):
    """An operation failed before it changed anything: a lock or file it needs could not be
    opened or created (disk full, permissions, too many open files). The store is as it was;
    fix the cause and retry. Never used once a write may have reached the disk: that is
    :class:`DurabilityError`."""


class AccessDenied(KronikoError):
    """A file of the store may not be read (or written) by this user: the check or the operation
    could not run (exit 8); nothing says the store is damaged."""


def denied(exc: OSError) -> bool:
    """True when ``exc`` is a permission refusal (EACCES, EPERM): the caller's rights, never
    damage to the file."""
    return exc.errno in (errno.EACCES, errno.EPERM)


def access_denied(path: str, exc: OSError) -> AccessDenied:
    """The error for a file of the store this user may not open."""
    return AccessDenied(f"cannot open {path}: {exc.strerror or exc}; run as a user who may read the whole store "
                        "(its owner, or one of its group); this says nothing about damage")


def out_of_files(exc: OSError) -> bool:
    """True when ``exc`` says the process or the system ran out of file descriptors (EMFILE,
    ENFILE): a limit of the caller, never damage to the file it was opening."""
    return exc.errno in (errno.EMFILE, errno.ENFILE)
