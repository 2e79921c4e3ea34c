"""Stand-in shop APIs on free ports, speaking the contracts of protocols.md
("Shops' own APIs"):

- :class:`StandinWooCommerce`: the REST API v3 of a WooCommerce shop: its
  orders (the real captured bodies of ``fixtures/woocommerce-10.0.2``, as the
  shop holds them now), listed by ``modified_after`` with ``X-WP-Total``,
  ``X-WP-TotalPages`` and ``Link``; its webhooks (listed, set active by PUT);
  a REST API key checked as WooCommerce checks it: HTTP Basic, or OAuth 1.0a
  one-legged (HMAC-SHA256/SHA1, signature in the query) on plain HTTP;
- :class:`StandinShopify`: the GraphQL Admin API of a Shopify shop: the
  ``orders`` connection (``updated_at:>`` query, ``UPDATED_AT`` sort,
  cursors), with the cost extensions and a leaky bucket that answers
  ``THROTTLED`` when empty.

Both answer on demand what a real one does when things go wrong: 401, 429,
5xx, a page that is not JSON.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

FIXTURES = Path(__file__).parent / "fixtures" / "woocommerce-10.0.2"


def captured(name: str) -> dict[str, Any]:
    """The order body of a captured delivery (``04-order-A-...``), as sent."""
    [path] = FIXTURES.glob(f"{name}*.json")
    record = json.loads(path.read_text())
    return json.loads(base64.b64decode(record["body_base64"]))


def _gmt(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "")).replace(tzinfo=None)


class _Server:
    def __init__(self) -> None:
        self.server: HTTPServer | None = None
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        #: statuses to answer the next requests with, instead of serving them
        self.fail_next: list[int] = []
        #: requests to leave unanswered (the client times out)
        self.hang_next = 0

    async def start(self) -> Any:
        sock, port = bind_unused_port()
        self.server = HTTPServer(self.app())
        self.server.add_socket(sock)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()

    def app(self) -> web.Application:  # pragma: no cover - each stand-in's own
        raise NotImplementedError


# --- WooCommerce

def _rfc3986(value: str) -> str:
    return urllib.parse.quote(value, safe="-._~")


def oauth_valid(method: str, url: str, query: dict[str, str], key: str, secret: str) -> bool:
    """WooCommerce's check (WC_REST_Authentication::check_oauth_signature):
    the parameters but the signature, sorted, each key and value
    percent-encoded, joined, encoded again; HMAC with ``secret&``."""
    if query.get("oauth_consumer_key") != key or not query.get("oauth_nonce") \
            or not query.get("oauth_timestamp") or "oauth_signature" not in query:
        return False
    algorithm = {"HMAC-SHA256": hashlib.sha256, "HMAC-SHA1": hashlib.sha1}.get(
        query.get("oauth_signature_method", ""))
    if algorithm is None or abs(time.time() - int(query["oauth_timestamp"])) > 900:
        return False
    params = sorted((_rfc3986(k), _rfc3986(v)) for k, v in query.items()
                    if k != "oauth_signature")
    text = "&".join([method, _rfc3986(url), _rfc3986("&".join(f"{k}={v}" for k, v in params))])
    expected = base64.b64encode(hmac.new(f"{secret}&".encode(), text.encode(), algorithm)
                                .digest()).decode()
    return hmac.compare_digest(expected, query["oauth_signature"])


class _WooHandler(web.RequestHandler):
    def initialize(self, shop: StandinWooCommerce) -> None:
        self.shop = shop

    async def prepare(self) -> None:
        self.shop.requests.append((self.request.method, self.request.uri))
        if self.shop.hang_next:
            self.shop.hang_next -= 1
            await asyncio.sleep(30)  # longer than the client waits
        if self.shop.fail_next:
            status = self.shop.fail_next.pop(0)
            self.set_status(status)
            if status == 429:
                self.set_header("Retry-After", "0")
            self.finish({"code": "failure", "message": f"stand-in answers {status}",
                         "data": {"status": status}})
            return
        if not self.authorized():
            self.set_status(401)
            self.finish({"code": "woocommerce_rest_cannot_view",
                         "message": "Sorry, you cannot list resources.", "data": {"status": 401}})

    def authorized(self) -> bool:
        basic = self.request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            return (user, password) == (self.shop.key, self.shop.secret)
        query = {k: v[-1].decode() for k, v in self.request.query_arguments.items()}
        url = f"{self.request.protocol}://{self.request.host}{self.request.path}"
        if oauth_valid(self.request.method, url, query, self.shop.key, self.shop.secret):
            self.shop.oauth_seen += 1
            return True
        return False

    def answer(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(value))


class _WooOrders(_WooHandler):
    def get(self) -> None:
        after = self.get_query_argument("modified_after", None)
        assert self.get_query_argument("dates_are_gmt") == "true"
        per_page = int(self.get_query_argument("per_page", "10"))
        assert per_page <= 100
        page = int(self.get_query_argument("page", "1"))
        orders = sorted(self.shop.orders.values(), key=lambda o: (o["date_modified_gmt"], o["id"]))
        if after:
            since = _gmt(after)
            orders = [o for o in orders if _gmt(o["date_modified_gmt"]) > since]
        pages = max(1, -(-len(orders) // per_page))
        self.set_header("X-WP-Total", str(len(orders)))
        self.set_header("X-WP-TotalPages", str(pages))
        if page < pages:
            self.set_header("Link", f'<{self.shop.url}{self.request.path}?page={page + 1}>; '
                                    'rel="next"')
        if page in self.shop.broken_pages:
            self.set_header("Content-Type", "application/json")
            self.finish("<html>PHP Fatal error: Allowed memory size exhausted</html>")
            return
        self.answer(orders[(page - 1) * per_page:page * per_page])


class _WooWebhooks(_WooHandler):
    def get(self) -> None:
        self.answer(list(self.shop.webhooks.values()))


class _WooWebhook(_WooHandler):
    def put(self, hook_id: str) -> None:
        if not self.shop.read_write:
            self.set_status(401)
            self.finish({"code": "woocommerce_rest_cannot_edit",
                         "message": "Sorry, you are not allowed to edit this resource.",
                         "data": {"status": 401}})
            return
        hook = self.shop.webhooks[int(hook_id)]
        hook.update({k: v for k, v in json.loads(self.request.body).items() if k == "status"})
        self.answer(hook)


class StandinWooCommerce(_Server):
    """A WooCommerce shop's REST API v3."""

    def __init__(self, key: str = "ck_standin0123456789", secret: str = "cs_standin9876543210",
                 read_write: bool = True):
        super().__init__()
        self.key, self.secret, self.read_write = key, secret, read_write
        #: the shop's orders as it holds them now, by id
        self.orders: dict[int, dict[str, Any]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        #: pages of the orders listing that answer a PHP error page
        self.broken_pages: set[int] = set()
        self.oauth_seen = 0

    def app(self) -> web.Application:
        args = {"shop": self}
        return web.Application([(r"/wp-json/wc/v3/orders", _WooOrders, args),
                                (r"/wp-json/wc/v3/webhooks", _WooWebhooks, args),
                                (r"/wp-json/wc/v3/webhooks/(\d+)", _WooWebhook, args)])

    def hold(self, order: dict[str, Any], touch: bool = False) -> dict[str, Any]:
        """The shop now holds ``order`` (placed, or changed); ``touch``: saved
        now (its date_modified_gmt), as the shop does when it changes one."""
        if touch:
            order["date_modified_gmt"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self.orders[order["id"]] = order
        return order

    def webhook(self, hook_id: int, topic: str, url: str, status: str = "active") -> None:
        self.webhooks[hook_id] = {
            "id": hook_id, "name": f"Order {topic}", "status": status,
            "topic": topic, "resource": topic.split(".")[0], "event": topic.split(".")[1],
            "hooks": [f"woocommerce_{topic.replace('.', '_')}"], "delivery_url": url,
            "date_created_gmt": "2026-11-29T06:50:00", "date_modified_gmt": "2026-11-29T06:50:00"}

    @property
    def order_lists(self) -> list[str]:
        return [uri for method, uri in self.requests if "/orders" in uri and method == "GET"]


# --- Shopify

class _Graphql(web.RequestHandler):
    def initialize(self, shop: StandinShopify) -> None:
        self.shop = shop

    def post(self, version: str) -> None:
        shop = self.shop
        shop.requests.append(("POST", self.request.uri))
        if shop.fail_next:
            status = shop.fail_next.pop(0)
            self.set_status(status)
            self.finish({"errors": f"stand-in answers {status}"})
            return
        if self.request.headers.get("X-Shopify-Access-Token") != shop.token:
            self.set_status(401)
            self.finish({"errors": "[API] Invalid API key or access token (unrecognized login "
                                   "or wrong password)"})
            return
        doc = json.loads(self.request.body)
        assert "orders(" in doc["query"] and "sortKey: UPDATED_AT" in doc["query"]
        variables = doc["variables"]
        first = variables["first"]
        cost = 2 + first * 3  # about what Shopify asks for such a query
        available = shop.available()
        if shop.throttle_next or available < cost:
            shop.throttle_next = max(0, shop.throttle_next - 1)
            shop.throttled += 1
            self.finish({"errors": [{"message": "Throttled",
                                     "extensions": {"code": "THROTTLED",
                                                    "documentation": "https://shopify.dev/api/"
                                                                     "usage/rate-limits"}}],
                         "extensions": {"cost": {"requestedQueryCost": cost,
                                                 "actualQueryCost": None,
                                                 "throttleStatus": self.status()}}})
            return
        shop.spend(cost)
        query = variables["query"]
        assert query.startswith("updated_at:>'") and query.endswith("'")
        since = _gmt(query[len("updated_at:>'"):-1])
        nodes = sorted((n for n in shop.orders.values() if _gmt(n["updatedAt"]) > since),
                       key=lambda n: (n["updatedAt"], n["id"]))
        start = int(variables["after"].split(":")[1]) if variables.get("after") else 0
        page = nodes[start:start + first]
        end = start + len(page)
        self.finish({"data": {"orders": {
            "pageInfo": {"hasNextPage": end < len(nodes),
                         "endCursor": f"cursor:{end}" if page else None},
            "nodes": page}},
            "extensions": {"cost": {"requestedQueryCost": cost, "actualQueryCost": cost,
                                    "throttleStatus": self.status()}}})

    def status(self) -> dict[str, float]:
        return {"maximumAvailable": self.shop.bucket, "currentlyAvailable": self.shop.available(),
                "restoreRate": self.shop.restore_rate}


class StandinShopify(_Server):
    """A Shopify shop's GraphQL Admin API (orders only)."""

    def __init__(self, domain: str, token: str = "shpat_standin_0123456789abcdef",
                 bucket: float = 1000.0, restore_rate: float = 10000.0):
        super().__init__()
        self.domain, self.token = domain, token
        self.bucket, self.restore_rate = bucket, restore_rate
        self._level, self._at = bucket, time.monotonic()
        self.orders: dict[str, dict[str, Any]] = {}
        #: queries to answer THROTTLED whatever the bucket holds
        self.throttle_next = 0
        self.throttled = 0

    def app(self) -> web.Application:
        return web.Application([(r"/admin/api/([\d-]+)/graphql\.json", _Graphql,
                                 {"shop": self})])

    def available(self) -> float:
        now = time.monotonic()
        self._level = min(self.bucket, self._level + (now - self._at) * self.restore_rate)
        self._at = now
        return self._level

    def spend(self, cost: float) -> None:
        self._level = self.available() - cost

    def hold(self, webhook_order: dict[str, Any], *, cancelled: bool = False,
             refunded: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The shop now holds this order (given as its orders/create webhook
        body), as the GraphQL API shows it."""
        node = {
            "id": f"gid://shopify/Order/{webhook_order['id']}",
            "legacyResourceId": str(webhook_order["id"]), "name": webhook_order["name"],
            "email": webhook_order.get("email"), "test": webhook_order.get("test", False),
            "updatedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "cancelledAt": "2026-12-01T10:00:00Z" if cancelled else None,
            "displayFinancialStatus": str(webhook_order.get("financial_status")).upper(),
            "lineItems": {"nodes": [{
                "id": f"gid://shopify/LineItem/{line['id']}", "sku": line.get("sku"),
                "quantity": line.get("quantity", 1),
                "customAttributes": [{"key": p["name"], "value": p["value"]}
                                     for p in line.get("properties", [])]}
                for line in webhook_order["line_items"]]},
            "refunds": [{"id": "gid://shopify/Refund/77", "refundLineItems": {"nodes": [
                {"lineItem": {"id": f"gid://shopify/LineItem/{line['id']}"}}
                for line in refunded]}}] if refunded else []}
        self.orders[node["id"]] = node
        return node
