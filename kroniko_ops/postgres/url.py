"""PostgreSQL URLs: split off kroniko's own ``schema`` parameter and redact the password.

A URL's password never appears in output or errors: every message names a store through
:func:`redact`, and :func:`scrub` removes the password from text a driver produced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import InvalidArgument

SCHEMES = ("postgresql", "postgres")
_SCHEMA_RE = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")
DEFAULT_SCHEMA = "kroniko"


# libpq's connection keywords (a "host=... dbname=..." string names a database, never a folder).
KEYWORDS = frozenset((
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "channel_binding", "connect_timeout",
    "client_encoding", "options", "application_name", "fallback_application_name", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication", "gssencmode",
    "sslmode", "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword", "sslrootcert", "sslcrl",
    "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname",
    "gsslib", "service", "target_session_attrs", "load_balance_hosts", "sslnegotiation", "sslcertmode",
    "gssdelegation", "require_auth"))
_KEYWORD_RE = re.compile(r"\A\s*([A-Za-z_]+)\s*=")
_SCHEMA_KV_RE = re.compile(r"(?:\A|\s)schema\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def is_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL store rather than a folder: a ``postgresql://`` or
    ``postgres://`` URL, or a libpq keyword string (``host=/run/postgresql dbname=shop``)."""
    if not isinstance(target, str):
        return False
    if "://" in target and target.split("://", 1)[0].lower() in SCHEMES:
        return True
    m = _KEYWORD_RE.match(target)
    return m is not None and m.group(1).lower() in KEYWORDS | {"schema"}


@dataclass(frozen=True)
class PgUrl:
    """A parsed URL: ``conninfo`` for libpq (password included), ``schema`` for our tables,
    ``shown`` the URL with its password replaced by ``***``, ``password`` to scrub from messages."""

    conninfo: str
    schema: str
    shown: str
    password: str | None


def parse(url: str, schema: str | None = None) -> PgUrl:
    """Parse any connection string libpq accepts: ``postgresql://user:pw@host:port/db?...``,
    ``postgresql:///db?host=/run/postgresql`` (a Unix socket), ``postgresql://user@/db?host=...``,
    ``postgres://...``, or keywords ``host=... dbname=...``; plus kroniko's own ``schema``
    parameter (default ``kroniko``), which is taken out before libpq sees the string. Raise
    :class:`InvalidArgument` (with the password redacted) when malformed."""
    if not isinstance(url, str) or not is_url(url):
        raise InvalidArgument(f"not a postgresql:// URL: {redact(str(url))}")
    if "://" not in url:
        return _parse_keywords(url, schema)
    base, _qmark, raw_query = url.partition("?")
    raw_query, _hash, _fragment = raw_query.partition("#")
    query = parse_qsl(raw_query, keep_blank_values=True)
    chosen = schema or next((v for k, v in query if k == "schema"), None) or DEFAULT_SCHEMA
    _check_schema(chosen)
    # The query is kept as written, minus our own parameter: rebuilding the URL from its parts
    # would drop the "//" of an empty host (postgresql:///db?host=/run/postgresql).
    rest = "&".join(p for p in raw_query.split("&") if p and unquote(p.split("=", 1)[0]) != "schema")
    conninfo = base + ("?" + rest if rest else "")
    if not urlsplit(base).scheme:
        raise InvalidArgument(f"not a postgresql:// URL: {redact(url)}")
    password = _userinfo_password(url) or next((v for k, v in query if k == "password"), None)
    return PgUrl(conninfo, chosen, redact(url), password)


def _check_schema(name: str) -> None:
    if not _SCHEMA_RE.match(name):
        raise InvalidArgument(f"schema name {name!r} must be lower-case letters, digits and _")


def _parse_keywords(text: str, schema: str | None) -> PgUrl:
    """A libpq keyword string; ``schema=NAME`` among the keywords is ours."""
    m = _SCHEMA_KV_RE.search(text)
    given = None
    if m is not None:
        given = m.group(1).strip("'")
        text = (text[:m.start()] + " " + text[m.end():]).strip()
    chosen = schema or given or DEFAULT_SCHEMA
    _check_schema(chosen)
    pw = re.search(r"(?:\A|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", text)
    password = pw.group(1).strip("'") if pw is not None else None
    return PgUrl(text, chosen, redact(text), password or None)


def _userinfo_password(url: str) -> str | None:
    """The password of the user part as libpq or a reader might see it: between the first ``:``
    and the last ``@`` before the query (``urlsplit`` stops at an unescaped ``/``)."""
    head = url.partition("://")[2].partition("?")[0]
    at = head.rfind("@")
    if at < 0 or ":" not in head[:at]:
        return None
    return head[:at].split(":", 1)[1] or None


def display(target: str) -> str:
    """How a report names a target: a URL without its password, a folder as given."""
    return redact(target) if is_url(target) else target


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``: in the user part (which ends at the last
    ``@`` before the query, so an unescaped ``@`` or ``/`` in a password is covered too) and in
    ``password=`` / ``sslpassword=`` query parameters."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _QUERY_PASSWORD.sub(r"\1***", url)
    head, qmark, query = rest.partition("?")
    at = head.rfind("@")
    if at >= 0 and ":" in head[:at]:
        head = head[:at].split(":", 1)[0] + ":***" + head[at:]
    return scheme + sep + head + qmark + _QUERY_PASSWORD.sub(r"\1***", query)


_QUERY_PASSWORD = re.compile(r"((?:^|[&\s])(?:ssl)?password=)[^&\s]*", re.IGNORECASE)


def scrub(text: str, password: str | None) -> str:
    """``text`` without ``password`` (driver messages may quote a conninfo, or a piece of a
    password libpq split at an unescaped ``@``)."""
    text = re.sub(r"(://[^:/@\s]*:)\S*@", r"\1***@", text)
    text = re.sub(r"password=\S+", "password=***", text)
    if not password:
        return text
    for secret in {password, unquote(password)}:
        text = text.replace(secret, "***")
    for piece in re.split(r"[@/:?#]", password):
        if len(piece) >= 4:
            text = text.replace(piece, "***")
    return text
