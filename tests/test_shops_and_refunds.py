"""Several shops, key rotation, topic checks, payment, test orders, and
refunds and cancellations that unenroll."""

from __future__ import annotations

import json

import pytest

from .conftest import (
    SHOP,
    SHOPIFY_REFUND,
    SHOPIFY_SECRET,
    line_item,
    shopify_order,
    shopify_refund,
    until,
    woo_line,
    woo_order,
)
from .standin_lms import Forced

STAGING = "school-staging.myshopify.com"
UNENROLL = {"unenroll_on_refund": True}


def actions(lms) -> list[tuple[str, str]]:
    return [(x.action, x.email) for x in lms.learners()]


def states(harness) -> list[str]:
    return [i["state"] for i in harness.items()]


def settled(harness) -> bool:
    items = harness.items()
    return bool(items) and all(i["state"] in ("enrolled", "failed", "unenrolled",
                                              "unenroll-failed") for i in items)


@pytest.mark.gen_test
async def test_two_shops_with_the_same_order_id_are_two_orders(harness, lms):
    await harness.start(shopify=[{"shop_domain": SHOP, "secret": SHOPIFY_SECRET},
                                 {"shop_domain": STAGING, "secret": "staging-secret"}])
    live = shopify_order(line_item(email="live@example.org"), order_id=1001)
    staging = shopify_order(line_item(email="staging@example.org"), order_id=1001)
    assert (await harness.shopify(live)).code == 200
    assert (await harness.shopify(staging, shop=STAGING, secret="staging-secret")).code == 200
    # each shop's secret is its own
    assert (await harness.shopify(staging, shop=STAGING, secret=SHOPIFY_SECRET)).code == 403
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    assert sorted(harness.db("SELECT shop, external_id FROM orders")) == sorted([
        (SHOP, "1001"), (STAGING, "1001")])
    assert sorted(e for _, e in actions(lms)) == ["live@example.org", "staging@example.org"]


@pytest.mark.gen_test
async def test_a_delivery_signed_with_the_old_secret_is_genuine(harness, lms):
    await harness.start(shopify={"secret": ["rotated-new-secret", SHOPIFY_SECRET]},
                        woocommerce={"secret": ["new-woo", "old-woo"]})
    assert (await harness.shopify(shopify_order(line_item()), secret=SHOPIFY_SECRET)).code == 200
    assert (await harness.shopify(shopify_order(line_item()),
                                  secret="rotated-new-secret")).code == 200
    assert (await harness.shopify(shopify_order(line_item()), secret="other")).code == 403
    assert (await harness.woocommerce(woo_order(woo_line()), secret="old-woo")).code == 200
    assert (await harness.woocommerce(woo_order(woo_line()), secret="older-woo")).code == 403


@pytest.mark.gen_test
@pytest.mark.parametrize("topic", ["orders/cancelled", "products/create", "orders/updated"])
async def test_a_topic_the_endpoint_does_not_handle_is_stored_and_ignored(harness, lms, topic,
                                                                         caplog):
    await harness.start()
    response = await harness.shopify(shopify_order(line_item()),
                                     headers={"X-Shopify-Topic": topic})
    assert response.code == 200
    assert json.loads(response.body)["reason"] == "topic-not-handled-here"
    [delivery] = harness.deliveries()
    assert delivery["reason"] == "topic-not-handled-here"
    assert harness.db("SELECT count(*) FROM orders") == [(0,)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                and "topic-not-handled-here" in r.getMessage()]
    assert warnings and topic in "".join(r.getMessage() for r in caplog.records)
    await harness.quiet()
    assert lms.calls == []


@pytest.mark.gen_test
async def test_woocommerce_topic_check(harness, lms):
    await harness.start()
    response = await harness.woocommerce(woo_order(woo_line()), topic="order.deleted")
    assert response.code == 200
    assert json.loads(response.body)["reason"] == "topic-not-handled-here"
    assert (await harness.woocommerce(woo_order(woo_line()), topic="order.updated")).code == 200
    await until(lambda: settled(harness))
    assert len(lms.learners()) == 1


@pytest.mark.gen_test
async def test_shopify_unpaid_create_then_paid_enrolls_once(harness, lms):
    await harness.start(shopify={"require_payment": True})
    order = shopify_order(line_item(email="a@example.org"), line_item(email="b@example.org"))
    order["financial_status"] = "pending"
    response = await harness.shopify(order)
    assert (response.code, json.loads(response.body)["reason"]) == (200, "awaiting-payment")
    code, out, _ = await harness.cli("orders")
    assert "awaiting-payment" in out
    await harness.quiet()
    assert harness.items() == [] and lms.calls == []

    order["financial_status"] = "paid"
    for _ in range(3):
        assert (await harness.shopify(order, headers={"X-Shopify-Topic": "orders/paid"})).code \
            == 200
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    await harness.quiet()
    assert sorted(actions(lms)) == [("enroll", "a@example.org"), ("enroll", "b@example.org")]
    assert harness.db("SELECT hold FROM orders") == [(None,)]


@pytest.mark.gen_test
async def test_test_orders_can_be_ignored(harness, lms):
    await harness.start(shopify={"accept_test_orders": False})
    order = shopify_order(line_item())
    order["test"] = True
    response = await harness.shopify(order)
    assert (response.code, json.loads(response.body)["reason"]) == (200, "test-order-ignored")
    assert harness.deliveries()[0]["reason"] == "test-order-ignored"
    assert harness.db("SELECT count(*) FROM orders") == [(0,)]
    order["test"] = False
    assert (await harness.shopify(order)).code == 200
    await until(lambda: settled(harness))
    assert len(lms.learners()) == 1


