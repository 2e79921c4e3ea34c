"""Real deliveries of a WooCommerce 10.0.2 shop (``fixtures/woocommerce-10.0.2``,
captured byte for byte with their headers; their README says what the shop
did before each), replayed to the real service in the order they came."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from edx_hooks.storefronts import signature_valid
from edx_hooks.storefronts.woocommerce import signing_key

from .conftest import until

FIXTURES = Path(__file__).parent / "fixtures" / "woocommerce-10.0.2"
SOURCE = "http://127.0.0.1:8088/"
REST_SECRET = "course-shop-secret-42"  # webhooks 24 and 25, made over the REST API
ADMIN_SECRET = "s3cret!&"  # webhook 26: typed as s3cret!&<x>, stored by wp-admin as this
COURSE = "course-v1:Demo+Course+2026"


def deliveries() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]


def raw_request(record: dict) -> bytes:
    """The request as the shop sent it: its headers in their order, its bytes."""
    head = f"{record['method']} {record['path']} {record['request_version']}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in record["headers"])
    return (head + "\r\n").encode("latin-1") + base64.b64decode(record["body_base64"])


def test_every_signed_delivery_verifies_with_its_webhooks_key_only():
    signed = 0
    for record in deliveries():
        headers = {k.lower(): v for k, v in record["headers"]}
        body = base64.b64decode(record["body_base64"])
        assert len(body) == record["body_length"]
        if "x-wc-webhook-signature" not in headers:
            assert body.startswith(b"webhook_id=")  # the pings are unsigned
            continue
        signed += 1
        key = ADMIN_SECRET if headers["x-wc-webhook-id"] == "26" else REST_SECRET
        other = REST_SECRET if key == ADMIN_SECRET else ADMIN_SECRET
        signature = headers["x-wc-webhook-signature"]
        assert signature_valid(body, [signing_key(key)], signature), record["seq"]
        assert not signature_valid(body, [signing_key(other)], signature)
        assert not signature_valid(body, ["s3cret!&<x>"], signature)  # what the admin typed
    assert signed == 14


#: (file number, status, reason) of each answer, with require_payment and
#: unenroll_on_refund on, and then with both off (the defaults)
STRICT = {
    1: "ping", 2: "ping", 3: "not-placed",
    4: "awaiting-payment", 5: "awaiting-payment",  # order A placed, bank transfer unpaid
    6: "accepted", 7: "accepted", 8: "refunded",   # paid, completed, refunded
    9: "awaiting-payment", 10: "awaiting-payment",  # order B
    11: "awaiting-payment", 12: "awaiting-payment",  # order C
    13: "awaiting-payment", 14: "awaiting-payment", 15: "cancelled",  # order D
    16: "ping", 17: "awaiting-payment",  # order E, through the wp-admin webhook
}
LENIENT = {
    1: "ping", 2: "ping", 3: "not-placed",
    4: "accepted", 5: "accepted", 6: "accepted", 7: "accepted", 8: "order-refunded",
    9: "accepted", 10: "accepted", 11: "accepted", 12: "accepted",
    13: "accepted", 14: "accepted", 15: "order-cancelled", 16: "ping", 17: "accepted",
}


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("strict", [True, False], ids=["payment-and-unenroll", "defaults"])
async def test_the_real_shop_deliveries_are_handled_as_the_shop_meant(harness, lms, strict):
    await harness.start(woocommerce={
        "source": SOURCE, "secret": [REST_SECRET, ADMIN_SECRET],
        "require_payment": strict, "unenroll_on_refund": strict})
    expected = STRICT if strict else LENIENT
    for record in deliveries():
        reply = await harness.raw(raw_request(record))
        status_line, _, rest = reply.partition(b"\r\n")
        answer = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert (status_line, answer["reason"]) == (b"HTTP/1.1 200 OK", expected[record["seq"]]), \
            record["seq"]
        await harness.quiet()  # each delivery settles before the next, as in the shop

    def items() -> dict[tuple[str, str], tuple[str, str | None]]:
        rows = harness.db("SELECT o.external_id, i.sku, i.state, i.email FROM items i "
                          "JOIN orders o ON o.id = i.order_id ORDER BY i.id")
        return {(order, sku): (state, email) for order, sku, state, email in rows}

    orders = dict(harness.db("SELECT external_id, hold FROM orders"))
    # the abandoned checkout (order 58) is recorded and never enrolled
    assert orders["58"] == "not-placed" and ("58", COURSE) not in items()
    if strict:
        assert items() == {
            ("59", COURSE): ("unenrolled", "lea.learner@example.com"),  # paid, then refunded
            ("59", "TSHIRT-M"): ("not-a-course", None),  # a T-shirt: no learner, no course
            ("63", COURSE): ("not-enrolled", "frank.cancel@example.com"),  # cancelled unpaid
        }
        # still waiting for payment: B (the learner is not the buyer), C, E
        assert {o for o, hold in orders.items() if hold == "awaiting-payment"} == {
            "61", "62", "64"}
        assert [(x.action, x.email) for x in lms.learners()] == [
            ("enroll", "lea.learner@example.com"), ("unenroll", "lea.learner@example.com")]
    else:
        assert items() == {
            ("59", COURSE): ("enrolled", "lea.learner@example.com"),  # refund: unenroll off
            ("59", "TSHIRT-M"): ("not-a-course", None),
            ("61", COURSE): ("enrolled", "carla.colleague@example.com"),  # not the buyer
            ("62", COURSE): ("failed", None),  # the learner email was left empty
            ("63", COURSE): ("enrolled", "frank.cancel@example.com"),  # cancel: unenroll off
            ("64", COURSE): ("enrolled", "gina.gift@example.com"),  # the wp-admin webhook
        }
        assert {x.email for x in lms.learners()} == {
            "lea.learner@example.com", "carla.colleague@example.com",
            "frank.cancel@example.com", "gina.gift@example.com"}
        assert len(lms.learners()) == 4  # order.created and order.updated of one order: one call
    reasons = dict(harness.db("SELECT i.sku, i.reason FROM items i JOIN orders o "
                              "ON o.id = i.order_id WHERE o.external_id = '59'"))
    assert reasons["TSHIRT-M"] == ("not a course (SKU 'TSHIRT-M' names none) and no learner "
                                   "email: nothing to enroll")
    await until(lambda: len(harness.deliveries()) == 17)
    assert {d["status"] for d in harness.deliveries()} == {200}
