"""POST /webhooks/shopify/order/create: every answer, and what is stored for it."""

from __future__ import annotations

import asyncio
import json

import pytest

from .conftest import COURSE, SHOP, line_item, shopify_order, shopify_signature, until

PATH = "/webhooks/shopify/order/create"


def answer(response) -> dict:
    return json.loads(response.body)


@pytest.mark.gen_test
async def test_signed_order_is_stored_and_enrolled(harness):
    await harness.start()
    order = shopify_order(line_item(email="ada@example.org"))
    response = await harness.shopify(order)
    assert response.code == 200
    assert answer(response)["reason"] == "accepted"

    [delivery] = harness.deliveries()
    assert delivery["status"] == 200 and delivery["reason"] == "accepted"
    assert delivery["body"] == json.dumps(order).encode()
    assert delivery["client_ip"] == "127.0.0.1"
    assert json.loads(delivery["headers"])["X-Shopify-Shop-Domain"] == SHOP
    assert harness.db("SELECT provider, shop, external_id, name FROM orders") == [
        ("shopify", SHOP, str(order["id"]), order["name"])]

    await until(lambda: harness.items()[0]["state"] == "enrolled")
    [call] = harness.lms.calls
    assert call.form["action"] == "enroll"
    assert call.form["courses"] == COURSE
    assert call.form["identifiers"] == "ada@example.org"
    assert call.form["auto_enroll"] == "true" and call.form["email_students"] == "true"
    assert order["name"] in call.form["reason"]
    assert call.authorization.startswith("JWT ")
    item = harness.items()[0]
    assert item["attempts"] == 1 and item["reason"] is None
    assert item["course_id"] == COURSE and item["email"] == "ada@example.org"


@pytest.mark.gen_test
async def test_answer_does_not_wait_for_the_lms(harness, lms):
    from .standin_lms import Forced
    await harness.start()
    lms.forced.append(Forced(status=200, hang=30, body="{}"))  # the LMS holds its call
    response = await harness.shopify(shopify_order(line_item()))
    assert response.code == 200
    assert harness.items()[0]["state"] == "pending"
    await until(lambda: lms.in_flight == 1)  # answered while the LMS still holds it


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_get_405_and_are_stored(harness, method):
    await harness.start()
    body = b"{}" if method in ("PUT", "PATCH") else None
    response = await harness.request(PATH, method=method, body=body,
                                     allow_nonstandard_methods=True)
    assert response.code == 405
    assert response.headers["Allow"] == "POST"
    [delivery] = harness.deliveries()
    assert (delivery["status"], delivery["reason"]) == (405, "method-not-allowed")
    assert delivery["endpoint"] == f"{method} {PATH}"


@pytest.mark.gen_test
@pytest.mark.parametrize("drop, reason", [
    ("X-Shopify-Shop-Domain", "missing-shop-domain"),
    ("X-Shopify-Hmac-Sha256", "missing-signature"),
])
async def test_missing_header_is_400(harness, drop, reason):
    await harness.start()
    response = await harness.shopify(shopify_order(line_item()), headers={drop: None})
    assert response.code == 400
    assert answer(response)["reason"] == reason
    assert [(d["status"], d["reason"]) for d in harness.deliveries()] == [(400, reason)]
    assert harness.db("SELECT count(*) FROM orders") == [(0,)]


@pytest.mark.gen_test
@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"order"', b"\xff\xfe{}",
                                  b"[" * 100000])
async def test_signed_body_that_is_not_a_json_object_is_400(harness, body):
    await harness.start()
    response = await harness.shopify(body)
    assert response.code == 400
    assert answer(response)["reason"] == "body-not-json-object"
    [delivery] = harness.deliveries()
    assert delivery["status"] == 400 and delivery["body"] == body[:64 * 1024]
    assert delivery["body_size"] == len(body)


@pytest.mark.gen_test
async def test_order_without_id_is_400(harness):
    await harness.start()
    order = shopify_order(line_item())
    del order["id"]
    response = await harness.shopify(order)
    assert response.code == 400 and answer(response)["reason"] == "order-id-missing"


@pytest.mark.gen_test
@pytest.mark.parametrize("kwargs, reason", [
    ({"shop": "other.myshopify.com"}, "unknown-shop"),
    ({"secret": "not-the-secret"}, "bad-signature"),
    ({"headers": {"X-Shopify-Hmac-Sha256": "%%% not base64 %%%"}}, "bad-signature"),
    ({"headers": {"X-Shopify-Hmac-Sha256": "c2hvcnQ="}}, "bad-signature"),
])
async def test_forged_or_foreign_delivery_is_403(harness, lms, kwargs, reason):
    await harness.start()
    response = await harness.shopify(shopify_order(line_item()), **kwargs)
    assert response.code == 403
    assert answer(response)["reason"] == reason
    assert [(d["status"], d["reason"]) for d in harness.deliveries()] == [(403, reason)]
    assert harness.db("SELECT count(*) FROM orders") == [(0,)]
    assert lms.calls == []


