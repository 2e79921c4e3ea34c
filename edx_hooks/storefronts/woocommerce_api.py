"""Reading a WooCommerce shop's orders and webhooks back through its REST API
(v3), for reconciliation.

A webhook's body *is* the REST API's order object (``WC_Webhook`` builds it
by calling ``/wc/v3/orders/{id}``), so an order read back is judged by
:func:`edx_hooks.storefronts.woocommerce.judge` exactly as its delivery
would have been.

Authentication with a REST API key: over HTTPS, HTTP Basic; over plain HTTP
WooCommerce accepts only OAuth 1.0a "one-legged" signing (Basic and the
``consumer_key`` query parameters get 401 there), signature in the query.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from .readback import (
    AUTH,
    HTTP,
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
from .woocommerce import Shop, judge, normalize_source

#: orders per page (the API's most)
PER_PAGE = 100
#: never more pages than this in one run (100,000 orders)
MAX_PAGES = 1000
AUTH_FIX = ("check consumer_key/consumer_secret: a REST API key of WooCommerce > Settings > "
            "Advanced > REST API whose user may read orders (permission Read; Read/Write to "
            "reactivate webhooks)")


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="-._~")


def oauth_query(method: str, url: str, params: dict[str, str], key: str, secret: str,
                nonce: str | None = None, timestamp: int | None = None) -> dict[str, str]:
    """``params`` with the OAuth 1.0a one-legged signature (HMAC-SHA256) that
    WooCommerce checks on plain HTTP (RFC 5849; the key is the secret and ``&``)."""
    signed = dict(params, oauth_consumer_key=key, oauth_nonce=nonce or secrets.token_hex(16),
                  oauth_signature_method="HMAC-SHA256",
                  oauth_timestamp=str(timestamp or int(time.time())))
    pairs = sorted((_quote(k), _quote(v)) for k, v in signed.items())
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    base = "&".join((method.upper(), _quote(url), _quote(normalized)))
    digest = hmac.new(f"{secret}&".encode(), base.encode(), hashlib.sha256).digest()
    signed["oauth_signature"] = base64.b64encode(digest).decode()
    return signed


class WooCommerceAPI:
    """One shop's REST API."""

    def __init__(self, shop: Shop, http: HTTP | None = None):
        self.shop = shop
        self.shop_id = normalize_source(shop.source)
        self.root = shop.source.rstrip("/") + "/wp-json/wc/v3/"
        self.http = http or HTTP()

    def close(self) -> None:
        self.http.close()

    async def call(self, method: str, path: str, params: dict[str, str] | None = None,
                   body: Any = None) -> Any:
        """The answer to one call, as parsed JSON and headers; a 429 is
        waited out (``Retry-After``) up to :data:`THROTTLE_TRIES` times."""
        url = self.root + path
        for attempt in range(THROTTLE_TRIES):
            query, headers = dict(params or {}), {"Accept": "application/json"}
            if url.lower().startswith("https://"):
                token = f"{self.shop.consumer_key}:{self.shop.consumer_secret}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
            else:
                query = oauth_query(method, url, query, self.shop.consumer_key,
                                    self.shop.consumer_secret)
            data = None
            if body is not None:
                data = json.dumps(body)
                headers["Content-Type"] = "application/json"
            answer = await self.http.fetch(url + "?" + urllib.parse.urlencode(query),
                                           method=method, headers=headers, body=data)
            if answer.code == 429 and attempt + 1 < THROTTLE_TRIES:
                await asyncio.sleep(retry_after(answer))
                continue
            checked(answer, f"{method} {path}", AUTH_FIX)
            try:
                return json.loads(answer.body), answer.headers
            except (ValueError, RecursionError):
                error = ShopAPIError(UNPARSABLE, f"{method} {path}: the answer is not JSON")
                error.headers = answer.headers  # the page count may still be known
                raise error from None
        raise ShopAPIError(THROTTLED, f"{method} {path}: still 429")  # pragma: no cover

    async def changed_since(self, since: dt.datetime) -> AsyncIterator[Page]:
        """The orders modified since ``since`` (naive UTC), oldest change
        first, a page at a time. A page that does not parse is yielded with
        its ``error`` and the next one is asked for."""
        page, pages = 1, 1
        while page <= min(pages, MAX_PAGES):
            params = {"modified_after": iso(since), "dates_are_gmt": "true",
                      "per_page": str(PER_PAGE), "page": str(page), "orderby": "modified",
                      "order": "asc"}
            try:
                docs, headers = await self.call("GET", "orders", params)
            except ShopAPIError as e:
                if e.kind != UNPARSABLE:
                    raise
                docs, headers = e, getattr(e, "headers", {})
            try:
                pages = int(headers.get("X-WP-TotalPages", "1"))
            except ValueError:
                pages = page + 1 if isinstance(docs, list) and len(docs) == PER_PAGE else page
            if isinstance(docs, ShopAPIError):
                yield Page(error=str(docs), number=page)
            elif not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
                yield Page(error="the orders answer is not a list of orders", number=page)
            else:
                yield Page([self.found(doc) for doc in docs], number=page)
            page += 1

    def found(self, doc: dict[str, Any]) -> Found:
        body = json.dumps(doc, ensure_ascii=False).encode()
        return Found(str(doc.get("id")), body,
                     [("order/update", functools.partial(judge, doc, self.shop))])

    async def webhooks(self) -> list[dict[str, Any]]:
        """The shop's webhooks (up to 100)."""
        hooks, _ = await self.call("GET", "webhooks", {"per_page": "100"})
        if not isinstance(hooks, list):
            raise ShopAPIError(UNPARSABLE, "GET webhooks: the answer is not a list")
        return [h for h in hooks if isinstance(h, dict)]

    async def activate(self, webhook_id: Any) -> None:
        """Set a webhook active again (needs a Read/Write key)."""
        await self.call("PUT", f"webhooks/{int(webhook_id)}", body={"status": "active"})


__all__ = ["AUTH", "THROTTLED", "WooCommerceAPI", "oauth_query"]
