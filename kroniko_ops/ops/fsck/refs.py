"""References between events (``dangling-reference``, a warning): ``metadata.causation_id``, the
store's own reference fields (recorded in ``FORMAT`` at ``init``) and any ``--ref-field`` path
name an event id that must be in the store, at the referencing event's position or before it (a
root event's correlation id is often its own id). ``metadata.correlation_id`` usually names a
request or a command rather than an event, so it is checked only when asked. References and
the ids they need are kept in the scratch database, so memory stays flat; ids are looked up in
the index where it is trusted, else among the ids the walk spilled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...layout import check_ref_field
from .context import MAX_FINDINGS_PER_CODE, Context
from .spill import Spill

DEFAULT_FIELDS = ("metadata.causation_id",)
_NONE = 1 << 62


def parse_fields(extra: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The reference fields to follow as ``(dotted path, keys)``; raises InvalidArgument for a
    path that does not start with ``data.`` or ``metadata.``."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for path in (*DEFAULT_FIELDS, *extra):
        keys = tuple(check_ref_field(path).split("."))
        if path not in (p for p, _ in out):
            out.append((path, keys))
    return out


class RefCheck:
    """Collects references during the walk, then names those that dangle."""

    def __init__(self, ctx: Context, spill: Spill, fields: list[tuple[str, tuple[str, ...]]]) -> None:
        self.ctx, self.spill, self.fields = ctx, spill, fields
        self.count = 0

    def sink(self, rows: list[tuple[int, str, dict[str, Any]]]) -> None:
        """Keep the references of a run's sound records."""
        for path, keys in self.fields:
            root, rest = keys[0], keys[1:]
            for pos, _eid, doc in rows:
                value: Any = doc[root]
                if not value:
                    continue
                for key in rest:
                    if type(value) is not dict:
                        value = None
                        break
                    value = value.get(key)
                if value is None:
                    continue
                for target in value if type(value) is list else (value,):
                    if type(target) is str:
                        self.spill.add_ref(pos, path, target)
                        self.count += 1

    def finish(self, indexed_upto: int) -> None:
        """Report every reference to an id absent from the store or at a later position.
        ``indexed_upto``: ids of positions up to there are looked up in the index (0: only in
        the ids the walk spilled)."""
        self.ctx.report.figures["references_checked"] = self.count
        if not self.spill.has_refs():
            return
        con = self.spill.con
        via_index = (f"(SELECT position FROM idx.ids WHERE eid = r.target AND position <= {int(indexed_upto)})"
                     if indexed_upto > 0 and self.spill.attached else "NULL")
        sql = (f"SELECT DISTINCT src, field, target, at FROM (SELECT r.src, r.field, r.target, min("
               f"coalesce((SELECT min(position) FROM log_ids WHERE eid = r.target), {_NONE}), "
               f"coalesce({via_index}, {_NONE})) AS at FROM refs r) WHERE at > src "
               f"ORDER BY src LIMIT {MAX_FINDINGS_PER_CODE + 1}")
        for src, field, target, at in con.execute(sql).fetchall():  # all or nothing if SQLite fails
            where = "is in no event of the store" if at >= _NONE else f"is the id of a later event (position {at})"
            self.ctx.add("dangling-reference", "warning", "log", f"the event at position {src} names {target!r} in "
                         f"{field}, which {where}", src)
