"""Reconciliation: orders read back from the shops' APIs (stand-ins on real
sockets speaking the real contracts) go through the same intake as webhook
deliveries, and what the webhooks missed is acted on, once."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3

import pytest

from edx_hooks.store import utcnow
from edx_hooks.storefronts.woocommerce import learner_email

from .conftest import (
    COURSE,
    SHOP,
    SHOPIFY_REFUND,
    WOO_SECRET,
    line_item,
    shopify_order,
    shopify_refund,
    until,
    woo_line,
    woo_order,
)
from .standin_shops import StandinShopify, StandinWooCommerce, captured

DEMO = "course-v1:Demo+Course+2026"
#: the captured orders are from 2026-11-29: look back far enough to see them
LOOKBACK = 24 * 60


@pytest.fixture
def woo(io_loop):
    shop = StandinWooCommerce()
    io_loop.run_sync(shop.start)
    yield shop
    io_loop.run_sync(shop.stop)


@pytest.fixture
def shopify_api(io_loop):
    shop = StandinShopify(SHOP)
    io_loop.run_sync(shop.start)
    yield shop
    io_loop.run_sync(shop.stop)


def woo_config(woo: StandinWooCommerce, **extra) -> dict:
    return {"woocommerce": {"source": woo.url + "/", "secret": WOO_SECRET,
                            "consumer_key": woo.key, "consumer_secret": woo.secret, **extra},
            "reconcile": {"minutes": 0, "first_lookback_hours": LOOKBACK}}


def events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def enrolled(lms) -> list[tuple[str, str]]:
    return sorted((learner.email, learner.course) for learner in lms.learners()
                  if learner.action == "enroll")


def watermark(harness) -> list[tuple]:
    return harness.db("SELECT provider, shop FROM reconcile_marks")


@pytest.mark.gen_test(timeout=60)
async def test_orders_placed_while_the_service_was_down_are_enrolled_when_it_starts(
        harness, lms, woo, caplog):
    caplog.set_level(logging.INFO)
    # the shop took these while edx-hooks was down: a paid order (with a
    # T-shirt whose learner field is empty), an unpaid one, a cancelled one
    # and a checkout left open
    for name in ("06", "10", "15", "03"):
        woo.hold(captured(name))
    await harness.start(**{**woo_config(woo), "reconcile": {"minutes": 15,
                                                            "first_lookback_hours": LOOKBACK}})
    await until(lambda: len(enrolled(lms)) == 2, timeout=20)
    await harness.quiet()
    assert enrolled(lms) == [("carla.colleague@example.com", DEMO),
                             ("lea.learner@example.com", DEMO)]
    found = {r.fields["order"]: r.fields["missed"] for r in events(caplog, "reconcile.found")}
    assert found == {"59": "order", "61": "order", "63": "order,cancelled", "58": "order"}
    assert woo.oauth_seen > 0  # plain HTTP: OAuth 1.0a, as WooCommerce requires there
    stored = [d for d in harness.deliveries() if d["endpoint"].startswith("RECONCILE")]
    assert len(stored) == 4
    assert all('"X-Edx-Hooks-Source": "reconcile"' in d["headers"] for d in stored)
    assert watermark(harness) == [("woocommerce", woo.url)]
    states = dict(harness.db("SELECT o.external_id || '/' || i.external_id, i.state "
                             "FROM items i JOIN orders o ON o.id = i.order_id"))
    assert states == {"59/64": "enrolled", "59/65": "not-a-course", "61/70": "enrolled",
                      "63/72": "not-enrolled"}

    # known and unchanged: the next run writes nothing at all
    before = harness.db("SELECT count(*), max(id) FROM deliveries")
    total = harness.db("SELECT total_changes()")
    [run] = await harness.service.reconciler.run(since=utcnow() - dt.timedelta(days=60))
    assert run.complete and run.orders == 4 and run.found == []
    assert harness.db("SELECT count(*), max(id) FROM deliveries") == before
    assert harness.db("SELECT total_changes()") == total


@pytest.mark.gen_test(timeout=60)
@pytest.mark.allow_tracebacks
async def test_a_delivery_answered_503_and_never_resent_is_enrolled_at_the_next_run(
        harness, lms, woo, caplog):
    await harness.start(**woo_config(woo))
    order = woo.hold(captured("10"))
    # the disk is full: the delivery cannot be stored and is answered 503
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("CREATE TRIGGER disk_full BEFORE INSERT ON deliveries BEGIN "
                     "SELECT RAISE(ABORT, 'database or disk is full'); END")
    answer = await harness.woocommerce(order, source=woo.url + "/")
    assert answer.code == 503
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("DROP TRIGGER disk_full")
    assert harness.db("SELECT count(*) FROM orders") == [(0,)]
    # WooCommerce never sends it again; the next run reads it back
    [run] = await harness.service.reconciler.run()
    assert [(o, m) for o, m, _, _ in run.found] == [("61", "order")]
    await harness.quiet()
    assert enrolled(lms) == [("carla.colleague@example.com", DEMO)]


@pytest.mark.gen_test(timeout=60)
async def test_a_cancellation_only_reconciliation_sees_unenrolls(harness, lms, woo, caplog):
    caplog.set_level(logging.INFO)
    await harness.start(**woo_config(woo, unenroll_on_refund=True))
    placed = woo.hold(captured("14"))
    assert (await harness.woocommerce(placed, source=woo.url + "/")).code == 200
    await harness.quiet()
    assert enrolled(lms) == [("frank.cancel@example.com", DEMO)]
    # the cancellation's order.updated never arrives
    woo.hold(captured("15"), touch=True)
    [run] = await harness.service.reconciler.run()
    assert [(o, m) for o, m, _, _ in run.found] == [("63", "cancelled")]
    await harness.quiet()
    assert [(x.action, x.email) for x in lms.learners()] == [
        ("enroll", "frank.cancel@example.com"), ("unenroll", "frank.cancel@example.com")]
    assert harness.db("SELECT state FROM items") == [("unenrolled",)]
    # and a cancellation seen first keeps the order from ever being enrolled
    other = captured("15")
    other["id"], other["line_items"][0]["id"] = 99, 990
    woo.hold(other, touch=True)
    await harness.service.reconciler.run()
    await harness.quiet()
    assert harness.db("SELECT i.state FROM items i JOIN orders o ON o.id = i.order_id "
                      "WHERE o.external_id = '99'") == [("not-enrolled",)]


@pytest.mark.gen_test(timeout=60)
async def test_a_disabled_webhook_is_reported_once_and_reactivated(harness, lms, woo, caplog):
    caplog.set_level(logging.INFO)
    ours = f"{lms.url}/webhooks/woocommerce/order/update"
    woo.webhook(25, "order.updated", ours, status="disabled")
    woo.webhook(30, "order.updated", "https://elsewhere.example/hook", status="disabled")
    await harness.start(**woo_config(woo))
    for _ in range(2):
        [run] = await harness.service.reconciler.run()
    assert run.webhooks == [(25, "order.updated", "disabled", ours)]
    [disabled] = events(caplog, "webhook.disabled")  # once per state change, not per run
    assert disabled.levelno == logging.ERROR and disabled.fields["webhook"] == 25
    assert woo.webhooks[25]["status"] == "disabled"

    await harness.stop()
    caplog.clear()
    await harness.start(**woo_config(woo, reactivate_webhooks=True))
    await harness.service.reconciler.run()
    assert woo.webhooks[25]["status"] == "active"
    assert woo.webhooks[30]["status"] == "disabled"  # not ours: left alone
    assert [r.fields["webhook"] for r in events(caplog, "webhook.reactivated")] == [25]


@pytest.mark.gen_test(timeout=60)
async def test_a_wrong_key_is_one_error_per_run_and_loses_nothing(harness, lms, woo, caplog):
    woo.hold(captured("06"))
    woo.webhook(25, "order.updated", f"{lms.url}/webhooks/woocommerce/order/update")
    await harness.start(**woo_config(woo, consumer_secret="cs_wrong"))
    [run] = await harness.service.reconciler.run()
    assert not run.complete
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.event for r in errors] == ["reconcile.auth_failed"]
    assert "consumer_key/consumer_secret" in errors[0].fields["fix"]
    assert "cs_wrong" not in caplog.text and woo.secret not in caplog.text
    assert watermark(harness) == [] and enrolled(lms) == []

    await harness.stop()
    await harness.start(**woo_config(woo))
    [run] = await harness.service.reconciler.run()
    assert run.complete and [o for o, *_ in run.found] == ["59"]
    await harness.quiet()
    assert enrolled(lms) == [("lea.learner@example.com", DEMO)]


@pytest.mark.gen_test(timeout=60)
async def test_a_throttled_or_failing_api_is_waited_out_or_left_to_the_next_run(
        harness, lms, woo, caplog, monkeypatch):
    from edx_hooks.storefronts import readback
    monkeypatch.setattr(readback, "REQUEST_TIMEOUT", 0.5)
    woo.hold(captured("10"))
    await harness.start(**woo_config(woo))
    woo.fail_next = [429, 429]  # backed off (Retry-After), then answered
    [run] = await harness.service.reconciler.run()
    assert run.complete and len(run.found) == 1
    mark = harness.db("SELECT watermark FROM reconcile_marks")
    woo.hold(captured("17"), touch=True)
    woo.fail_next = [503] * 10  # down: nothing advances, the next run tries again
    [run] = await harness.service.reconciler.run()
    assert not run.complete and events(caplog, "reconcile.unavailable")
    assert harness.db("SELECT watermark FROM reconcile_marks") == mark
    woo.fail_next = []
    woo.hang_next = 1  # a timeout: the same
    [run] = await harness.service.reconciler.run()
    assert not run.complete and run.error_kind == "unavailable"
    assert harness.db("SELECT watermark FROM reconcile_marks") == mark
    [run] = await harness.service.reconciler.run()
    assert [o for o, *_ in run.found] == ["64"]
    await harness.quiet()
    assert enrolled(lms) == [("carla.colleague@example.com", DEMO),
                             ("gina.gift@example.com", DEMO)]


@pytest.mark.gen_test(timeout=60)
async def test_a_page_that_does_not_parse_is_skipped_and_the_watermark_stays(
        harness, lms, woo, caplog):
    now = "2026-12-06T00:00:00"
    for n in range(120):  # two pages of 100
        order = woo_order(woo_line(email=f"l{n}@example.org"), order_id=5000 + n)
        order["date_modified_gmt"] = f"2026-12-05T{n // 60:02d}:{n % 60:02d}:00"
        woo.hold(order)
    assert now
    await harness.start(**woo_config(woo))
    woo.broken_pages = {1}
    [run] = await harness.service.reconciler.run()
    assert (run.pages, run.skipped_pages, len(run.found)) == (2, 1, 20)
    assert events(caplog, "reconcile.page_skipped") and watermark(harness) == []
    woo.broken_pages = set()
    [run] = await harness.service.reconciler.run()
    assert run.complete and len(run.found) == 100  # the second page's are known
    await harness.quiet(timeout=30)
    assert len(enrolled(lms)) == 120


@pytest.mark.gen_test(timeout=60)
async def test_an_order_by_webhook_and_by_reconciliation_at_once_is_enrolled_once(
        harness, lms, woo):
    await harness.start(**woo_config(woo))
    orders = [woo.hold(captured(name)) for name in ("06", "10", "17")]
    await asyncio.gather(harness.service.reconciler.run(),
                         *(harness.woocommerce(o, source=woo.url + "/") for o in orders))
    await harness.quiet()
    assert enrolled(lms) == [("carla.colleague@example.com", DEMO),
                             ("gina.gift@example.com", DEMO), ("lea.learner@example.com", DEMO)]
    assert harness.db("SELECT count(*) FROM items") == [(4,)]  # A's T-shirt too, once


# --- Shopify

def shopify_config(api: StandinShopify, **extra) -> dict:
    return {"shopify": {"admin_token": api.token, "api_url": api.url, **extra},
            "reconcile": {"minutes": 0, "first_lookback_hours": 1}}


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("webhook_first", [True, False])
async def test_shopify_line_items_read_back_are_the_webhooks_line_items(
        harness, lms, shopify_api, webhook_first):
    order = shopify_order(line_item(), line_item(sku=COURSE, email="second@example.org"))
    shopify_api.hold(order)
    await harness.start(**shopify_config(shopify_api))
    if webhook_first:
        assert (await harness.shopify(order)).code == 200
        [run] = await harness.service.reconciler.run()
        assert run.found == []  # known and unchanged
    else:
        [run] = await harness.service.reconciler.run()
        assert [(o, m) for o, m, _, _ in run.found] == [(str(order["id"]), "order")]
        assert (await harness.shopify(order)).code == 200
    await harness.quiet()
    assert enrolled(lms) == [("learner@example.org", COURSE), ("second@example.org", COURSE)]
    assert sorted(r[0] for r in harness.db("SELECT external_id FROM items")) == sorted(
        str(line["id"]) for line in order["line_items"])


@pytest.mark.gen_test(timeout=60)
async def test_shopify_refund_and_cancellation_only_reconciliation_sees(
        harness, lms, shopify_api, caplog):
    caplog.set_level(logging.INFO)
    first, second = line_item(), line_item(email="second@example.org")
    refunded = shopify_order(first, second)
    cancelled = shopify_order(line_item(email="third@example.org"))
    await harness.start(**shopify_config(shopify_api, unenroll_on_refund=True))
    for order in (refunded, cancelled):
        assert (await harness.shopify(order)).code == 200
    await harness.quiet()
    shopify_api.hold(refunded, refunded=[first])
    shopify_api.hold(cancelled, cancelled=True)
    shopify_api.throttle_next = 2  # THROTTLED twice: waited out by throttleStatus
    [run] = await harness.service.reconciler.run()
    assert run.complete and shopify_api.throttled == 2
    assert sorted(m for _, m, _, _ in run.found) == ["cancelled", "refunded"]
    await harness.quiet()
    assert sorted((x.action, x.email) for x in lms.learners() if x.action == "unenroll") == [
        ("unenroll", "learner@example.org"), ("unenroll", "third@example.org")]
    # the same refund by webhook now changes nothing
    assert (await harness.shopify(shopify_refund(refunded, first), **SHOPIFY_REFUND)).code == 200
    await harness.quiet()
    assert len([x for x in lms.learners() if x.action == "unenroll"]) == 2


@pytest.mark.gen_test(timeout=60)
async def test_the_command_reads_back_dry_run_changes_nothing(harness, lms, woo):
    woo.hold(captured("06"))
    await harness.start(**woo_config(woo))
    code, out, err = await harness.cli("reconcile", "--dry-run", "--since", "30d")
    assert code == 0, err
    assert "order 59: missed order (accepted): would be recorded (dry run)" in out
    assert harness.db("SELECT count(*) FROM deliveries") == [(0,)] and watermark(harness) == []
    code, out, err = await harness.cli("reconcile", "--shop", woo.url)
    assert code == 0, err
    assert "order 59: missed order" in out and "recorded as delivery" in out
    assert watermark(harness) == [("woocommerce", woo.url)]
    await harness.quiet()
    assert enrolled(lms) == [("lea.learner@example.com", DEMO)]
    code, out, err = await harness.cli("reconcile", "--since", "yesterday")
    assert code == 2 and "neither a time" in err
    code, out, err = await harness.cli("reconcile", "--shop", "nope.example")
    assert code == 1 and "no shop 'nope.example'" in err


def test_the_learner_of_a_captured_order_is_read_as_a_delivery_would_be():
    assert learner_email(captured("06")["line_items"][0]["meta_data"]) == \
        "lea.learner@example.com"


@pytest.mark.gen_test(timeout=60)
async def test_check_config_online_lists_our_webhooks_and_flags_mismatches(harness, lms, woo):
    base = f"{lms.url}/webhooks/woocommerce"
    woo.webhook(24, "order.created", f"{base}/order/create")
    woo.webhook(25, "order.updated", f"{base}/order/update", status="paused")
    woo.webhook(26, "order.updated", f"{base}/order/nope")
    woo.webhook(27, "product.updated", f"{base}/order/update")
    woo.webhook(28, "order.updated", "https://elsewhere.example/hook")
    await harness.start(**woo_config(woo, require_payment=True))
    code, out, err = await harness.cli("check-config", "--online")
    assert code == 1, err
    lines = {line.split(" webhook ")[1].split(" ")[0]: line for line in out.splitlines()
             if " webhook 2" in line}
    assert set(lines) == {"24", "25", "26", "27"}  # 28 points elsewhere
    assert lines["24"].startswith("FAIL") and "Order created while require_payment" in lines["24"]
    assert lines["25"].startswith("FAIL") and " paused " in lines["25"]
    assert "not active" in lines["25"]
    assert "not an endpoint of this service" in lines["26"]
    assert "topic product.updated is not acted on" in lines["27"]
    assert "needs an active Order updated webhook" in out


@pytest.mark.gen_test(timeout=60)
async def test_the_watermark_survives_a_restart(harness, lms, woo):
    woo.hold(captured("10"))
    await harness.start(**woo_config(woo))
    [run] = await harness.service.reconciler.run()
    assert run.watermark is not None
    await harness.stop()
    await harness.start(**woo_config(woo))
    [again] = await harness.service.reconciler.run()
    # from where the last run ended (less the overlap), not the first look-back
    assert again.since == run.watermark - dt.timedelta(minutes=10)
    assert again.orders == 0


@pytest.mark.gen_test(timeout=60)
async def test_a_wrong_shopify_token_is_one_error_and_nothing_moves(harness, shopify_api, caplog):
    shopify_api.hold(shopify_order(line_item()))
    await harness.start(**shopify_config(shopify_api, admin_token="shpat_wrong"))
    [run] = await harness.service.reconciler.run()
    assert not run.complete and watermark(harness) == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.event for r in errors] == ["reconcile.auth_failed"]
    assert "read_orders" in errors[0].fields["fix"] and "shpat_wrong" not in caplog.text


def test_credentials_are_secrets_and_checked_at_start(tmp_path):
    from edx_hooks import config

    from .conftest import write_config
    sections = {"lms": {"base_url": "https://lms.example.org", "client_id": "c",
                        "client_secret": "s"},
                "woocommerce": {"source": "https://shop.example/", "secret": "w",
                                "consumer_key": "ck_1"}}
    path = write_config(tmp_path / "c.toml", sections)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(path), {})
    assert "consumer_key and consumer_secret go together" in str(e.value)
    assert "\n" not in str(e.value)
    sections["woocommerce"]["consumer_secret"] = "cs_very_secret"
    sections["shopify"] = {"shop_domain": SHOP, "secret": "s", "admin_token": "shpat_x",
                           "api_version": "2025-08"}
    path = write_config(tmp_path / "c.toml", sections)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(path), {})
    assert str(e.value).startswith("shopify.api_version = '2025-08' must be an Admin API "
                                   "version such as 2025-07")
    del sections["shopify"]["api_version"]
    cfg = config.load(str(write_config(tmp_path / "c.toml", sections)),
                      {"EDX_HOOKS_SHOPIFY_ADMIN_TOKEN": "shpat_from_env"})
    [shop] = cfg.shops["shopify"]
    assert shop.admin_token == "shpat_from_env" and shop.api_version == "2025-07"
    shown = repr(cfg)
    assert "cs_very_secret" not in shown and "shpat_from_env" not in shown
    assert cfg.reconcile.minutes == 15 and cfg.reconcile.first_lookback_hours == 72


def test_oauth_over_http_and_basic_over_https():
    from edx_hooks.storefronts.woocommerce_api import oauth_query

    from .standin_shops import oauth_valid
    url = "http://shop.example/wp-json/wc/v3/orders"
    params = {"modified_after": "2026-12-01T00:00:00Z", "page": "1"}
    signed = oauth_query("GET", url, params, "ck_1", "cs_2")
    assert oauth_valid("GET", url, signed, "ck_1", "cs_2")
    assert not oauth_valid("GET", url, signed, "ck_1", "cs_other")
    assert not oauth_valid("GET", url, {**signed, "page": "2"}, "ck_1", "cs_2")


def test_since_takes_a_time_or_a_duration():
    from edx_hooks.reconcile import since_value
    assert since_value("2026-12-01T08:00") == dt.datetime(2026, 12, 1, 8, 0)
    assert since_value("2026-12-01T09:00+01:00") == dt.datetime(2026, 12, 1, 8, 0)
    assert abs(utcnow() - dt.timedelta(minutes=90) - since_value("90m")) < dt.timedelta(minutes=1)
    assert abs(utcnow() - dt.timedelta(days=3) - since_value("3d")) < dt.timedelta(minutes=1)
    with pytest.raises(ValueError):
        since_value("last week")


@pytest.mark.gen_test(timeout=60)
async def test_shopify_orders_are_read_page_by_page_within_the_cost_limit(
        harness, lms, shopify_api):
    orders = [shopify_order(line_item(email=f"p{n}@example.org")) for n in range(25)]
    for order in orders:
        shopify_api.hold(order)
    shopify_api.bucket = 200.0  # a small bucket: the pages wait for it to refill
    await harness.start(**shopify_config(shopify_api))
    [run] = await harness.service.reconciler.run()
    assert run.complete and run.pages == 3 and len(run.found) == 25
    await harness.quiet()
    assert len(enrolled(lms)) == 25
