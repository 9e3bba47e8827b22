"""The SQL of a DCB read: candidate positions through the tag table or the ``(type, position)``
index, then the exact rule (any item matches: its types any-of, its tags all-of) on the event row."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ..errors import InvalidArgument
from ..model import Query


def select(events: sql.Composable, tags: sql.Composable, query: Query, lo: int, hi: int, backwards: bool,
           limit: int, columns: str = "e.position, e.body") -> tuple[Any, list[Any]]:
    """SQL for the matching rows of ``lo..hi``: candidates through the tag table and the
    (type, position) index, then the exact DCB rule on the event row."""
    params: list[Any] = [lo, hi]
    where = [sql.SQL("e.position BETWEEN %s AND %s")]
    if not query.is_all:
        cands, exact = [], []
        for item in query.items:
            terms = []
            if item.tags:
                cands.append(sql.SQL("SELECT position FROM {} WHERE tag = %s AND position BETWEEN %s AND %s")
                             .format(tags))
                params.extend((item.tags[0], lo, hi))
            else:
                cands.append(sql.SQL("SELECT position FROM {} WHERE type = ANY(%s) AND position BETWEEN %s AND %s")
                             .format(events))
                params.extend((list(item.types), lo, hi))
            if item.types:
                terms.append(sql.SQL("e.type = ANY(%s)"))
            if item.tags:
                terms.append(sql.SQL("e.tags @> %s::text[]"))
            exact.append((terms, item))
        where.append(sql.SQL("e.position IN ({})").format(sql.SQL(" UNION ALL ").join(cands)))
        ors = []
        for terms, item in exact:
            ors.append(sql.SQL("({})").format(sql.SQL(" AND ").join(terms)))
            if item.types:
                params.append(list(item.types))
            if item.tags:
                params.append(list(item.tags))
        where.append(sql.SQL("({})").format(sql.SQL(" OR ").join(ors)))
    order = sql.SQL("DESC" if backwards else "ASC")
    q = sql.SQL("SELECT {} FROM {} e WHERE {} ORDER BY e.position {} LIMIT %s").format(
        sql.SQL(columns), events, sql.SQL(" AND ").join(where), order)
    params.append(limit)
    return q, params


def check_text(value: str, what: str, error: type[Exception] = InvalidArgument) -> None:
    """Refuse a NUL character, which PostgreSQL's text cannot hold (the file store can)."""
    if "\x00" in value:
        raise error(f"{what} {value!r} contains a NUL character, which a PostgreSQL store cannot hold")


def check_query(query: Query) -> None:
    """:func:`check_text` on every type and tag of a query."""
    for item in query.items:
        for value in (*item.types, *item.tags):
            check_text(value, "query term")