@pytest.mark.gen_test
async def test_shop_domain_is_compared_without_case(harness):
    await harness.start()
    response = await harness.shopify(shopify_order(line_item()), shop=SHOP.upper())
    assert response.code == 200


@pytest.mark.gen_test
async def test_body_over_the_limit_is_413(harness):
    await harness.start(server={"max_body_size": 4096})
    order = shopify_order(line_item(title="x" * 5000))
    response = await harness.shopify(order)
    assert response.code == 413
    [delivery] = harness.deliveries()
    assert (delivery["status"], delivery["reason"]) == (413, "body-too-large")
    # a body just under the limit is fine
    response = await harness.shopify(shopify_order(line_item(title="x" * 1000)))
    assert response.code == 200


@pytest.mark.gen_test
async def test_chunked_body_over_the_limit_is_413(harness):
    await harness.start(server={"max_body_size": 4096})
    body = json.dumps(shopify_order(line_item(title="y" * 20000))).encode()

    from tornado.httpclient import HTTPRequest
    response = await harness.http.fetch(HTTPRequest(
        harness.url + PATH, method="POST", body_producer=_producer(body),
        headers={"X-Shopify-Shop-Domain": SHOP,
                 "X-Shopify-Hmac-Sha256": shopify_signature(body, "x")}), raise_error=False)
    assert response.code == 413
    [delivery] = harness.deliveries()
    assert delivery["reason"] == "body-too-large" and delivery["body_size"] == len(body)
    assert len(delivery["body"]) <= 64 * 1024


def _producer(body: bytes):
    async def produce(write):
        for i in range(0, len(body), 1000):
            await write(body[i:i + 1000])
    return produce


@pytest.mark.gen_test
async def test_declared_length_over_the_limit_is_refused_before_the_body(harness):
    await harness.start(server={"max_body_size": 4096})
    port = int(harness.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 500000000\r\n"
                 f"X-Shopify-Shop-Domain: {SHOP}\r\n\r\n".encode())
    reply = await asyncio.wait_for(reader.read(), 5)  # the server closes after its answer
    writer.close()
    assert reply.startswith(b"HTTP/1.1 413")
    await until(lambda: harness.deliveries())
    assert harness.deliveries()[0]["reason"] == "body-too-large"


@pytest.mark.gen_test
async def test_declared_length_a_little_over_the_limit_is_read_then_refused(harness):
    # What a proxy in front lets through (nginx's and Caddy's caps are 1.5
    # times the limit) is read before the 413: answered early and closed with
    # bytes unread, the connection is reset, and the proxy answers 502.
    await harness.start(server={"max_body_size": 4096})
    port = int(harness.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"z" * 6000
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\nX-Shopify-Shop-Domain: {SHOP}\r\n\r\n".encode())
    with pytest.raises(TimeoutError):  # no answer before the body
        await asyncio.wait_for(reader.read(1), 0.5)
    writer.write(body)
    reply = await asyncio.wait_for(reader.read(), 5)  # to the end, with no reset
    writer.close()
    assert reply.startswith(b"HTTP/1.1 413")
    [delivery] = harness.deliveries()
    assert (delivery["reason"], delivery["body_size"]) == ("body-too-large", len(body))


@pytest.mark.gen_test
async def test_storefront_not_configured_is_404_and_stored(harness):
    await harness.start(shopify=None)
    response = await harness.shopify(shopify_order(line_item()))
    assert response.code == 404
    assert harness.deliveries()[0]["reason"] == "shopify-not-configured"


@pytest.mark.gen_test
async def test_unknown_path_is_404_and_stored(harness):
    await harness.start()
    response = await harness.request("/webhooks/shopify/orders/create", body=b"{}")
    assert response.code == 404
    assert harness.deliveries()[0]["reason"] == "unknown-endpoint"


@pytest.mark.gen_test
@pytest.mark.parametrize("xheaders, expected", [(True, "203.0.113.9"), (False, "127.0.0.1")])
async def test_client_ip_from_proxy_headers_only_when_trusted(harness, xheaders, expected):
    await harness.start(server={"xheaders": xheaders})
    response = await harness.shopify(shopify_order(line_item()),
                                     headers={"X-Real-IP": "203.0.113.9",
                                              "X-Forwarded-For": "203.0.113.9"})
    assert response.code == 200
    assert harness.deliveries()[0]["client_ip"] == expected


@pytest.mark.gen_test
async def test_trailing_slash_is_the_same_endpoint(harness):
    await harness.start()
    response = await harness.shopify(shopify_order(line_item()), path=PATH + "/")
    assert response.code == 200
