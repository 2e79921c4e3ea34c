"""Shopify: ``orders/create`` (and ``orders/paid``) deliveries.

Genuine means: the ``X-Shopify-Shop-Domain`` is the configured shop, and
``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw body under the
shop's signing secret. The learner is the line item's ``email`` property; the
course is its SKU (a course id, or a SKU the LMS redirects to a course).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from ..store import NewItem, NewOrder
from . import Outcome, external_id, make_item, parse_json_object, rejected, signature_valid

PROVIDER = "shopify"
EMAIL_HINT = "line item property 'email'"


def receive(headers: Mapping[str, str], body: bytes, settings: SimpleNamespace) -> Outcome:
    """Verify a delivery and, when genuine, read the order out of it."""
    domain = headers.get("X-Shopify-Shop-Domain")
    signature = headers.get("X-Shopify-Hmac-Sha256")
    if not domain:
        return rejected(400, "missing-shop-domain")
    shop = domain.strip().lower()[:255]
    if not signature:
        return rejected(400, "missing-signature", shop)
    if shop != settings.shop_domain:
        return rejected(403, "unknown-shop", shop)
    if not signature_valid(body, settings.secret, signature):
        return rejected(403, "bad-signature", shop)
    doc = parse_json_object(body)
    if doc is None:
        return rejected(400, "body-not-json-object", shop)
    order_id = external_id(doc.get("id"))
    if order_id is None:
        return rejected(400, "order-id-missing", shop)
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        name = f"#{order_id}"
    order = NewOrder(provider=PROVIDER, shop=shop, external_id=order_id, name=name.strip(),
                     items=line_items(doc.get("line_items")))
    reason = "accepted" if order.items else "accepted-no-line-items"
    return Outcome(200, reason, shop, order)


def line_items(value: Any) -> list[NewItem]:
    if not isinstance(value, list):
        return []
    found = []
    for position, line in enumerate(value):
        if not isinstance(line, dict):
            found.append(NewItem(external_id=f"#{position}", sku=None, email=None,
                                 failure="line item is not a JSON object"))
            continue
        item_id = external_id(line.get("id")) or f"#{position}"
        found.append(make_item(item_id, line.get("sku"), _property(line, "email"), EMAIL_HINT))
    return found


def _property(line: dict[str, Any], wanted: str) -> Any:
    """A line item property: Shopify sends ``properties`` as [{name, value}]."""
    props = line.get("properties")
    if isinstance(props, dict):
        props = [{"name": k, "value": v} for k, v in props.items()]
    if not isinstance(props, list):
        return None
    for prop in props:
        if isinstance(prop, dict) and isinstance(prop.get("name"), str) \
                and prop["name"].strip().lower() == wanted:
            return prop.get("value")
    return None
