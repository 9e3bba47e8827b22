"""Errors of the PostgreSQL store, under the project's one tree (:mod:`kroniko_ops.errors`)."""

from __future__ import annotations

from ..errors import EXIT_USAGE, DurabilityError, KronikoError


class ServerUnavailable(KronikoError):
    """The server could not be reached or refused the login (exit 8); the message never holds
    the URL's password."""


class SchemaMismatch(KronikoError):
    """The schema holds tables that are not a kroniko store, or a newer version of one (exit 2,
    nothing written)."""

    exit_code = EXIT_USAGE


class CommitUnknown(DurabilityError):
    """The connection broke during an append: it may or may not be committed (exit 8). Retry the
    same batch with the same ids (an exact retry of a committed batch returns its position), or
    read to find out; the store reconnects on its next call."""
