"""The one way an order comes in, whoever brings it: a webhook delivery
(``handlers``), a stored delivery processed again (``edx-hooks replay``) or an
order read back from the shop's API (``reconcile``).

Each judges the order with its storefront's own code, the catalog turns its
line items into enrollments (:func:`decide`), and the store records the
delivery with its order or unenrollment, which schedules what is new
(:func:`record`). The store's rules (a line item is stored once, a refund or
cancellation is kept and applies to items that come after it) hold the same
for all three. :func:`replay_delivery` is the replay's whole path (the CLI's
and the console's).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tornado.httputil import HTTPHeaders

from .catalog import Catalog
from .config import Config, Registry
from .errors import Failure
from .store import NewDelivery, Recorded, Store, utcnow
from .storefronts import STOREFRONTS, Outcome


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


async def replay_delivery(store: Store, cfg: Config, delivery_id: int, by: str | None = None,
                          storefronts: Registry = STOREFRONTS) -> tuple[Recorded, Outcome]:
    """Process stored delivery ``delivery_id`` again, verified with the
    current config, and store the outcome as a new delivery (``REPLAY ...``;
    ``by``: the console's staff user who asked). Returns (Recorded, Outcome);
    raises :class:`Failure` with the reason when it cannot be replayed.
    ``storefronts``: the registry the delivery's storefront is found in."""
    original = await store.delivery(delivery_id)
    if original is None:
        raise Failure(f"no delivery {delivery_id}")
    if original["pruned_at"] is not None:
        raise Failure(f"delivery {delivery_id} was pruned: its body is gone")
    if len(original["body"]) < original["body_size"]:
        raise Failure(f"only the first {len(original['body'])} of {original['body_size']} "
                      f"bytes of delivery {delivery_id} were kept: it cannot be verified")
    storefront = storefronts.get(original["provider"])
    shops = cfg.shops.get(original["provider"]) if storefront else None
    if not shops:
        raise Failure(f"delivery {delivery_id} came for {original['provider']}, "
                      "which is not configured")
    # the endpoint it came to: "POST /webhooks/shopify/refund/create"
    path = original["endpoint"].split(f"/webhooks/{storefront.name}/", 1)[-1]
    endpoint = storefront.endpoint(path)
    if endpoint is None:
        raise Failure(f"delivery {delivery_id} came to {original['endpoint']}, which is "
                      f"no endpoint of {storefront.name}: nothing to replay")
    headers = json.loads(original["headers"])
    outcome, recorded = await take(
        store, Catalog(cfg.products, cfg.lms.default_mode),
        lambda: storefront.receive(HTTPHeaders(headers), original["body"], shops, endpoint),
        lambda outcome: NewDelivery(
            provider=original["provider"], endpoint=f"REPLAY {original['endpoint']}"[:200],
            received_at=utcnow(), client_ip=original["client_ip"], headers=headers,
            body=original["body"], body_size=original["body_size"], status=outcome.status,
            reason=f"{outcome.reason} (replay of {delivery_id}"
                   + (f" by {by})" if by else ")"), shop=outcome.shop))
    return recorded, outcome
