"""Shopify: order creation and payment, cancellation and refund deliveries.

Genuine means: ``X-Shopify-Shop-Domain`` is one of the configured shops, and
``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw body under one
of that shop's secrets (several during a rotation). The learner is the line
item's ``email`` property; the course is its SKU (a course id, or a SKU the
LMS redirects to a course).

Endpoints and the topics they act on are declared in :data:`STOREFRONT`:
``order/create`` (``orders/create``, ``orders/paid``) enrolls,
``order/cancelled`` (``orders/cancelled``) withdraws the whole order,
``refund/create`` (``refunds/create``) the refunded line items.

Refunds and cancellations are recorded whatever ``unenroll_on_refund`` says:
a line item they name is never enrolled afterwards, even when the order
arrives after them (Shopify does not order deliveries of different topics).
``unenroll_on_refund`` decides only whether an enrolled item is unenrolled.

A delivery for another topic is stored, logged and answered 200 (so Shopify
neither retries nor disables the webhook) but not acted on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import setting_types as config  # the setting types, not the loader
from ..store import AWAITING_PAYMENT, NewOrder, Unenroll
from .base import (
    LEARNER_EMAIL_HELP,
    PROPERTIES_HELP,
    Endpoint,
    Outcome,
    Storefront,
    external_id,
    hint,
    ignored,
    learner,
    line_items,
    parse_json_object,
    rejected,
    signature_valid,
)

PROVIDER = "shopify"


def domain_name(value: Any) -> str:
    """The ``shop_domain`` setting: a bare domain, compared without case."""
    value = config.nonempty(value).lower()
    if "/" in value or ":" in value or " " in value:
        raise ValueError("must be the bare shop domain, such as my-school.myshopify.com")
    return value


#: the GraphQL Admin API version reconciliation is written and tested against
API_VERSION = "2025-07"


def api_version(value: Any) -> str:
    """An Admin API version: YYYY-MM, a quarter's first month."""
    value = config.nonempty(value)
    year, _, month = value.partition("-")
    if not (len(year) == 4 and year.isdigit() and month in ("01", "04", "07", "10")):
        raise ValueError(f"must be an Admin API version such as {API_VERSION}")
    return value


@dataclass(frozen=True, kw_only=True)
class Shop:
    """One Shopify shop's settings: ``[shopify]``, or ``[[shopify]]`` for several."""
    shop_domain: str = config.setting(config.REQUIRED, domain_name,
                                      "the shop's *.myshopify.com domain")
    secret: list[str] = config.setting(config.REQUIRED, config.secrets,
                                       "the webhook signing secret; a list of secrets while "
                                       "rotating")
    require_payment: bool = config.setting(False, config.boolean, "enroll an order only once "
                                                                  "its financial_status is paid")
    accept_test_orders: bool = config.setting(True, config.boolean,
                                              "enroll orders Shopify marks test: true")
    unenroll_on_refund: bool = config.setting(False, config.boolean,
                                              "unenroll the refunded or cancelled line items "
                                              "(destructive: off by default)")
    learner_email_properties: tuple[str, ...] = config.setting(("email",), config.names,
                                                               PROPERTIES_HELP)
    learner_email: str = config.setting("property", config.choice("property", "buyer"),
                                        LEARNER_EMAIL_HELP)
    admin_token: str = config.setting("", config.optional_secret,
                                      "Admin API access token (shpat_...) of a custom app with "
                                      "read_orders: orders are read back (reconcile); "
                                      "empty = off")
    api_version: str = config.setting(API_VERSION, api_version,
                                      "the Admin API version read back with (pinned)")
    api_url: str = config.setting("", config.optional_url,
                                  "the Admin API's root URL; empty = https://<shop_domain>")

    @property
    def readable(self) -> bool:
        """Whether its orders can be read back (an Admin API token is set)."""
        return bool(self.admin_token)


def _signer(headers: Mapping[str, str], body: bytes, shops: Sequence[Shop]) -> Shop | Outcome:
    """The shop whose secret signed this delivery, or the rejection."""
    domain = headers.get("X-Shopify-Shop-Domain")
    signature = headers.get("X-Shopify-Hmac-Sha256")
    if not domain:
        return rejected(400, "missing-shop-domain")
    shop_domain = domain.strip().lower()[:255]
    if not signature:
        return rejected(400, "missing-signature", shop_domain)
    shop = next((s for s in shops if s.shop_domain == shop_domain), None)
    if shop is None:
        return rejected(403, "unknown-shop", shop_domain)
    if not signature_valid(body, shop.secret, signature):
        return rejected(403, "bad-signature", shop_domain)
    return shop


