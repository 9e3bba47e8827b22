"""``demo``: a sample shop store built through the public API, narrated as it goes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from ..errors import AppendConditionFailed, InvalidArgument
from ..model import AppendCondition, Event, Query, QueryItem
from ..store import EventStore

MAX_ITEMS = 3


def _add_item(store: EventStore, cart: str, sku: str) -> str:
    """The DCB decision model: read the cart's facts, decide, append on the read's head."""
    query = Query([QueryItem(types=["ItemAdded", "ItemRemoved", "CartCheckedOut"], tags=[f"cart:{cart}"])])
    result = store.read(query)
    items = 0
    for e in result:
        if e.type == "CartCheckedOut":
            return f"  {sku}: refused, cart {cart} is checked out"
        items += 1 if e.type == "ItemAdded" else -1
    if items >= MAX_ITEMS:
        return f"  {sku}: refused, cart {cart} already holds {MAX_ITEMS} items"
    try:
        pos = store.append(Event("ItemAdded", {"sku": sku}, [f"cart:{cart}", f"sku:{sku}"]),
                           AppendCondition(query, after=result.head))
    except AppendConditionFailed as exc:
        return f"  {sku}: conflict at position {exc.position}; a real app would read again and retry"
    return f"  {sku}: added at position {pos}"


def run_demo(folder: str) -> Iterator[str]:
    """Create (or reuse) a store in ``folder`` and exercise it; yield a line per step."""
    with EventStore(folder) as store:
        first = next(iter(store.read(limit=1)), None)
        if first is not None and not (first.type == "UserRegistered" and first.data == {"name": "Ada"}
                                      and all(t.startswith("user:u-") for t in first.event.tags)):
            raise InvalidArgument(f"{store.path} holds events the demo did not write; the demo appends sample "
                                  "events that cannot be taken back, so give it a new folder (or one an earlier "
                                  "demo used); nothing was written")
        yield f"store: {store.path} (head {store.head()} before the demo)"
        run = uuid.uuid4().hex[:6]
        cart, user = f"c-{run}", f"u-{run}"
        pos = store.append([
            Event("UserRegistered", {"name": "Ada"}, [f"user:{user}"]),
            Event("CartCreated", {"user": user}, [f"cart:{cart}", f"user:{user}"]),
        ])
        yield f"appended a batch of 2 (user {user}, cart {cart}): last position {pos}"
        yield f"adding items to cart {cart}, at most {MAX_ITEMS}, each append conditional on the cart's events:"
        for sku in ("apple", "pear", "plum", "fig"):
            yield _add_item(store, cart, sku)
        stale = store.read(Query([QueryItem(tags=[f"cart:{cart}"])]))
        store.append(Event("CartCheckedOut", {}, [f"cart:{cart}"]))
        yield "checked the cart out; now a writer that decided on an older read tries to add 'kiwi':"
        try:
            store.append(Event("ItemAdded", {"sku": "kiwi"}, [f"cart:{cart}"]),
                         AppendCondition(Query([QueryItem(tags=[f"cart:{cart}"])]), after=stale.head))
            yield "  kiwi: added (unexpected!)"
        except AppendConditionFailed as exc:
            yield f"  kiwi: refused, AppendConditionFailed at position {exc.position} (exit code 3 on the CLI)"
        coupon = f"WINTER-{run}"
        once = AppendCondition(Query([QueryItem(types=["CouponRedeemed"], tags=[f"coupon:{coupon}"])]))
        for who in ("first", "second"):
            try:
                p = store.append(Event("CouponRedeemed", {"by": who}, [f"coupon:{coupon}"]), once)
                yield f"coupon {coupon} redeemed by the {who} writer at position {p}"
            except AppendConditionFailed as exc:
                yield f"coupon {coupon} refused for the {who} writer: already redeemed at {exc.position}"
        yield f"events of cart {cart}:"
        for e in store.read(Query([QueryItem(tags=[f"cart:{cart}"])])):
            yield f"  {e.position:>6}  {e.type:<16} {e.data}"
        last = list(store.read(backwards=True, limit=3))
        yield "newest 3 events: " + ", ".join(f"{e.position} {e.type}" for e in last)
        yield f"head is now {store.head()}; try: kroniko-ops read {store.path} --tag cart:{cart}"
