"""Write stores in the Ruby kroniko layout (format 1), for tests and the migration benchmark.

:class:`LegacyWriter` does what the gem's ``write_single`` does, in its order: the event file
(``JSON.pretty_generate``), the log line, then one line per index file. Index paths are the
gem's own (:mod:`.rubyindex`), except that a path resolving outside the store is never written
(the gem would have): the writer only ever writes under its root.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from typing import Any

from .rubyindex import index_refs

FLUSH_EVERY = 20_000


def pretty(doc: dict[str, Any]) -> bytes:
    """Ruby's ``JSON.pretty_generate``: two-space indent, raw UTF-8, no final newline.

    (Floats in exponent form differ: Ruby writes ``1.0e+20`` where Python writes ``1e+20``;
    both parse to the same number.)
    """
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


class LegacyWriter:
    """Append events to a legacy store at ``root`` the way the gem does (no fsync, no lock).

    ``clock`` is the first timestamp of the ids; each event advances it by ``step`` seconds
    (ids carry ``Time.now.to_f.round(6)``). Index lines are buffered and appended every
    ``FLUSH_EVERY`` events and on :meth:`close`.
    """

    def __init__(self, root: str, clock: float = 1795736064.0, step: float = 0.000013,
                 rng: random.Random | None = None) -> None:
        self.root = root
        self.clock = clock
        self.step = step
        self.rng = rng or random.Random(0)
        for d in ("events", "index", "log", "locks"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        self._log = open(os.path.join(root, "log", "append.log"), "ab")
        self._pending: dict[str, list[str]] = {}
        self._count = 0
        self.skipped: list[str] = []

    def new_id(self) -> str:
        """A Ruby-style id: ``<unix seconds rounded to 6 decimals>-<uuid4>``."""
        self.clock += self.step
        return f"{round(self.clock, 6)!r}-{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"

    def append(self, type_: str, data: Any, event_id: str | None = None, index: bool = True,
               log: bool = True) -> str:
        """Write one event; ``log=False``/``index=False`` stop where a crash would have."""
        event_id = event_id or self.new_id()
        with open(os.path.join(self.root, "events", event_id + ".json"), "wb") as f:
            f.write(pretty({"type": type_, "data": data, "id": event_id}))
        if not log:
            return event_id
        self._log.write(event_id.encode() + b"\n")
        if index:
            for ref in index_refs(type_, data):
                if ref.placement in ("ok", "folder") and ref.relpath is not None:
                    self._pending.setdefault(ref.relpath, []).append(event_id)
                else:
                    self.skipped.append(ref.ruby_path)
        self._count += 1
        if self._count % FLUSH_EVERY == 0:
            self.flush()
        return event_id

    def flush(self) -> None:
        """Append the buffered index lines and the log."""
        self._log.flush()
        for rel, ids in self._pending.items():
            path = os.path.join(self.root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a", encoding="utf-8", errors="surrogateescape") as f:
                f.write("".join(i + "\n" for i in ids))
        self._pending.clear()

    def close(self) -> None:
        """Flush and close the log."""
        self.flush()
        self._log.close()

    def __enter__(self) -> LegacyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_EMAILS = ["ana@example.com", "bob@example.org", "zoë@exämple.de", "李@例子.中国"]
_CODES: list[Any] = ["SAVE10", "WINTER/25", "", "2"]


def shop_events(n: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """``n`` shop events like the Ruby fixtures: carts, items, coupons, users, with the values
    the gem indexes badly (``""``, ``null``, ``"2"``, ``WINTER/25``, arrays, unicode, floats)."""
    rng = random.Random(seed)
    carts = max(1, n // 20)
    for _ in range(n):
        r = rng.random()
        cart = f"cart-{rng.randrange(carts)}"
        if r < 0.5:
            yield "ItemAdded", {"cart_id": cart, "sku": f"sku-{rng.randrange(40)}", "qty": rng.randrange(1, 6),
                                "price": round(rng.uniform(0.5, 100), 2)}
        elif r < 0.7:
            yield "ItemRemoved", {"cart_id": cart, "sku": f"sku-{rng.randrange(40)}"}
        elif r < 0.8:
            yield "CartCleared", {"cart_id": cart}
        elif r < 0.9:
            yield "UserRegistered", {"email": rng.choice(_EMAILS), "user_id": rng.randrange(1000),
                                     "plan": rng.choice(["free", "pro", None])}
        else:
            yield "Shop::CouponApplied", {"cart_id": cart, "code": rng.choice(_CODES), "tags": ["x", "y"]}


def write_shop_store(root: str, n: int, seed: int = 0) -> list[str]:
    """Write a legacy store of ``n`` shop events at ``root``; return the ids in log order."""
    ids = []
    with LegacyWriter(root, rng=random.Random(seed)) as w:
        for type_, data in shop_events(n, seed):
            ids.append(w.append(type_, data))
    return ids