def verified(headers: Mapping[str, str], body: bytes, shops: Sequence[Shop]) -> bool:
    """Whether a configured shop signed this delivery."""
    return not isinstance(_signer(headers, body, shops), Outcome)


def receive(headers: Mapping[str, str], body: bytes, shops: Sequence[Shop],
            endpoint: Endpoint) -> Outcome:
    """Verify a delivery and, when genuine, read what it asks for."""
    shop = _signer(headers, body, shops)
    if isinstance(shop, Outcome):
        return shop
    shop_domain = shop.shop_domain
    doc = parse_json_object(body)
    if doc is None:
        return rejected(400, "body-not-json-object", shop_domain)
    topic = headers.get("X-Shopify-Topic")
    if topic is not None and topic.strip().lower() not in endpoint.topics:
        return ignored("topic-not-handled-here", shop_domain,
                       f"topic {topic[:60]!r} sent to the {endpoint.path} endpoint: check the "
                       "webhook's event in the Shopify admin")
    return judge(doc, shop, endpoint.path)


def judge(doc: dict[str, Any], shop: Shop, path: str) -> Outcome:
    """What a genuine body means at the endpoint ``path`` (an order, its
    cancellation, a refund): a delivery's, or one made from an order read
    back from the Admin API (reconciliation), decided alike."""
    shop_domain = shop.shop_domain
    if path == "refund/create":
        return _refund(doc, shop, shop_domain)
    order_id = external_id(doc.get("id"))
    if order_id is None:
        return rejected(400, "order-id-missing", shop_domain)
    if doc.get("test") is True and not shop.accept_test_orders:
        return ignored("test-order-ignored", shop_domain)
    if path == "order/cancelled":
        # Kept whatever unenroll_on_refund says: an item of a cancelled order
        # is never enrolled, even if the order itself arrives only later.
        return Outcome(200, "cancellation" if shop.unenroll_on_refund else "unenroll-off",
                       shop_domain, _order(doc, order_id, shop),
                       unenroll=Unenroll(PROVIDER, shop_domain, order_id, None, "cancelled",
                                         act=shop.unenroll_on_refund))
    unpaid = shop.require_payment and doc.get("financial_status") != "paid"
    order = _order(doc, order_id, shop, AWAITING_PAYMENT if unpaid else None)
    reason = ("awaiting-payment" if unpaid else
              "accepted" if order.items else "accepted-no-line-items")
    return Outcome(200, reason, shop_domain, order)


def _order(doc: dict[str, Any], order_id: str, shop: Shop, hold: str | None = None) -> NewOrder:
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        name = f"#{order_id}"
    names = shop.learner_email_properties
    email = learner(lambda line: next((v for n in names if (v := _property(line, n))), None),
                    _buyer(doc), shop.learner_email)
    where = hint("line item property", names, shop.learner_email)
    return NewOrder(provider=PROVIDER, shop=shop.shop_domain, external_id=order_id,
                    name=name.strip(), hold=hold,
                    items=[] if hold else line_items(doc.get("line_items"), email, where))


def _buyer(doc: dict[str, Any]) -> Any:
    """The buyer's email: the order's, else its customer's."""
    customer = doc.get("customer")
    return (doc.get("email") or doc.get("contact_email")
            or (customer.get("email") if isinstance(customer, dict) else None))


def _refund(doc: dict[str, Any], shop: Shop, shop_domain: str) -> Outcome:
    """``refunds/create``: unenroll exactly the refunded line items."""
    order_id = external_id(doc.get("order_id"))
    if order_id is None:
        return rejected(400, "order-id-missing", shop_domain)
    refunded = []
    lines = doc.get("refund_line_items")
    for line in lines if isinstance(lines, list) else []:
        if isinstance(line, dict) and (item_id := external_id(line.get("line_item_id"))):
            refunded.append(item_id)
    if not refunded:
        return ignored("refund-without-line-items", shop_domain)
    return Outcome(200, "refund" if shop.unenroll_on_refund else "unenroll-off", shop_domain,
                   unenroll=Unenroll(PROVIDER, shop_domain, order_id, refunded, "refunded",
                                     act=shop.unenroll_on_refund))


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


STOREFRONT = Storefront(
    name=PROVIDER, receive=receive, verified=verified, settings=Shop, shop_key="shop_domain",
    endpoints=(
        Endpoint("order/create", ("orders/create", "orders/paid"),
                 "enrolls (with require_payment, once financial_status is paid)"),
        Endpoint("order/cancelled", ("orders/cancelled",),
                 "never enrolls the order's items from then on; with unenroll_on_refund, "
                 "unenrolls the enrolled ones"),
        Endpoint("refund/create", ("refunds/create",),
                 "never enrolls the refunded line items from then on; with "
                 "unenroll_on_refund, unenrolls them if enrolled"),
    ))
