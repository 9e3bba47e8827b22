"""Helpers for the legacy tests, written independently of kroniko_ops.legacy (stdlib json only),
so that what they compute can judge what the migration did."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def tree_digest(root: str) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``: folders and files with their mode, files with a SHA-256 of
    their bytes, symlinks with their target. Equal digests mean byte-identical trees."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("dir", st.st_mode)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", st.st_mode, hashlib.sha256(f.read()).hexdigest())
    return out


def committed_lines(root: str) -> list[str]:
    """The newline-terminated lines of the legacy log (position = index + 1)."""
    with open(os.path.join(root, "log", "append.log"), "rb") as f:
        raw = f.read()
    return [line.decode("utf-8", "surrogateescape") for line in raw.split(b"\n")[:-1]]


def legacy_doc(root: str, event_id: str) -> dict[str, Any] | None:
    """The parsed event file, or None when it is missing or not a JSON object with a type."""
    try:
        with open(os.path.join(root, "events", event_id + ".json"), "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("type"), str) else None


def tag_text(value: Any) -> str:
    """The tag value a scalar property must get: strings as they are, others as JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


def scalar(value: Any) -> bool:
    """Whether a data property value gets a tag."""
    return value is None or isinstance(value, (str, int, float, bool))


def load_events(root: str) -> list[tuple[int, str, dict[str, Any] | None]]:
    """``(position, id, parsed event or None)`` for every committed line."""
    return [(pos, eid, legacy_doc(root, eid)) for pos, eid in enumerate(committed_lines(root), 1)]


def expected_property_positions(events: list[tuple[int, str, dict[str, Any] | None]], key: str,
                                value: Any) -> list[int]:
    """Positions of the legacy ``events`` (:func:`load_events`) a read by ``{key: value}`` must
    return after migration: those whose data property ``key`` is a scalar with the same tag text."""
    want = tag_text(value)
    out = []
    for pos, _eid, doc in events:
        if doc is None or not isinstance(doc.get("data"), dict) or key not in doc["data"]:
            continue
        v = doc["data"][key]
        if scalar(v) and tag_text(v) == want:
            out.append(pos)
    return out


def distinct_properties(root: str) -> list[tuple[str, Any]]:
    """Every distinct (key, scalar value) of the legacy events' data, first seen first."""
    seen: dict[tuple[str, str, str], tuple[str, Any]] = {}
    for eid in committed_lines(root):
        doc = legacy_doc(root, eid)
        if doc is None or not isinstance(doc.get("data"), dict):
            continue
        for k, v in doc["data"].items():
            if scalar(v):
                seen.setdefault((k, type(v).__name__, json.dumps(v)), (k, v))
    return list(seen.values())


def ruby_index_positions(root: str, key: str, name: str) -> set[int]:
    """Positions (first occurrence in the log) of the ids listed in the gem's index file
    ``index/data.<key>/<name>.jsonl``, ignoring ids that are not in the log."""
    path = os.path.join(root, "index", f"data.{key}", name + ".jsonl")
    if not os.path.exists(path):
        return set()
    first: dict[str, int] = {}
    for pos, eid in enumerate(committed_lines(root), 1):
        first.setdefault(eid, pos)
    with open(path, encoding="utf-8") as f:
        return {first[i] for i in f.read().splitlines() if i in first}