@pytest.mark.gen_test
async def test_a_partial_refund_unenrolls_only_its_line_item(harness, lms):
    await harness.start(shopify=UNENROLL)
    kept, refunded = line_item(email="kept@example.org"), line_item(email="gone@example.org")
    order = shopify_order(kept, refunded)
    await harness.shopify(order)
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    for _ in range(2):  # Shopify may deliver it twice
        response = await harness.shopify(shopify_refund(order, refunded, embed=True),
                                         **SHOPIFY_REFUND)
        assert (response.code, json.loads(response.body)["reason"]) == (200, "refund")
    await until(lambda: states(harness) == ["enrolled", "unenrolled"])
    await harness.quiet()
    assert actions(lms) == [("enroll", "kept@example.org"), ("enroll", "gone@example.org"),
                            ("unenroll", "gone@example.org")]
    code, out, _ = await harness.cli("order", "shopify", str(order["id"]))
    assert "unenrolled" in out and out.count("refund") >= 2


@pytest.mark.gen_test
async def test_a_cancellation_unenrolls_the_whole_order_once(harness, lms):
    await harness.start(shopify=UNENROLL)
    order = shopify_order(line_item(email="a@example.org"), line_item(email="b@example.org"))
    await harness.shopify(order)
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    order["cancelled_at"] = "2026-11-28T12:00:00Z"
    for _ in range(3):
        response = await harness.shopify(order, path="/webhooks/shopify/order/cancelled",
                                         headers={"X-Shopify-Topic": "orders/cancelled"})
        assert response.code == 200
    await until(lambda: states(harness) == ["unenrolled", "unenrolled"])
    await harness.quiet()
    assert sorted(a for a in actions(lms) if a[0] == "unenroll") == [
        ("unenroll", "a@example.org"), ("unenroll", "b@example.org")]
    code, out, _ = await harness.cli("orders", "--json")
    assert json.loads(out)[0]["state"] == "unenrolled"


@pytest.mark.gen_test
async def test_unenrolling_is_off_unless_asked_for(harness, lms):
    await harness.start()
    order = shopify_order(line_item())
    await harness.shopify(order)
    await until(lambda: settled(harness))
    response = await harness.shopify(order, path="/webhooks/shopify/order/cancelled",
                                     headers={"X-Shopify-Topic": "orders/cancelled"})
    assert (response.code, json.loads(response.body)["reason"]) == (200, "unenroll-off")
    await harness.quiet()
    assert states(harness) == ["enrolled"] and len(lms.learners()) == 1


@pytest.mark.gen_test
@pytest.mark.parametrize("status", ["refunded", "cancelled"])
async def test_woocommerce_refunded_or_cancelled_order_unenrolls(harness, lms, status):
    await harness.start(woocommerce=UNENROLL)
    order = woo_order(woo_line(email="a@example.org"), woo_line(email="b@example.org"))
    await harness.woocommerce(order)
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    order["status"] = status
    for _ in range(2):
        response = await harness.woocommerce(order, path="/webhooks/woocommerce/order/update",
                                             topic="order.updated")
        assert (response.code, json.loads(response.body)["reason"]) == (200, status)
    await until(lambda: states(harness) == ["unenrolled", "unenrolled"])
    await harness.quiet()
    assert len([a for a in actions(lms) if a[0] == "unenroll"]) == 2


@pytest.mark.gen_test
async def test_a_refunded_woocommerce_order_is_never_enrolled(harness, lms):
    await harness.start()
    response = await harness.woocommerce(woo_order(woo_line(), status="refunded"))
    assert (response.code, json.loads(response.body)["reason"]) == (200, "order-refunded")
    # recorded, so that the operator sees it, and never enrolled
    assert [(i["state"], i["reason"]) for i in harness.items()] == [
        ("not-enrolled", "refunded before it was enrolled: not enrolled")]
    await harness.quiet()
    assert lms.calls == []


@pytest.mark.gen_test
async def test_an_unenroll_waits_for_the_enrollment_under_way(harness, lms):
    await harness.start(shopify=UNENROLL)
    lms.forced.append(Forced(status=200, hang=1.0, body=json.dumps({
        "action": "enroll", "courses": {"course-v1:Demo+PY101+2026": {"results": [{
            "identifier": "racer@example.org", "after": {"enrollment": True}}]}}})))
    order = shopify_order(line_item(email="racer@example.org"))
    await harness.shopify(order)
    await until(lambda: lms.calls)  # the enroll call is in flight
    response = await harness.shopify(order, path="/webhooks/shopify/order/cancelled",
                                     headers={"X-Shopify-Topic": "orders/cancelled"})
    assert response.code == 200
    assert states(harness) == ["pending"]
    await until(lambda: states(harness) == ["unenrolled"], timeout=10)
    assert actions(lms) == [("enroll", "racer@example.org"), ("unenroll", "racer@example.org")]
    first, second = lms.calls
    assert second.at - first.at >= 0.9  # after the enrollment answered, not beside it


@pytest.mark.gen_test
async def test_a_failed_unenroll_is_recorded_and_retried_by_the_operator(harness, lms):
    await harness.start(shopify=UNENROLL, retry={"sweep_seconds": 0.3})
    order = shopify_order(line_item(email="a@example.org"))
    await harness.shopify(order)
    await until(lambda: settled(harness))
    lms.forced.append(Forced(status=403))
    await harness.shopify(order, path="/webhooks/shopify/order/cancelled",
                          headers={"X-Shopify-Topic": "orders/cancelled"})
    await until(lambda: states(harness) == ["unenroll-failed"])
    assert "not global staff" in harness.items()[0]["reason"]
    code, out, _ = await harness.cli("retry", "shopify", str(order["id"]))
    assert code == 0
    await until(lambda: states(harness) == ["unenrolled"])
    assert [a for a, _ in actions(lms)] == ["enroll", "unenroll", "unenroll"]
