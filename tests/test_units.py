"""The pure parts, checked in milliseconds: each storefront's receive(), the
batch write of deliveries (on a real SQLite file, without the service) and
the reading of the LMS's answers. The end-to-end tests cover the same paths
through the real service."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from edx_hooks.lms import PermanentError, Throttled, TransientError, error_for, outcomes
from edx_hooks.store import NewDelivery, NewItem, NewOrder, Unenroll, utcnow
from edx_hooks.store.writes import record_many
from edx_hooks.storefronts import STOREFRONTS
from edx_hooks.storefronts.shopify import Shop as ShopifyShop
from edx_hooks.storefronts.woocommerce import Shop as WooShop

from .conftest import (
    COURSE,
    SHOP,
    SHOPIFY_SECRET,
    WOO_SECRET,
    WOO_SOURCE,
    line_item,
    shopify_order,
    shopify_signature,
    woo_line,
    woo_order,
)

SHOPIFY = STOREFRONTS["shopify"]
WOO = STOREFRONTS["woocommerce"]


def shopify(doc, path="order/create", topic="orders/create", **shop):
    body = json.dumps(doc).encode()
    headers = HTTPHeaders({"X-Shopify-Shop-Domain": SHOP, "X-Shopify-Topic": topic,
                           "X-Shopify-Hmac-Sha256": shopify_signature(body, SHOPIFY_SECRET)})
    shops = [ShopifyShop(shop_domain=SHOP, secret=[SHOPIFY_SECRET], **shop)]
    return SHOPIFY.receive(headers, body, shops, SHOPIFY.endpoint(path))


def woo(doc, secret=WOO_SECRET, **shop):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    headers = HTTPHeaders({"Content-Type": "application/json", "X-WC-Webhook-Source": WOO_SOURCE,
                           "X-WC-Webhook-Topic": "order.updated",
                           "X-WC-Webhook-Signature": shopify_signature(body, secret)})
    shops = [WooShop(source=WOO_SOURCE, secret=[WOO_SECRET], **shop)]
    return WOO.receive(headers, body, shops, WOO.endpoint("order/update"))


# -- Shopify

def test_shopify_order_becomes_items_with_their_course_and_learner():
    out = shopify(shopify_order(line_item(email="a@example.org"), line_item(email=None),
                                order_id=42))
    assert (out.status, out.reason, out.shop) == (200, "accepted", SHOP)
    first, second = out.order.items
    assert (first.course_id, first.email, first.failure) == (COURSE, "a@example.org", None)
    assert second.failure == "no learner email (line item property 'email')"
    assert (out.order.external_id, out.order.name, out.order.hold) == ("42", "#42", None)


@pytest.mark.parametrize("change, status, reason", [
    (lambda h: h.pop("X-Shopify-Shop-Domain"), 400, "missing-shop-domain"),
    (lambda h: h.update({"X-Shopify-Shop-Domain": "other.myshopify.com"}), 403, "unknown-shop"),
    (lambda h: h.update({"X-Shopify-Hmac-Sha256": "AAAA"}), 403, "bad-signature"),
])
def test_shopify_refuses_what_it_cannot_verify(change, status, reason):
    body = json.dumps(shopify_order(line_item())).encode()
    headers = {"X-Shopify-Shop-Domain": SHOP,
               "X-Shopify-Hmac-Sha256": shopify_signature(body, SHOPIFY_SECRET)}
    change(headers)
    out = SHOPIFY.receive(HTTPHeaders(headers), body,
                          [ShopifyShop(shop_domain=SHOP, secret=[SHOPIFY_SECRET])],
                          SHOPIFY.endpoint("order/create"))
    assert (out.status, out.reason, out.order) == (status, reason, None)


def test_shopify_topics_payment_tests_and_refunds():
    order = shopify_order(line_item(), order_id=7)
    assert shopify(order, topic="orders/cancelled").reason == "topic-not-handled-here"
    unpaid = dict(order, financial_status="pending")
    held = shopify(unpaid, require_payment=True)
    assert (held.reason, held.order.hold, held.order.items) == (
        "awaiting-payment", "awaiting-payment", [])
    assert shopify(dict(order, test=True), accept_test_orders=False).reason == \
        "test-order-ignored"
    cancel = shopify(order, "order/cancelled", "orders/cancelled")
    assert (cancel.reason, cancel.unenroll.line_item_ids, cancel.unenroll.act) == (
        "unenroll-off", None, False)
    refund = shopify({"order_id": 7, "refund_line_items": [{"line_item_id": 99}]},
                     "refund/create", "refunds/create", unenroll_on_refund=True)
    assert (refund.reason, refund.unenroll.line_item_ids, refund.unenroll.act) == (
        "refund", ["99"], True)


# -- WooCommerce

@pytest.mark.parametrize("status, paid, require_payment, reason", [
    ("processing", True, False, "accepted"),
    ("on-hold", False, False, "accepted"),
    ("pending", False, False, "accepted"),
    ("on-hold", False, True, "awaiting-payment"),
    ("checkout-draft", False, False, "not-placed"),
    ("failed", False, False, "not-placed"),
    ("trash", True, False, "not-placed"),
    ("shipped", True, False, "accepted"),
    ("shipped", False, False, "awaiting-payment"),
    ("refunded", True, False, "order-refunded"),
    ("cancelled", False, True, "order-cancelled"),
])
def test_woocommerce_status_decides(status, paid, require_payment, reason):
    out = woo(woo_order(woo_line(), paid=paid, status=status), require_payment=require_payment)
    assert (out.status, out.reason) == (200, reason)
    if reason in ("awaiting-payment", "not-placed"):
        assert out.order.hold == reason and out.order.items == []
    if status in ("refunded", "cancelled"):
        assert out.unenroll.why == status and out.unenroll.act is False


def test_woocommerce_ping_signature_and_modification_time():
    ping = WOO.receive(HTTPHeaders({"Content-Type": "application/x-www-form-urlencoded"}),
                       b"webhook_id=24", [], WOO.endpoint("order/create"))
    assert (ping.status, ping.reason, ping.extra) == (200, "ping", {"webhook_id": "24"})
    big = WOO.receive(HTTPHeaders({"Content-Type": "application/x-www-form-urlencoded"}),
                      b"webhook_id=24&" + b"x" * 300, [], WOO.endpoint("order/create"))
    assert (big.status, big.reason) == (400, "form-too-large")
    assert woo(woo_order(woo_line()), secret="guessed").reason == "bad-signature"
    order = dict(woo_order(woo_line()), date_modified_gmt="2026-11-29T06:56:50")
    assert woo(order).order.modified_at == dt.datetime(2026, 11, 29, 6, 56, 50)
    # a date that does not fit in UTC is no date, not a crash (an unstored delivery)
    order = dict(woo_order(woo_line()), date_modified_gmt="0001-01-01T00:00:00+01:00",
                 date_paid_gmt="0001-01-01T00:00:00+01:00")
    out = woo(order)
    assert (out.status, out.reason, out.order.modified_at) == (200, "accepted", None)


# -- the batch write, on a real SQLite file

def delivery(status: int = 200) -> NewDelivery:
    return NewDelivery(provider="shopify", endpoint="POST /x", received_at=utcnow(),
                       client_ip="127.0.0.1", headers={}, body=b"{}", body_size=2,
                       status=status, reason="accepted", shop=SHOP)


def new_order(*item_ids: str, hold: str | None = None, **kw) -> NewOrder:
    return NewOrder(provider="shopify", shop=SHOP, external_id="1", name="#1", hold=hold,
                    items=[NewItem(i, COURSE, f"{i}@example.org", COURSE) for i in item_ids],
                    **kw)


def write(db, *calls):
    with db.begin() as conn:
        return record_many(conn, list(calls))


def states(db) -> list[tuple[str, str]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT external_id, state FROM items ORDER BY id")]


def test_record_many_stores_each_item_once_and_releases_a_hold(db):
    [held] = write(db, (delivery(), new_order("a", hold="awaiting-payment"), None))
    assert held.new_pending == [] and states(db) == []
    first, repeat = write(db, (delivery(), new_order("a", "b"), None),
                          (delivery(), new_order("a", "b", "c"), None))
    assert (first.new_pending, repeat.new_pending) == ([1, 2], [3])
    assert repeat.order_existed and states(db) == [("a", "pending"), ("b", "pending"),
                                                    ("c", "pending")]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT hold FROM orders").all() == [(None,)]


def test_record_many_keeps_a_refund_for_an_order_not_yet_known(db):
    refund = Unenroll("shopify", SHOP, "1", ["b"], "refunded", act=False)
    [early] = write(db, (delivery(), None, refund))
    assert early.order_id is None
    [later] = write(db, (delivery(), new_order("a", "b"), None))
    assert later.new_pending == [1]
    assert later.new_not_enrolled == [(2, "refunded before it was enrolled: not enrolled")]
    with db.connect() as conn:  # the early delivery now tells its order's story
        assert conn.exec_driver_sql("SELECT order_id FROM deliveries").all() == [(1,), (1,)]


def test_record_many_a_later_placed_status_lifts_a_woocommerce_cancellation(db):
    t = dt.datetime(2026, 11, 28, 11)
    cancel = Unenroll("shopify", SHOP, "1", None, "cancelled", act=False, modified_at=t)
    write(db, (delivery(), new_order("a", modified_at=t), cancel))
    assert states(db) == [("a", "not-enrolled")]
    [stale] = write(db, (delivery(), new_order("a", modified_at=t - dt.timedelta(hours=1)),
                         None))
    assert stale.new_pending == [] and states(db) == [("a", "not-enrolled")]
    [placed] = write(db, (delivery(), new_order("a", modified_at=t + dt.timedelta(hours=1)),
                          None))
    assert placed.new_pending == [1] and states(db) == [("a", "pending")]


# -- the LMS's answers

def answer(code: int, body: object = b"", headers: dict | None = None) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(HTTPRequest("http://lms/x"), code, headers=HTTPHeaders(headers or {}),
                        buffer=io.BytesIO(raw))


@pytest.mark.parametrize("code, kind, words", [
    (429, Throttled, "throttled"), (503, TransientError, "answered 503"),
    (403, PermanentError, "not global staff"), (400, PermanentError, "rejected the request"),
    (301, PermanentError, "redirected to /login"), (418, PermanentError, "unexpected answer"),
])
def test_one_classifier_for_every_answer(code, kind, words):
    error = error_for(answer(code, {"detail": "for a@example.org"}, {"Location": "/login",
                                                                       "Retry-After": "7"}),
                      "bulk_enroll", hints={400: "the LMS rejected the request",
                                            403: "not global staff"},
                      redact={"a@example.org": "<learner>"})
    assert type(error) is kind and words in str(error)
    assert error.status == code and "a@example.org" not in str(error)
    assert error.detail == '{"detail": "for <learner>"}'
    if kind is Throttled:
        assert error.retry_after == 7


def result(**fields) -> bytes:
    return json.dumps({"courses": {COURSE: {"results": [
        {"identifier": "a@example.org", **fields}]}}}).encode()


def outcome(body: bytes, course_id: str, email_address: str, action: str) -> str:
    """:func:`outcomes` for one learner: the result, or its error raised."""
    found = outcomes(body, course_id, [email_address], action)[email_address.lower()]
    if isinstance(found, PermanentError):
        raise found
    return found


@pytest.mark.parametrize("body, action, expected", [
    (result(after={"enrollment": True}), "enroll", "enrolled"),
    (result(after={"enrollment": False, "allowed": True}), "enroll", "allowed"),
    (result(after={"enrollment": False, "allowed": False}), "unenroll", "unenrolled"),
    (result(invalidIdentifier=True), "enroll", "rejected the learner email"),
    (result(error=True, error_message="course full"), "enroll", "error enrolling the "
                                                                 "learner: course full"),
    (result(after={"enrollment": False}), "enroll", "did not confirm the enrollment"),
    (b'{"courses": {}}', "enroll", "without a result for the course"),
    (json.dumps({"courses": {COURSE: {"results": []}}}).encode(), "enroll",
     "without a result for the learner"),
])
def test_a_200_is_read_per_learner(body, action, expected):
    if expected in ("enrolled", "allowed", "unenrolled"):
        assert outcome(body, COURSE, "A@example.org", action) == expected
    else:
        with pytest.raises(PermanentError, match=expected):
            outcome(body, COURSE, "a@example.org", action)
