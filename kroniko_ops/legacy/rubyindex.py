"""Where the Ruby kroniko put an event's index entries, computed from the event.

The gem appends the event id to ``index/type/<type>.jsonl`` and, for each top-level key of a
Hash ``data``, to ``File.join(index, "data.#{key}", value.to_s + ".jsonl")``: Ruby's ``to_s``
of the value, unescaped. This module reproduces that (Ruby 3.1 ``to_s`` and ``inspect``), the
path the operating system resolved it to, and whether that path stayed in its folder. Nothing
here touches the disk.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

import orjson

_NAMED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\f": "\\f",
                  "\v": "\\v", "\b": "\\b", "\a": "\\a", "\x1b": "\\e"}


def ruby_float(x: float) -> str:
    """``Float#to_s``: Python's shortest repr, with the ``.0`` Ruby keeps in the exponent form
    (``1.0e+20`` where Python writes ``1e+20``); both switch to it at the same exponents."""
    r = repr(x)
    if r in ("inf", "-inf", "nan"):
        return {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}[r]
    if "e" in r:
        mantissa, exponent = r.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{exponent}"
    return r


def _inspect_str(s: str) -> str:
    out = ['"']
    for i, ch in enumerate(s):
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ch == "#" and s[i + 1 : i + 2] in ("{", "$", "@"):
            out.append("\\#")
        elif "\udc80" <= ch <= "\udcff":  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02X}")
        elif ch == "\x7f":
            out.append("\\x7F")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\u{{{ord(ch):X}}}")
    out.append('"')
    return "".join(out)


def ruby_inspect(value: Any) -> str:
    """Ruby 3.1 ``inspect`` of a value parsed from JSON (``{"a"=>1}``, ``["x", "y"]``, ``nil``)."""
    if value is None:
        return "nil"
    if isinstance(value, str):
        return _inspect_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(ruby_inspect(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{ruby_inspect(k)}=>{ruby_inspect(v)}" for k, v in value.items()) + "}"
    return ruby_to_s(value)


def ruby_to_s(value: Any) -> str:
    """Ruby ``to_s`` of a value parsed from JSON: what the gem named its index file after."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ruby_float(value)
    return ruby_inspect(value)


def _typed(value: Any) -> str:
    """JSON text of a value, telling ``2`` from ``"2"`` and ``null`` from ``""``."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class IndexRef:
    """One index file the gem appended an event's id to.

    ``relpath`` is the path relative to the store root after the OS resolved ``..`` and
    ``//`` (None when Ruby could not write it at all: a NUL byte, a name over 255 bytes).
    ``placement``: ``ok``, ``folder`` (it left its own ``index/type`` or ``index/data.<key>``
    folder but stayed in the store), ``store`` (it left the store) or ``unwritable``.
    ``identity`` is what the file stands for: two different identities on one ``relpath`` are
    a name collision.
    """

    folder: str
    name: str
    relpath: str | None
    key: str | None
    value: Any
    nested: bool
    placement: str
    identity: tuple[str, ...]

    @property
    def ruby_path(self) -> str:
        """The path as the gem wrote it, before resolution."""
        return f"index/{self.folder}/{self.name}.jsonl"


def _place(folder: str, name: str) -> tuple[str | None, str]:
    raw = f"index/{folder}/{name}.jsonl"
    if "\0" in raw or any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in raw.split("/")):
        return None, "unwritable"
    rel = posixpath.normpath(raw)
    if rel == ".." or rel.startswith(("../", "/")):
        return rel, "store"
    own = f"index/{folder}"
    if posixpath.normpath(own) != own or not rel.startswith(own + "/"):
        return rel, "folder"
    return rel, "ok"


def index_refs(type_: str, data: Any) -> list[IndexRef]:
    """The index files the gem wrote for an event of ``type_`` with ``data``, in its order."""
    rel, placement = _place("type", type_)
    refs = [IndexRef("type", type_, rel, None, type_, False, placement, ("type", type_))]
    if isinstance(data, dict):
        for key, value in data.items():
            folder = f"data.{key}"
            name = ruby_to_s(value)
            rel, placement = _place(folder, name)
            nested = isinstance(value, (list, dict))
            refs.append(IndexRef(folder, name, rel, key, value, nested, placement, ("data", key, _typed(value))))
    return refs
