"""Reading a Shopify shop's orders back through the GraphQL Admin API, for
reconciliation (the REST Admin API is legacy since 2024-10).

An order read back is mapped to the shape of the webhook bodies the
storefront reads (:mod:`edx_hooks.storefronts.shopify`) and judged by the
same code: the order as an ``orders/create`` body, its cancellation as an
``orders/cancelled`` one, each refund as a ``refunds/create`` one. GraphQL
ids (``gid://shopify/Order/123``, ``gid://shopify/LineItem/456``) are
reduced to their numeric tail, the ids webhooks carry, so a line item read
back is the line item a delivery stored, whichever came first.

The API's rate limit is cost based (a leaky bucket of points): each answer's
``extensions.cost.throttleStatus`` says what is left; a throttled query is
answered 200 with an error whose code is ``THROTTLED``, and is waited out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from .. import logs
from .readback import (
    HTTP,
    MAX_BACKOFF_SECONDS,
    THROTTLE_TRIES,
    THROTTLED,
    UNPARSABLE,
    Found,
    Page,
    ShopAPIError,
    checked,
    iso,
    retry_after,
)
from .shopify import Shop, judge

#: orders per page, and line items (and refunded line items) read per order:
#: together a query's requested cost stays under about 700 points, within
#: Shopify's 1,000-point limit per query and a standard plan's bucket
PER_PAGE = 10
LINES_PER_ORDER = 30
MAX_PAGES = 2000
log = logging.getLogger("edx_hooks.reconcile")

AUTH_FIX = ("check admin_token: the Admin API access token of a custom app of this shop with "
            "the read_orders scope (read_all_orders for orders older than 60 days)")

QUERY = """
query ChangedOrders($first: Int!, $after: String, $query: String!) {
  orders(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id legacyResourceId name email test updatedAt cancelledAt displayFinancialStatus
      lineItems(first: LINES) {
        pageInfo { hasNextPage }
        nodes { id sku quantity customAttributes { key value } }
      }
      refunds { id refundLineItems(first: LINES) { nodes { lineItem { id } } } }
    }
  }
}
""".replace("LINES", str(LINES_PER_ORDER))


def numeric_id(gid: Any) -> int | None:
    """``gid://shopify/LineItem/456`` → 456 (the id webhooks carry)."""
    if isinstance(gid, int) and not isinstance(gid, bool):
        return gid
    tail = str(gid or "").rsplit("/", 1)[-1].split("?")[0]
    return int(tail) if tail.isdigit() else None


