"""Hostile input: forged, malformed, injecting and flooding traffic against
the real service. Whatever arrives gets its documented answer, is stored
with its reason, enrolls no one it should not, and the service keeps going."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import (
    COURSE,
    SHOP,
    SHOPIFY_SECRET,
    WOO_SECRET,
    line_item,
    shopify_order,
    shopify_signature,
    until,
    woo_line,
    woo_order,
)
from .standin_lms import Forced

PATH = "/webhooks/shopify/order/create"


def settled(harness) -> bool:
    items = harness.items()
    return bool(items) and all(i["state"] != "pending" for i in items)


# -- 1. injection through the LMS call

@pytest.mark.gen_test
async def test_no_email_or_sku_can_become_two_enrollments(harness, lms):
    lms.redirects["sku/TWO"] = "/courses/course-v1:a+b+c,course-v1:d+e+f/about"
    await harness.start()
    emails = ["a@x.org,b@y.org", "a@x.org b@y.org", "a@x.org\nb@y.org", "a@x.org;b@y.org",
              "a@x.org\tb@y.org", "a@x.org\x00", "<a@x.org>", "a@@x.org", "a@x.org\u2028b@y.org"]
    skus = ["course-v1:a+b+c,course-v1:d+e+f", "course-v1:a+b+c d", "course-v1:a+b",
            "course-v1:a+b+c+d", "course-v1:a/b+c+d", "TWO"]
    lines = [line_item(email=e) for e in emails] + [line_item(sku=s) for s in skus]
    response = await harness.shopify(shopify_order(*lines))
    assert response.code == 200
    await until(lambda: settled(harness))
    items = harness.items()
    assert {i["state"] for i in items} == {"failed"}
    assert all(i["reason"] for i in items)
    assert lms.calls == []  # nothing reached bulk_enroll
    woo = woo_order(woo_line(email="a@x.org,b@y.org"), woo_line(sku="course-v1:a+b+c,x"))
    assert (await harness.woocommerce(woo)).code == 200
    await until(lambda: len(harness.items()) == len(items) + 2 and settled(harness))
    assert lms.calls == []


# -- 2. the SKU lookup stays on the LMS

@pytest.mark.gen_test
async def test_hostile_skus_are_quoted_into_one_path_segment(harness, lms):
    await harness.start()
    skus = ["../admin", "..", ".", "a?b=c", "a#frag", "a%2Fb", "//evil.example/x", "with space",
            "Kurs-Ü-日本", "a/b/c", "x\\y"]
    await harness.shopify(shopify_order(*[line_item(sku=s) for s in skus]))
    await until(lambda: settled(harness))
    assert len(lms.raw_head_paths) == len(skus)
    for path in lms.raw_head_paths:
        assert path.startswith("/sku/")
        assert "/" not in path[len("/sku/"):]  # one segment, below the prefix
        assert "?" not in path and "#" not in path
        assert urllib.parse.unquote(path[len("/sku/"):]) in skus
    assert {i["state"] for i in harness.items()} == {"failed"}
    assert lms.calls == []


@pytest.mark.gen_test
@pytest.mark.parametrize("location", [
    "https://evil.example/courses/course-v1:a+b+c/about",
    "//evil.example/courses/course-v1:a+b+c/about",
    "http://127.0.0.1.evil.example/courses/course-v1:a+b+c/",
    "/login?next=/courses/course-v1:a+b+c/about",
    "/courses/",
])
async def test_a_redirect_elsewhere_names_no_course(harness, lms, location):
    lms.redirects["sku/PY"] = location
    await harness.start()
    await harness.shopify(shopify_order(line_item(sku="PY")))
    await until(lambda: settled(harness))
    [item] = harness.items()
    assert item["state"] == "failed" and "names no course" in item["reason"]
    assert lms.head_requests == ["sku/PY"]  # the redirect was not followed
    assert lms.calls == []


# -- 3. secrets

@pytest.mark.gen_test
async def test_no_secret_signature_or_token_in_any_log_line(harness, lms, serve):
    service = serve(logging={"level": "debug"}, retry={"delay_seconds": 0.2})
    await service.start()
    sent_signatures = []

    async def shopify(order, **kw):
        body = json.dumps(order).encode()
        sent_signatures.append(shopify_signature(body, kw.get("secret", SHOPIFY_SECRET)))
        return await harness.shopify(body, **kw)

    await shopify(shopify_order(line_item(email="a@example.org")))
    await shopify(shopify_order(line_item()), secret="forged-secret-value")
    await harness.woocommerce(woo_order(woo_line(email="w@example.org")))
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    lms.revoke_tokens()  # a 401, a fresh token, a repeat
    lms.forced.append(Forced(status=503, body='{"detail": "token jwt-2 rejected"}'))
    await shopify(shopify_order(line_item(email="b@example.org")))
    await until(lambda: len(harness.items()) == 3 and settled(harness))
    await service.stop()
    text = "".join(service.log)
    assert "event=item.enrolled" in text and "event=lms.unauthorized" in text
    secrets = [SHOPIFY_SECRET, WOO_SECRET, lms.client_secret, "forged-secret-value",
               *sorted(lms.valid_tokens), "jwt-1", *sent_signatures]
    for secret in secrets:
        assert secret not in text, secret


# -- 4. malformed bodies

@pytest.mark.gen_test
@pytest.mark.parametrize("body, status, reason", [
    (b'{"id": 1e999, "line_items": []}', 400, "order-id-missing"),
    (b'{"id": ' + b"9" * 5000 + b"}", 400, "body-not-json-object"),
    (b'{"id": -5}', 400, "order-id-missing"),
    (b'{"id": true}', 400, "order-id-missing"),
    (b'{"id": null}', 400, "order-id-missing"),
    (b'{"id": [1]}', 400, "order-id-missing"),
    (b'{"id": 1, "id": "x" }', 200, "accepted-no-line-items"),  # duplicate keys: the last wins
    (b'{"id": 7, "line_items": "oops"}', 200, "accepted-no-line-items"),
    (b'{"id": 8, "line_items": {"a": 1}}', 200, "accepted-no-line-items"),
    (b'{"id": 9, "line_items": [null, 3, "x", []]}', 200, "accepted"),
    (b'{"id": 10, "name": {"x": 1}, "line_items": [{"id": "a", "sku": 123, '
     b'"properties": {"email": "d@example.org"}}]}', 200, "accepted"),
    (b'{"id": 11, "line_items": [{"id": -1, "sku": ["x"], "properties": [{"name": 5}]}]}',
     200, "accepted"),
    (b"\xef\xbb\xbf{}", 400, "order-id-missing"),  # a UTF-8 BOM is tolerated
    (b"{" * 50000, 400, "body-not-json-object"),
    (b'"\\ud800"', 400, "body-not-json-object"),
])
async def test_malformed_signed_bodies_get_their_documented_answer(harness, body, status,
                                                                   reason):
    await harness.start()
    response = await harness.shopify(body)
    assert (response.code, json.loads(response.body)["reason"]) == (status, reason)
    [delivery] = harness.deliveries()
    assert (delivery["status"], delivery["reason"]) == (status, reason)
    await until(lambda: all(i["state"] != "pending" for i in harness.items()))
    assert (await harness.request("/healthz", method="GET")).code == 200


@pytest.mark.gen_test
@pytest.mark.allow_tracebacks
async def test_a_storefront_defect_is_answered_500_and_the_delivery_kept(harness, monkeypatch):
    from edx_hooks.storefronts import shopify

    def defect(body: bytes):
        raise OverflowError("a defect of ours")

    monkeypatch.setattr(shopify, "parse_json_object", defect)
    await harness.start()
    response = await harness.shopify(shopify_order(line_item()))
    assert (response.code, json.loads(response.body)["reason"]) == (500, "internal-error")
    [delivery] = harness.deliveries()
    assert (delivery["status"], delivery["reason"]) == (500, "internal-error")
    assert (await harness.request("/healthz", method="GET")).code == 200


@pytest.mark.gen_test
@pytest.mark.allow_tracebacks
@pytest.mark.parametrize("where", ["storefront", "catalog"])
async def test_a_genuine_delivery_we_fail_to_read_is_kept_whole_and_replayed(
        harness, lms, monkeypatch, where):
    """WooCommerce never re-sends a delivery answered 500: its whole body is
    kept, past the rejected-bytes budget, so that replay recovers it once the
    defect is fixed. A forgery is still cut to the budget."""
    from edx_hooks.catalog import Catalog
    from edx_hooks.storefronts import woocommerce

    def defect(*args, **kwargs):
        raise OverflowError("a defect of ours")

    if where == "storefront":
        monkeypatch.setattr(woocommerce, "_order", defect)
    else:
        monkeypatch.setattr(Catalog, "parts", defect)
    await harness.start(retention={"rejected_body_bytes": 1024, "rejected_max_bytes": 0})
    order = woo_order(woo_line(email="ada@example.org", name="z" * 20_000))
    body = json.dumps(order).encode()
    assert (await harness.woocommerce(body, secret="forged")).code == 403
    response = await harness.woocommerce(body)
    assert (response.code, json.loads(response.body)["reason"]) == (500, "internal-error")
    forged, genuine = harness.deliveries()
    assert (forged["status"], len(forged["body"])) == (403, 1024)
    assert (genuine["status"], genuine["body"]) == (500, body)

    monkeypatch.undo()  # the defect fixed (the command below runs without it anyway)
    code, out, err = await harness.cli("replay", str(genuine["id"]))
    assert code == 0, err
    assert f"delivery {genuine['id']} replayed as delivery 3: 200 accepted" in out
    await until(lambda: [i["state"] for i in harness.items()] == ["enrolled"], timeout=10)
    assert [x.email for x in lms.learners()] == ["ada@example.org"]


@pytest.mark.gen_test
@pytest.mark.allow_tracebacks
async def test_a_fault_logging_a_stored_delivery_is_answered_as_stored(harness, lms,
                                                                       monkeypatch, caplog):
    from edx_hooks.handlers import DeliveryHandler

    def defect(*args, **kwargs):
        raise OverflowError("a defect of ours")

    monkeypatch.setattr(DeliveryHandler, "_log_outcome", defect)
    await harness.start()
    response = await harness.shopify(shopify_order(line_item()))
    [delivery] = harness.deliveries()
    assert (response.code, json.loads(response.body)["delivery"]) == (200, delivery["id"])
    assert (delivery["status"], delivery["reason"]) == (200, "accepted")
    await until(lambda: [i["state"] for i in harness.items()] == ["enrolled"])
    events = [(getattr(r, "event", None), getattr(r, "fields", {})) for r in caplog.records]
    assert ("delivery.error", {"provider": "shopify", "delivery": delivery["id"]}) in events
    assert "request.error" not in {name for name, _ in events}


@pytest.mark.gen_test
async def test_genuine_but_unusable_items_are_failed_with_reasons(harness, lms):
    await harness.start()
    body = (b'{"id": 12, "line_items": [null, {"id": 3, "sku": 42, "properties": '
            b'{"email": "n@example.org"}}, {"sku": "course-v1:a+b+c"}]}')
    assert (await harness.shopify(body)).code == 200
    await until(lambda: settled(harness))
    reasons = [i["reason"] for i in harness.items()]
    assert reasons[0] == "line item is not a JSON object"
    assert "42" in harness.items()[1]["sku"]  # a numeric SKU is read as text
    assert reasons[2].startswith("no learner email")


headers_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20)
order_like = st.fixed_dictionaries(
    {}, optional={"id": json_value | st.integers(1, 2**40), "name": json_value,
                  "line_items": st.lists(st.fixed_dictionaries({}, optional={
                      "id": json_value, "sku": json_value | st.just(COURSE),
                      "properties": json_value | st.just([{"name": "email",
                                                           "value": "p@example.org"}])}),
                      max_size=3) | json_value})
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(body=st.binary(max_size=2048) | json_value.map(lambda v: json.dumps(v).encode()),
       signed=st.booleans(), domain=st.none() | st.just(SHOP) | headers_text,
       signature=st.none() | headers_text)
def test_fuzzed_shopify_deliveries_never_crash(harness, io_loop, body, signed, domain,
                                               signature):
    if harness.service is None:
        io_loop.run_sync(harness.start)
    before = len(harness.deliveries())
    headers = {"X-Shopify-Shop-Domain": domain,
               "X-Shopify-Hmac-Sha256": shopify_signature(body, SHOPIFY_SECRET) if signed
               else signature}
    response = io_loop.run_sync(lambda: harness.shopify(body, headers=headers))
    assert response.code in (200, 400, 403), response.body
    assert len(harness.deliveries()) == before + 1
    assert harness.deliveries()[-1]["status"] == response.code


@FUZZ
@given(order=order_like)
def test_fuzzed_genuine_orders_are_accepted_or_refused_cleanly(harness, io_loop, order):
    if harness.service is None:
        io_loop.run_sync(harness.start)
    response = io_loop.run_sync(lambda: harness.shopify(order))
    assert response.code in (200, 400), response.body
    reason = json.loads(response.body)["reason"]
    if response.code == 400:
        assert reason == "order-id-missing"
    else:
        assert reason in ("accepted", "accepted-no-line-items")
        states = {i["state"] for i in harness.items()}
        assert states <= {"pending", "enrolled", "failed", "not-a-course"}


@FUZZ
@given(order=order_like, source=st.none() | st.just("https://shop.example/") | headers_text)
def test_fuzzed_woocommerce_deliveries_never_crash(harness, io_loop, order, source):
    if harness.service is None:
        io_loop.run_sync(harness.start)
    response = io_loop.run_sync(lambda: harness.woocommerce(order, source=source))
    assert response.code in (200, 400, 403), response.body


# -- lying lengths and slow clients

@pytest.mark.gen_test
async def test_content_length_shorter_than_the_body(harness, lms):
    await harness.start()
    body = json.dumps(shopify_order(line_item())).encode()
    head = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Shopify-Shop-Domain: {SHOP}\r\n"
            f"X-Shopify-Hmac-Sha256: {shopify_signature(body, SHOPIFY_SECRET)}\r\n"
            f"Content-Length: 100\r\n\r\n").encode()
    port = int(harness.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 403")  # the first 100 bytes do not verify
    assert harness.deliveries()[0]["reason"] == "bad-signature"
    assert lms.calls == []
    assert (await harness.request("/healthz", method="GET")).code == 200


@pytest.mark.gen_test
@pytest.mark.parametrize("what", ["body", "headers"])
async def test_slow_clients_are_cut_off(harness, what):
    await harness.start(server={"client_timeout_seconds": 1})
    port = int(harness.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
    if what == "body":
        writer.write(f"X-Shopify-Shop-Domain: {SHOP}\r\nContent-Length: 5000\r\n\r\n".encode())
    sent = 0
    try:
        while sent < 40:  # a byte every 0.1 s: far slower than the timeout allows
            writer.write(b"{" if what == "body" else b"X")
            await writer.drain()
            sent += 1
            await asyncio.sleep(0.1)
            if reader.at_eof():
                break
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no answer
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert sent < 40  # cut off while the client was still sending
    writer.close()
    if what == "body":
        await until(lambda: harness.deliveries())
        [delivery] = harness.deliveries()
        assert (delivery["status"], delivery["reason"]) == (408, "incomplete-request")
        assert 0 < delivery["body_size"] < 5000
    assert (await harness.request("/healthz", method="GET")).code == 200


# -- 5. flooding

@pytest.mark.gen_test(timeout=240)
async def test_a_flood_of_forgeries_changes_nothing_and_is_bounded(harness, lms):
    await harness.start()
    port = int(harness.url.rsplit(":", 1)[1])
    genuine = [shopify_order(line_item(email=f"g{n}@example.org")) for n in range(50)]
    forged_body = json.dumps(shopify_order(line_item(email="x@evil.example"))).encode()

    def request(body: bytes, secret: str) -> bytes:
        return (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-Shopify-Shop-Domain: {SHOP}\r\n"
                f"X-Shopify-Hmac-Sha256: {shopify_signature(body, secret)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    forged = request(forged_body, "guess")
    queue = []
    for n in range(10_000):
        queue.append((False, forged))
        if n % 200 == 0:
            queue.append((True, request(json.dumps(genuine[n // 200]).encode(),
                                        SHOPIFY_SECRET)))
    size_before = _db_bytes(harness)
    statuses: dict[int, int] = {}
    genuine_ok = 0
    work = iter(queue)

    async def client() -> None:
        nonlocal genuine_ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for is_genuine, raw in work:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split()[1])
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
            genuine_ok += is_genuine and status == 200
        writer.close()

    await asyncio.wait_for(asyncio.gather(*[client() for _ in range(16)]), 200)
    assert statuses == {403: 10_000, 200: 50} and genuine_ok == 50
    await until(lambda: len(harness.items()) == 50 and settled(harness), timeout=30)
    assert {i["state"] for i in harness.items()} == {"enrolled"}
    assert sorted(x.email for x in lms.learners()) == sorted(
        f"g{n}@example.org" for n in range(50))
    grown = _db_bytes(harness) - size_before
    per_forgery = len(forged_body) + 2048  # kept body + headers and row overhead
    assert grown <= 10_050 * per_forgery, grown
    assert (await harness.request("/healthz", method="GET")).code == 200


def _db_bytes(harness) -> int:
    return sum(os.path.getsize(p) for p in (str(harness.db_path), f"{harness.db_path}-wal")
               if os.path.exists(p))


@pytest.mark.gen_test
async def test_rejected_bodies_are_capped_and_pruned_after_the_retention(harness):
    service = await harness.start(retention={"rejected_body_bytes": 1024, "rejected_days": 1})
    big = json.dumps(shopify_order(line_item(title="z" * 50_000))).encode()
    assert (await harness.shopify(big, secret="forged")).code == 403
    assert (await harness.shopify(shopify_order(line_item()))).code == 200
    forged, genuine = harness.deliveries()
    assert len(forged["body"]) == 1024 and forged["body_size"] == len(big)
    assert len(genuine["body"]) == genuine["body_size"]
    assert await service.apply_retention() == 0  # too recent
    with sqlite3.connect(harness.db_path) as conn:  # two days pass
        conn.execute("UPDATE deliveries SET received_at = datetime('now', '-2 days')")
    assert await service.apply_retention() == 1
    assert [d["status"] for d in harness.deliveries()] == [200]


# -- 6. files

@pytest.mark.gen_test
async def test_database_files_are_private_and_a_readable_config_is_flagged(harness, serve):
    service = serve()
    service.config.chmod(0o644)  # holds the LMS and shop secrets, readable by all
    await service.start()
    assert (await harness.shopify(shopify_order(line_item()))).code == 200
    await until(lambda: harness.items())
    for name in (harness.db_path, f"{harness.db_path}-wal", f"{harness.db_path}.jobs.db"):
        if os.path.exists(name):
            assert stat.S_IMODE(os.stat(name).st_mode) & 0o077 == 0, name
    [warning] = service.lines("config.readable")
    assert "chmod 600" in warning and "shopify.secret" in warning
    assert SHOPIFY_SECRET not in warning
    await service.stop()

    os.chmod(harness.db_path, 0o644)  # made by hand, say
    service.config.chmod(0o600)
    await service.start()
    assert stat.S_IMODE(os.stat(harness.db_path).st_mode) == 0o600
    assert service.lines("file.permissions_fixed")
    assert len(service.lines("config.readable")) == 1  # not again
    await service.stop()
