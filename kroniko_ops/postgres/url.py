"""PostgreSQL URLs: split off kroniko's own ``schema`` parameter and redact the password.

A URL's password never appears in output or errors: every message names a store through
:func:`redact`, and :func:`scrub` removes the password from text a driver produced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..errors import InvalidArgument

SCHEMES = ("postgresql", "postgres")
_SCHEMA_RE = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")
DEFAULT_SCHEMA = "kroniko"


def is_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL store rather than a folder."""
    return target.split("://", 1)[0].lower() in SCHEMES and "://" in target


@dataclass(frozen=True)
class PgUrl:
    """A parsed URL: ``conninfo`` for libpq (password included), ``schema`` for our tables,
    ``shown`` the URL with its password replaced by ``***``, ``password`` to scrub from messages."""

    conninfo: str
    schema: str
    shown: str
    password: str | None


def parse(url: str, schema: str | None = None) -> PgUrl:
    """Parse ``postgresql://user:pw@host:port/db?schema=name&...`` (``schema`` defaults to
    ``kroniko``); raise :class:`InvalidArgument` (with the password redacted) when malformed."""
    if not isinstance(url, str) or not is_url(url):
        raise InvalidArgument(f"not a postgresql:// URL: {redact(str(url))}")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    chosen = schema or next((v for k, v in query if k == "schema"), None) or DEFAULT_SCHEMA
    if not _SCHEMA_RE.match(chosen):
        raise InvalidArgument(f"schema name {chosen!r} must be lower-case letters, digits and _")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
    password = _userinfo_password(url) or next((v for k, v in query if k == "password"), None)
    return PgUrl(conninfo, chosen, redact(url), password)


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
