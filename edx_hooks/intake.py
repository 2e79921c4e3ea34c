"""The one way an order comes in, whoever brings it: a webhook delivery
(``handlers``), a stored delivery processed again (``edx-hooks replay``) or an
order read back from the shop's API (``reconcile``).

Each judges the order with its storefront's own code, the catalog turns its
line items into enrollments (:func:`decide`), and the store records the
delivery with its order or unenrollment, which schedules what is new
(:func:`record`). The store's rules (a line item is stored once, a refund or
cancellation is kept and applies to items that come after it) hold the same
for all three.
"""

from __future__ import annotations

from collections.abc import Callable

from .catalog import Catalog
from .store import NewDelivery, Recorded, Store
from .storefronts import Outcome


def decide(catalog: Catalog, judge: Callable[[], Outcome]) -> Outcome:
    """The storefront's judgement (``judge()``), its line items expanded by
    the catalog. What ``judge`` raises is raised."""
    outcome = judge()
    catalog.expand(outcome.order)
    return outcome


async def record(store: Store, delivery: NewDelivery, outcome: Outcome) -> Recorded:
    """Store the delivery with what the outcome asks for (its order and new
    line items, or its unenrollment); the store schedules them."""
    return await store.record(delivery, outcome.order, outcome.unenroll)


async def take(store: Store, catalog: Catalog, judge: Callable[[], Outcome],
               delivery: Callable[[Outcome], NewDelivery]) -> tuple[Outcome, Recorded]:
    """:func:`decide`, then :func:`record` the delivery ``delivery(outcome)``."""
    outcome = decide(catalog, judge)
    return outcome, await record(store, delivery(outcome), outcome)