def webhook_bodies(node: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The webhook bodies an order read back stands for, by endpoint path:
    the order (``order/create``), its cancellation, its refunds."""
    order_id = numeric_id(node.get("legacyResourceId")) or numeric_id(node.get("id"))
    lines = []
    for line in (node.get("lineItems") or {}).get("nodes") or []:
        if not isinstance(line, dict):
            continue
        lines.append({"id": numeric_id(line.get("id")), "sku": line.get("sku"),
                      "quantity": line.get("quantity"),
                      "properties": [{"name": a.get("key"), "value": a.get("value")}
                                     for a in line.get("customAttributes") or []
                                     if isinstance(a, dict)]})
    status = node.get("displayFinancialStatus")
    order = {"id": order_id, "name": node.get("name"), "email": node.get("email"),
             "test": node.get("test"),
             "financial_status": status.lower() if isinstance(status, str) else None,
             "cancelled_at": node.get("cancelledAt"), "line_items": lines}
    bodies = [("order/create", order)]
    if node.get("cancelledAt"):
        bodies.append(("order/cancelled", order))
    for refund in node.get("refunds") or []:
        if not isinstance(refund, dict):
            continue
        refunded = [{"line_item_id": numeric_id((n.get("lineItem") or {}).get("id"))}
                    for n in (refund.get("refundLineItems") or {}).get("nodes") or []
                    if isinstance(n, dict)]
        if refunded:
            bodies.append(("refund/create", {"id": numeric_id(refund.get("id")),
                                             "order_id": order_id,
                                             "refund_line_items": refunded}))
    return bodies


class ShopifyAPI:
    """One shop's GraphQL Admin API."""

    def __init__(self, shop: Shop, http: HTTP | None = None):
        self.shop = shop
        self.shop_id = shop.shop_domain
        root = shop.api_url or f"https://{shop.shop_domain}"
        self.url = f"{root.rstrip('/')}/admin/api/{shop.api_version}/graphql.json"
        self.http = http or HTTP()

    def close(self) -> None:
        self.http.close()

    async def query(self, variables: dict[str, Any]) -> dict[str, Any]:
        """One GraphQL answer's ``data``; a throttled query is waited out
        (by what ``throttleStatus`` says) up to :data:`THROTTLE_TRIES` times."""
        for _ in range(THROTTLE_TRIES):
            answer = await self.http.fetch(
                self.url, method="POST", body=json.dumps({"query": QUERY, "variables": variables}),
                headers={"Content-Type": "application/json", "Accept": "application/json",
                         "X-Shopify-Access-Token": self.shop.admin_token})
            if answer.code == 429:
                await asyncio.sleep(retry_after(answer))
                continue
            checked(answer, "GraphQL orders", AUTH_FIX)
            try:
                doc = json.loads(answer.body)
            except (ValueError, RecursionError):
                raise ShopAPIError(UNPARSABLE, "GraphQL orders: the answer is not JSON") from None
            if not isinstance(doc, dict):
                raise ShopAPIError(UNPARSABLE, "GraphQL orders: the answer is not an object")
            errors = doc.get("errors") or []
            codes = {str((e.get("extensions") or {}).get("code", "")) for e in errors
                     if isinstance(e, dict)}
            if "THROTTLED" in codes:
                await asyncio.sleep(self.wait(doc))
                continue
            if "ACCESS_DENIED" in codes:
                raise ShopAPIError("auth", "GraphQL orders: access denied", AUTH_FIX)
            if errors or not isinstance(doc.get("data"), dict):
                first = errors[0] if errors and isinstance(errors[0], dict) else {}
                raise ShopAPIError(UNPARSABLE, "GraphQL orders: "
                                   + str(first.get("message", "no data"))[:200])
            await asyncio.sleep(self.wait(doc, after=True))
            return doc["data"]
        raise ShopAPIError(THROTTLED, "GraphQL orders: still THROTTLED")

    @staticmethod
    def wait(doc: dict[str, Any], after: bool = False) -> float:
        """Seconds until the bucket holds what this query costs (``after``:
        before the next page, 0 when enough is left)."""
        try:
            cost = doc["extensions"]["cost"]
            status = cost["throttleStatus"]
            needed = float(cost.get("requestedQueryCost") or 0)
            available = float(status["currentlyAvailable"])
            rate = float(status["restoreRate"]) or 1.0
        except (KeyError, TypeError, ValueError):
            return 0.0 if after else 1.0
        if after and available >= needed:
            return 0.0
        return min(max(needed - available, 0.0) / rate, MAX_BACKOFF_SECONDS)

    async def changed_since(self, since: dt.datetime) -> AsyncIterator[Page]:
        """The orders updated since ``since`` (naive UTC), oldest change
        first, a page (cursor) at a time. A page whose orders do not parse is
        yielded with its ``error``; a broken cursor ends the listing."""
        after, number = None, 1
        while number <= MAX_PAGES:
            data = await self.query({"first": PER_PAGE, "after": after,
                                     "query": f"updated_at:>'{iso(since)}'"})
            try:
                orders = data["orders"]
                nodes, info = orders["nodes"], orders["pageInfo"]
                found = [self.found(node) for node in nodes]
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                yield Page(error=f"orders page does not parse ({e.__class__.__name__})",
                           number=number)
                return
            yield Page(found, number=number)
            if not info.get("hasNextPage") or not info.get("endCursor"):
                return
            after, number = info["endCursor"], number + 1

    def found(self, node: dict[str, Any]) -> Found:
        bodies = webhook_bodies(node)
        order_id = str(bodies[0][1]["id"])
        if ((node.get("lineItems") or {}).get("pageInfo") or {}).get("hasNextPage"):
            logs.event(log, logs.WARNING, "reconcile.truncated", provider="shopify",
                       shop=self.shop_id, order=order_id, read=LINES_PER_ORDER,
                       fix="its line items past these were not read back: check the order "
                           "with `edx-hooks order shopify ORDER`")
        return Found(order_id, json.dumps(node, ensure_ascii=False).encode(),
                     [(path, functools.partial(judge, body, self.shop, path))
                      for path, body in bodies])
