"""/webhooks/woocommerce/order/create and /order/update: every answer, the
ping, payment, the learner email in meta_data, and idempotence."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from .conftest import COURSE, WOO_AGENT, until, woo_line, woo_order

CREATE = "/webhooks/woocommerce/order/create"
UPDATE = "/webhooks/woocommerce/order/update"


def answer(response) -> dict:
    return json.loads(response.body)


def settled(harness) -> bool:
    items = harness.items()
    return bool(items) and all(i["state"] != "pending" for i in items)


@pytest.mark.gen_test
@pytest.mark.parametrize("path, topic", [(CREATE, "order.created"), (UPDATE, "order.updated"),
                                         (CREATE + "/", "order.created")])
async def test_signed_order_enrolls_on_either_path(harness, lms, path, topic):
    await harness.start()
    order = woo_order(woo_line(email="ada@example.org"), woo_line(email="bob@example.org"),
                      woo_line(sku="course-v1:Demo+DS201+2026", email="ada@example.org"))
    assert len(json.dumps(order)) > 6000
    response = await harness.woocommerce(order, path=path, topic=topic)
    assert response.code == 200, response.body
    [delivery] = harness.deliveries()
    assert (delivery["provider"], delivery["status"]) == ("woocommerce", 200)
    assert delivery["body"] == json.dumps(order).encode()
    assert harness.db("SELECT provider, shop, external_id, name FROM orders") == [
        ("woocommerce", "https://shop.example", str(order["id"]), f"#{order['id']}")]
    await until(lambda: len(lms.learners()) == 3 and settled(harness))
    assert sorted((x.course, x.email) for x in lms.learners()) == [
        ("course-v1:Demo+DS201+2026", "ada@example.org"), (COURSE, "ada@example.org"),
        (COURSE, "bob@example.org")]
    assert [i["state"] for i in harness.items()] == ["enrolled"] * 3


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_get_405(harness, method):
    await harness.start()
    body = b"{}" if method == "PUT" else None
    response = await harness.request(UPDATE, method=method, body=body,
                                     allow_nonstandard_methods=True)
    assert response.code == 405
    assert harness.deliveries()[0]["reason"] == "method-not-allowed"


@pytest.mark.gen_test
async def test_activation_ping_is_answered_200_and_logged(harness, caplog):
    await harness.start()
    caplog.set_level(logging.INFO, logger="edx_hooks")
    response = await harness.request(CREATE, body=b"webhook_id=12", headers={
        "Content-Type": "application/x-www-form-urlencoded", "User-Agent": WOO_AGENT})
    assert response.code == 200
    assert answer(response)["reason"] == "ping"
    [line] = [r.getMessage() for r in caplog.records if "event=delivery.ping" in r.getMessage()]
    assert "webhook_id=12" in line and "ip=127.0.0.1" in line and "WooCommerce/9.4.2" in line
    assert [r.levelname for r in caplog.records if "delivery.ping" in r.getMessage()] == ["INFO"]
    [delivery] = harness.deliveries()
    assert (delivery["status"], delivery["reason"], delivery["body"]) == (200, "ping",
                                                                          b"webhook_id=12")
    assert harness.db("SELECT count(*) FROM orders") == [(0,)]


@pytest.mark.gen_test
@pytest.mark.parametrize("content_type, body, reason", [
    ("application/x-www-form-urlencoded", b"hello=world", "form-without-webhook-id"),
    ("application/x-www-form-urlencoded", b"", "form-without-webhook-id"),
    ("text/plain", b"webhook_id=12", "unsupported-content-type"),
    ("multipart/form-data; boundary=x", b"--x--", "unsupported-content-type"),
])
async def test_bodies_that_are_neither_ping_nor_json_are_400(harness, content_type, body,
                                                             reason):
    await harness.start()
    headers = {"Content-Type": content_type} if content_type else {}
    response = await harness.request(CREATE, body=body, headers=headers)
    assert response.code == 400
    assert answer(response)["reason"] == reason
    assert harness.deliveries()[0]["reason"] == reason


@pytest.mark.gen_test
async def test_body_without_content_type_is_400(harness):
    await harness.start()
    reply = await harness.raw(b"POST " + CREATE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert reply.startswith(b"HTTP/1.1 400")
    assert harness.deliveries()[0]["reason"] == "unsupported-content-type"


@pytest.mark.gen_test
@pytest.mark.parametrize("kwargs, reason", [
    ({"source": None}, "missing-source"),
    ({"headers": {"X-WC-Webhook-Signature": None}}, "missing-signature"),
])
async def test_missing_header_is_400(harness, kwargs, reason):
    await harness.start()
    response = await harness.woocommerce(woo_order(woo_line()), **kwargs)
    assert response.code == 400 and answer(response)["reason"] == reason
    assert harness.db("SELECT count(*) FROM orders") == [(0,)]


@pytest.mark.gen_test
@pytest.mark.parametrize("body", [b"[]", b"not json", b"42", b"\xc3\x28"])
async def test_signed_body_that_is_not_a_json_object_is_400(harness, body):
    await harness.start()
    response = await harness.woocommerce(body)
    assert response.code == 400 and answer(response)["reason"] == "body-not-json-object"


@pytest.mark.gen_test
@pytest.mark.parametrize("source", ["https://shop.example/", "https://shop.example",
                                    "HTTPS://Shop.Example/", "https://SHOP.EXAMPLE"])
async def test_source_with_or_without_slash_and_in_any_case(harness, source):
    await harness.start()
    response = await harness.woocommerce(woo_order(woo_line()), source=source)
    assert response.code == 200
    assert harness.db("SELECT shop FROM orders") == [("https://shop.example",)]


@pytest.mark.gen_test
@pytest.mark.parametrize("kwargs, reason", [
    ({"source": "http://shop.example/"}, "unknown-source"),
    ({"source": "https://shop.example.evil/"}, "unknown-source"),
    ({"source": "https://shop.example/other/"}, "unknown-source"),
    ({"source": "https://shop.example//"}, "unknown-source"),
    ({"source": "https://evil.example/?https://shop.example/"}, "unknown-source"),
    ({"secret": "guessed"}, "bad-signature"),
    ({"headers": {"X-WC-Webhook-Signature": "***"}}, "bad-signature"),
])
async def test_foreign_or_forged_delivery_is_403(harness, lms, kwargs, reason):
    await harness.start()
    response = await harness.woocommerce(woo_order(woo_line()), **kwargs)
    assert response.code == 403 and answer(response)["reason"] == reason
    assert harness.db("SELECT count(*) FROM orders") == [(0,)]
    assert [(d["status"], d["reason"]) for d in harness.deliveries()] == [(403, reason)]
    await harness.quiet()
    assert lms.calls == []


@pytest.mark.gen_test
async def test_secret_is_html_entity_decoded_as_wordpress_does(harness):
    # The admin page can show "a&amp;b" for a secret WooCommerce signs with as "a&b".
    await harness.start(woocommerce={"secret": "s3&amp;cr&#039;t"})
    response = await harness.woocommerce(woo_order(woo_line()), secret="s3&cr't")
    assert response.code == 200


@pytest.mark.gen_test
async def test_unpaid_order_is_200_awaiting_payment_then_enrolled_once_when_paid(harness, lms):
    await harness.start(woocommerce={"require_payment": True})
    order = woo_order(woo_line(email="a@example.org"), woo_line(email="b@example.org"),
                      paid=False, status="on-hold")
    # created unpaid, then updated still unpaid, six more times: never a
    # failure in WooCommerce's eyes (it disables a webhook after five)
    for path in [CREATE] + [UPDATE] * 7:
        response = await harness.woocommerce(order, path=path)
        assert response.code == 200 and answer(response)["reason"] == "awaiting-payment"
    assert harness.db("SELECT external_id, hold FROM orders") == [
        (str(order["id"]), "awaiting-payment")]
    assert [(d["status"], d["reason"]) for d in harness.deliveries()] == [
        (200, "awaiting-payment")] * 8
    assert harness.items() == []
    code, out, _ = await harness.cli("orders", "--state", "awaiting-payment")
    assert code == 0 and str(order["id"]) in out

    paid = woo_order(*order["line_items"], order_id=order["id"], paid=True)
    for _ in range(3):  # paid, then updated again (completed, a note added...)
        response = await harness.woocommerce(paid, path=UPDATE, topic="order.updated")
        assert response.code == 200
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    await harness.quiet()
    assert sorted(x.email for x in lms.learners()) == ["a@example.org", "b@example.org"]


@pytest.mark.gen_test
@pytest.mark.parametrize("date_paid", [None, ""])
async def test_unpaid_order_is_processed_when_payment_is_not_required(harness, lms, date_paid):
    await harness.start()
    order = woo_order(woo_line(), paid=False)
    order["date_paid_gmt"] = date_paid
    response = await harness.woocommerce(order)
    assert response.code == 200
    await until(lambda: settled(harness))
    assert len(lms.learners()) == 1


@pytest.mark.gen_test
async def test_paid_date_that_is_not_a_date_counts_as_paid_with_a_warning(harness, lms,
                                                                         caplog):
    await harness.start(woocommerce={"require_payment": True})
    order = woo_order(woo_line())
    order["date_paid_gmt"] = "yesterday-ish"
    response = await harness.woocommerce(order)
    assert response.code == 200
    warnings = [r for r in caplog.records if r.levelname == "WARNING"
                and "yesterday-ish" in r.getMessage()]
    assert len(warnings) == 1 and "event=delivery.warning" in warnings[0].getMessage()
    await until(lambda: settled(harness))


@pytest.mark.gen_test
async def test_created_then_updated_ten_times_enrolls_once(harness, lms):
    await harness.start()
    order = woo_order(woo_line(email="a@example.org"), woo_line(email="b@example.org"))
    await harness.woocommerce(order, path=CREATE)
    responses = await asyncio.gather(*[
        harness.woocommerce(order, path=UPDATE, topic="order.updated") for _ in range(10)])
    assert {r.code for r in responses} == {200}
    await until(lambda: settled(harness))
    await harness.quiet()
    assert sorted(x.email for x in lms.learners()) == ["a@example.org", "b@example.org"]
    assert harness.db("SELECT count(*) FROM orders") == [(1,)]
    assert harness.db("SELECT count(*) FROM deliveries") == [(11,)]


@pytest.mark.gen_test
async def test_line_item_added_on_update_is_the_only_one_enrolled(harness, lms):
    await harness.start()
    order = woo_order(woo_line(email="a@example.org"))
    await harness.woocommerce(order)
    await until(lambda: settled(harness))
    order["line_items"].append(woo_line(email="c@example.org"))
    await harness.woocommerce(order, path=UPDATE, topic="order.updated")
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    assert [x.email for x in lms.learners()] == ["a@example.org", "c@example.org"]


@pytest.mark.gen_test
async def test_learner_email_lookup_in_meta_data(harness, lms):
    await harness.start()
    pif = lambda key, fields: {"id": 1, "key": key, "value": fields}  # noqa: E731
    lines = [
        # global fields, email first
        woo_line(email=None, meta=[pif("_alg_wc_pif_global", [
            {"type": "email", "_value": "global@example.org"}])]),
        # other plugins' values of every shape first, then the fields
        woo_line(email=None, meta=[
            {"key": "a", "value": "text"}, {"key": "b", "value": 3}, {"key": "c", "value": {}},
            {"key": "d", "value": ["x", "y"]}, {"key": "e", "value": None}, "junk",
            pif("_alg_wc_pif_local", ["odd", {"type": "text", "_value": "Bob"},
                                      {"type": "email", "_value": "local@example.org"}])]),
        # no email field at all
        woo_line(email=None),
        # no meta_data at all, and meta_data of the wrong type
        woo_line(meta=[]), woo_line(meta_data="oops"),
        # an empty SKU
        woo_line(sku="", email="nosku@example.org"),
    ]
    response = await harness.woocommerce(woo_order(*lines))
    assert response.code == 200
    await until(lambda: settled(harness))
    items = harness.items()
    assert [(i["email"], i["state"]) for i in items] == [
        ("global@example.org", "enrolled"), ("local@example.org", "enrolled"),
        (None, "failed"), (None, "failed"), (None, "failed"), ("nosku@example.org", "failed")]
    assert items[2]["reason"] == "no learner email (a Product Input Fields field of type email)"
    assert items[5]["reason"].startswith("no SKU")
    assert len(lms.learners()) == 2


@pytest.mark.gen_test
async def test_endpoints_are_404_when_not_configured(harness):
    await harness.start(woocommerce=None)
    for path in (CREATE, UPDATE):
        response = await harness.woocommerce(woo_order(woo_line()), path=path)
        assert response.code == 404
    assert {d["reason"] for d in harness.deliveries()} == {"woocommerce-not-configured"}


@pytest.mark.gen_test
async def test_same_order_id_from_shopify_and_woocommerce_are_two_orders(harness, lms):
    from .conftest import line_item, shopify_order
    await harness.start()
    await harness.woocommerce(woo_order(woo_line(), order_id=4242))
    await harness.shopify(shopify_order(line_item(), order_id=4242))
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    assert len(lms.learners()) == 2
