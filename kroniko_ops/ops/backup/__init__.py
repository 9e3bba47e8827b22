"""backup, verify-backup and restore on format 3 (``docs/RUNBOOK.md``).

:func:`backup` takes an online, consistent copy of a store at its synced head (a folder or a tar
archive, full or incremental), :func:`verify_backup` checks one against its manifest and its
log's chain, :func:`restore` builds a new store from one, up to a batch boundary.
:func:`backup_into`, :func:`scan` and :func:`prune` keep backups as a managed set (:mod:`.sets`).
"""

from .apply import restore
from .make import backup
from .prune import prune
from .sets import backup_into, scan
from .verify import verify_backup

__all__ = ["backup", "backup_into", "prune", "restore", "scan", "verify_backup"]
