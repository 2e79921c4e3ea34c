"""The promise at the edges: a clean stop under way, refunds that overtake
their order, an outcome the database would not take, writes racing a close,
commands pointed at the wrong database, a flood of large forgeries, an
operator's retry, and SKU redirects to another origin."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import signal
import sqlite3

import pytest

from edx_hooks.store import NewDelivery, Store, StoreClosed, utcnow

from .conftest import (
    COURSE,
    SHOPIFY_REFUND,
    line_item,
    shopify_order,
    shopify_refund,
    until,
    woo_line,
    woo_order,
)
from .standin_lms import Forced

UNENROLL = {"unenroll_on_refund": True}
CANCELLED = "/webhooks/shopify/order/cancelled"
WOO_UPDATE = "/webhooks/woocommerce/order/update"


def calls_per_learner(lms) -> collections.Counter:
    return collections.Counter(x.email for x in lms.learners())


def states(harness) -> list[tuple[str, str]]:
    return [(i["email"], i["state"]) for i in harness.items()]


# -- 1. SIGTERM lets calls under way finish, and repeats none

@pytest.mark.gen_test(timeout=120)
async def test_sigterm_during_calls_makes_exactly_one_call_per_item(harness, lms, serve):
    lms.latency = 0.3
    service = serve(lms={"max_calls_per_minute": 0})
    await service.start()
    orders = [shopify_order(line_item(email=f"term{n}@example.org")) for n in range(30)]
    responses = await asyncio.gather(*[harness.shopify(o) for o in orders])
    assert {r.code for r in responses} == {200}
    # SIGTERM about half a second after the burst, while calls are under way
    await until(lambda: len(lms.learners()) >= 2 and lms.in_flight > 0)
    assert await service.stop(signal.SIGTERM) == 0
    assert not service.lines("items.interrupted") and not service.lines("service.stop_timeout")
    answered = len(lms.learners())
    # every call that reached the LMS was answered and recorded before the exit
    assert sum(1 for i in harness.items() if i["state"] == "enrolled") == answered

    await service.start()
    await until(lambda: all(i["state"] == "enrolled" for i in harness.items()), timeout=30)
    await service.quiet()
    per_learner = calls_per_learner(lms)
    assert set(per_learner) == {f"term{n}@example.org" for n in range(30)}
    assert set(per_learner.values()) == {1}  # exactly one, not "at most two"
    assert re.search(rf"resumed_items={30 - answered}\b", service.lines("service.started")[-1])


@pytest.mark.gen_test(timeout=120)
async def test_sigterm_while_jobs_wait_for_their_paced_turn(harness, lms, serve):
    # two calls a minute, two learners a call at most: the first two calls
    # go at once, the others wait a minute
    service = serve(lms={"max_calls_per_minute": 2, "batch_size": 2})
    await service.start()
    orders = [shopify_order(line_item(email=f"paced{n}@example.org")) for n in range(12)]
    # all at once: sent one by one, a slow machine would let the calls keep up
    responses = await asyncio.gather(*[harness.shopify(o) for o in orders])
    assert {r.code for r in responses} == {200}
    await until(lambda: len(lms.learners()) >= 2)
    assert await service.stop(signal.SIGTERM) == 0  # those waiting their turn leave at once
    answered = len(lms.learners())
    assert answered < 12
    assert not service.lines("items.interrupted")
    # the next start (unpaced, not to wait out the minute) resumes the rest
    service = serve(lms={"max_calls_per_minute": 0, "batch_size": 2})
    await service.start()
    await until(lambda: all(i["state"] == "enrolled" for i in harness.items()), timeout=30)
    await service.quiet()
    assert set(calls_per_learner(lms).values()) == {1} and len(lms.learners()) == 12


@pytest.mark.gen_test
async def test_a_call_cut_off_past_the_stop_bound_is_logged_and_stays_pending(harness, lms,
                                                                             caplog):
    lms.forced.append(Forced(status=200, hang=30, body="{}"))
    service = await harness.start(lms={"timeout_seconds": 60})
    await harness.shopify(shopify_order(line_item(email="held@example.org")))
    await until(lambda: lms.calls)
    assert await service.runtime.drain(0.2) == [1]  # the bound, shortened
    assert [r.getMessage() for r in caplog.records
            if "event=items.interrupted" in r.getMessage()] == [
        "event=items.interrupted items=1"]
    assert harness.items()[0]["state"] == "pending"  # the next start resumes it


@pytest.mark.gen_test
async def test_sigterm_while_the_lms_hangs_waits_for_the_call_timeout_and_records_it(
        harness, lms, serve):
    lms.forced.append(Forced(status=200, hang=30, body="{}"))
    service = serve(lms={"timeout_seconds": 1.0}, retry={"delay_seconds": 0.2})
    await service.start()
    assert (await harness.shopify(shopify_order(line_item(email="slow@example.org")))).code \
        == 200
    await until(lambda: lms.calls)
    assert await service.stop(signal.SIGTERM) == 0
    # the call ran into lms.timeout_seconds: recorded as a failed attempt, not lost
    [item] = harness.items()
    assert (item["state"], item["attempts"]) == ("pending", 1)
    assert item["reason"].startswith("LMS unreachable")
    await service.start()
    await until(lambda: harness.items()[0]["state"] == "enrolled")
    assert harness.items()[0]["attempts"] == 2


# -- 2. refunds and cancellations that overtake their order

@pytest.mark.gen_test
@pytest.mark.parametrize("unenroll", [True, False])
@pytest.mark.parametrize("with_items", [True, False])
async def test_shopify_cancellation_before_its_order(harness, lms, unenroll, with_items):
    await harness.start(shopify={"unenroll_on_refund": unenroll})
    order = shopify_order(line_item(email="a@example.org"), line_item(email="b@example.org"))
    cancelled = dict(order, cancelled_at="2026-11-28T12:00:00Z")
    if not with_items:  # what is remembered is the cancellation, not its body
        cancelled["line_items"] = []
    response = await harness.shopify(cancelled, path=CANCELLED,
                                     headers={"X-Shopify-Topic": "orders/cancelled"})
    assert response.code == 200
    # the retried orders/create arrives after it
    assert (await harness.shopify(order)).code == 200
    await harness.quiet()
    assert states(harness) == [("a@example.org", "not-enrolled"),
                               ("b@example.org", "not-enrolled")]
    assert {i["reason"] for i in harness.items()} == {
        "cancelled before it was enrolled: not enrolled"}
    assert lms.calls == []
    code, out, _ = await harness.cli("order", "shopify", str(order["id"]))
    assert "refunds and cancellations:" in out and "(whole order)" in out
    assert out.count("/order/cancelled") == 1  # the early delivery is part of the story
    code, out, _ = await harness.cli("orders", "--state", "not-enrolled")
    assert str(order["id"]) in out


@pytest.mark.gen_test
@pytest.mark.parametrize("unenroll", [True, False])
async def test_shopify_refund_before_its_order_keeps_only_that_item_out(harness, lms,
                                                                        unenroll):
    await harness.start(shopify={"unenroll_on_refund": unenroll})
    kept, refunded = line_item(email="kept@example.org"), line_item(email="gone@example.org")
    order = shopify_order(kept, refunded)
    response = await harness.shopify(
        shopify_refund(order, refunded, refund_id=7001, embed=True), **SHOPIFY_REFUND)
    assert response.code == 200
    assert json.loads(response.body)["reason"] == ("refund" if unenroll else "unenroll-off")
    assert (await harness.shopify(order)).code == 200
    await harness.quiet()
    assert states(harness) == [("kept@example.org", "enrolled"),
                               ("gone@example.org", "not-enrolled")]
    assert calls_per_learner(lms) == {"kept@example.org": 1}
    # the early refund's delivery is linked to the order once it arrives
    assert harness.db("SELECT order_id FROM deliveries") == [(1,), (1,)]


@pytest.mark.gen_test
async def test_shopify_cancellation_after_its_order_still_unenrolls(harness, lms):
    await harness.start(shopify=UNENROLL)
    order = shopify_order(line_item(email="a@example.org"))
    assert (await harness.shopify(order)).code == 200
    await harness.quiet()
    response = await harness.shopify(order, path=CANCELLED,
                                     headers={"X-Shopify-Topic": "orders/cancelled"})
    assert json.loads(response.body)["reason"] == "cancellation"
    await harness.quiet()
    assert states(harness) == [("a@example.org", "unenrolled")]
    assert [x.action for x in lms.learners()] == ["enroll", "unenroll"]


@pytest.mark.gen_test
async def test_a_refund_while_the_item_waits_for_its_retry_means_no_enrollment(harness, lms):
    await harness.start(retry={"delay_seconds": 3.0})  # unenroll_on_refund off
    lms.forced.append(Forced(status=503))
    line = line_item(email="later@example.org")
    order = shopify_order(line)
    assert (await harness.shopify(order)).code == 200
    await until(lambda: harness.items()[0]["attempts"] == 1)  # waiting for its retry
    await harness.shopify(shopify_refund(order, line, refund_id=7002),
                          **SHOPIFY_REFUND)
    await until(lambda: harness.items()[0]["state"] != "pending", timeout=10)
    await harness.quiet()
    assert states(harness) == [("later@example.org", "not-enrolled")]
    assert len(lms.learners()) == 1  # the failed first attempt only


@pytest.mark.gen_test
@pytest.mark.parametrize("status", ["refunded", "cancelled"])
@pytest.mark.parametrize("unenroll", [True, False])
async def test_woocommerce_undone_before_its_order_created(harness, lms, status, unenroll):
    await harness.start(woocommerce={"unenroll_on_refund": unenroll})
    order = woo_order(woo_line(email="a@example.org"), woo_line(email="b@example.org"))
    undone = dict(order, status=status)
    assert (await harness.woocommerce(undone, path=WOO_UPDATE, topic="order.updated")).code \
        == 200
    # an order.created built before the change, arriving after it
    assert (await harness.woocommerce(order)).code == 200
    await harness.quiet()
    assert states(harness) == [("a@example.org", "not-enrolled"),
                               ("b@example.org", "not-enrolled")]
    assert lms.calls == []


@pytest.mark.gen_test
async def test_woocommerce_refund_after_the_order_unenrolls_once(harness, lms):
    await harness.start(woocommerce=UNENROLL)
    order = woo_order(woo_line(email="a@example.org"))
    assert (await harness.woocommerce(order)).code == 200
    await harness.quiet()
    assert (await harness.woocommerce(dict(order, status="refunded"), path=WOO_UPDATE,
                                      topic="order.updated")).code == 200
    await harness.quiet()
    assert states(harness) == [("a@example.org", "unenrolled")]
    assert [x.action for x in lms.learners()] == ["enroll", "unenroll"]


# -- 3. WooCommerce statuses

@pytest.mark.gen_test
@pytest.mark.parametrize("status", ["checkout-draft", "failed", "trash"])
async def test_woocommerce_order_not_placed_is_recorded_and_left_alone(harness, lms, status):
    await harness.start()
    order = woo_order(woo_line(email="walked-away@example.org"), paid=False, status=status)
    response = await harness.woocommerce(order, path=WOO_UPDATE, topic="order.updated")
    assert (response.code, json.loads(response.body)["reason"]) == (200, "not-placed")
    await harness.quiet()
    assert harness.items() == [] and lms.calls == []
    assert harness.db("SELECT hold FROM orders") == [("not-placed",)]
    code, out, _ = await harness.cli("orders", "--state", "not-placed")
    assert code == 0 and str(order["id"]) in out
    # placed later: acted on as usual
    placed = dict(order, status="on-hold")
    assert (await harness.woocommerce(placed, path=WOO_UPDATE, topic="order.updated")).code \
        == 200
    await harness.quiet()
    assert states(harness) == [("walked-away@example.org", "enrolled")]
    assert harness.db("SELECT hold FROM orders") == [(None,)]


@pytest.mark.gen_test
@pytest.mark.parametrize("paid, expected", [(False, "awaiting-payment"), (True, "accepted")])
async def test_woocommerce_custom_status_is_acted_on_once_paid(harness, lms, paid, expected):
    await harness.start()
    order = woo_order(woo_line(email="custom@example.org"), paid=paid, status="shipped")
    response = await harness.woocommerce(order, path=WOO_UPDATE, topic="order.updated")
    assert (response.code, json.loads(response.body)["reason"]) == (200, expected)
    await harness.quiet()
    assert len(lms.learners()) == (1 if paid else 0)


# -- 6. the LMS enrolled, the database would not record it

@pytest.mark.gen_test
@pytest.mark.allow_tracebacks  # the refused writes are logged with their traceback
async def test_an_outcome_the_database_refuses_stays_with_its_item(harness, lms, caplog):
    await harness.start(retry={"delay_seconds": 0.3, "sweep_seconds": 3600})
    order = shopify_order(*[line_item(email=f"b{n}@example.org") for n in range(4)])
    unlucky = order["line_items"][0]["id"]
    with sqlite3.connect(harness.db_path) as conn:  # the disk refuses this one write
        conn.execute(f"""CREATE TRIGGER refuse BEFORE UPDATE OF state ON items
                         WHEN NEW.state = 'enrolled' AND NEW.external_id = '{unlucky}'
                         BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END""")
    assert (await harness.shopify(order)).code == 200  # one job for the four items
    # the rest of the batch goes on at once, not at the next sweep
    await until(lambda: [i["state"] for i in harness.items()][1:] == ["enrolled"] * 3)
    assert harness.items()[0]["state"] == "pending"
    await until(lambda: len(lms.learners()) == 4)
    # its outcome is kept, and the next attempts try to record it, and fail
    await until(lambda: sum("event=item.unrecorded" in r.getMessage()
                            for r in caplog.records) >= 2, timeout=10)
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("DROP TRIGGER refuse")
    await until(lambda: harness.items()[0]["state"] == "enrolled", timeout=10)
    await harness.quiet()
    # the LMS's answer was kept and recorded later: no second call, no second email
    assert calls_per_learner(lms) == {f"b{n}@example.org": 1 for n in range(4)}


@pytest.mark.gen_test
@pytest.mark.allow_tracebacks
async def test_a_refund_while_the_outcome_waits_to_be_recorded_still_unenrolls(harness, lms):
    await harness.start(shopify=UNENROLL, retry={"delay_seconds": 0.3})
    line = line_item(email="racer@example.org")
    order = shopify_order(line)
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("""CREATE TRIGGER refuse BEFORE UPDATE OF state ON items
                        WHEN NEW.state = 'enrolled' BEGIN SELECT RAISE(ABORT, 'disk full'); END""")
    await harness.shopify(order)
    await until(lambda: len(lms.learners()) == 1)  # the LMS enrolled; the database refuses
    await harness.shopify(shopify_refund(order, line, refund_id=7003),
                          **SHOPIFY_REFUND)
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("DROP TRIGGER refuse")
    await until(lambda: harness.items()[0]["state"] == "unenrolled", timeout=10)
    await harness.quiet()
    assert [x.action for x in lms.learners()] == ["enroll", "unenroll"]


@pytest.mark.gen_test
async def test_a_refund_after_a_timed_out_call_unenrolls_rather_than_assume(harness, lms):
    await harness.start(shopify=UNENROLL, lms={"timeout_seconds": 0.5},
                        retry={"delay_seconds": 3.0})
    lms.forced.append(Forced(status=200, hang=4, body="{}"))  # did it enroll? unknown
    line = line_item(email="unsure@example.org")
    order = shopify_order(line)
    await harness.shopify(order)
    await until(lambda: harness.items()[0]["attempts"] == 1)
    await harness.shopify(shopify_refund(order, line, refund_id=7004),
                          **SHOPIFY_REFUND)
    await until(lambda: harness.items()[0]["state"] == "unenrolled", timeout=10)
    await harness.quiet()
    assert [x.action for x in lms.learners()] == ["enroll", "unenroll"]


def woo_at(order: dict, status: str, modified: str, paid: bool) -> dict:
    return dict(order, status=status, date_modified_gmt=modified,
                date_paid_gmt="2026-11-28T12:00:00" if paid else None)


@pytest.mark.gen_test
@pytest.mark.parametrize("require_payment", [True, False])
async def test_a_cancelled_woocommerce_order_paid_late_is_enrolled(harness, lms,
                                                                   require_payment):
    # WooCommerce cancels an unpaid pending order after the hold-stock time,
    # and takes a late payment for it (payment_complete accepts cancelled)
    await harness.start(woocommerce={"require_payment": require_payment})
    order = woo_order(woo_line(email="late@example.org"), paid=False, status="pending")
    pending = woo_at(order, "pending", "2026-11-28T10:00:00", False)
    cancelled = woo_at(order, "cancelled", "2026-11-28T11:00:00", False)
    paid = woo_at(order, "processing", "2026-11-28T12:00:00", True)
    for delivery in (pending, cancelled):
        assert (await harness.woocommerce(delivery, path=WOO_UPDATE,
                                          topic="order.updated")).code == 200
        await harness.quiet()  # the pending one is enrolled first, if it is to be
    # unpaid with require_payment: recorded by the cancellation, not enrolled;
    # without it: enrolled while pending, and left so (unenroll_on_refund off)
    expected = [("late@example.org", "not-enrolled" if require_payment else "enrolled")]
    assert states(harness) == expected
    # a delivery of the pending state that is late (modified before the
    # cancellation) changes nothing
    await harness.woocommerce(pending, path=WOO_UPDATE, topic="order.updated")
    await harness.quiet()
    assert states(harness) == expected
    await harness.woocommerce(paid, path=WOO_UPDATE, topic="order.updated")
    await harness.quiet()
    assert states(harness) == [("late@example.org", "enrolled")]
    assert len(lms.learners()) == 1


@pytest.mark.gen_test
async def test_a_woocommerce_order_cancelled_before_it_arrives_is_revived_by_a_later_payment(
        harness, lms):
    await harness.start()
    order = woo_order(woo_line(email="revived@example.org"), paid=False, status="pending")
    await harness.woocommerce(woo_at(order, "cancelled", "2026-11-28T11:00:00", False),
                              path=WOO_UPDATE, topic="order.updated")
    await harness.quiet()
    assert states(harness) == [("revived@example.org", "not-enrolled")]
    await harness.woocommerce(woo_at(order, "processing", "2026-11-28T12:00:00", True),
                              path=WOO_UPDATE, topic="order.updated")
    await harness.quiet()
    assert states(harness) == [("revived@example.org", "enrolled")]
    code, out, _ = await harness.cli("order", "woocommerce", str(order["id"]))
    assert "refunds and cancellations:" in out and "cancelled" in out


@pytest.mark.gen_test
async def test_a_forged_ping_cannot_store_a_large_body_and_pings_expire(harness):
    service = await harness.start(retention={"rejected_days": 1})
    ping = {"Content-Type": "application/x-www-form-urlencoded"}
    path = "/webhooks/woocommerce/order/create"
    response = await harness.request(path, body=b"webhook_id=1&x=" + b"y" * 100_000,
                                     headers=ping)
    assert (response.code, json.loads(response.body)["reason"]) == (400, "form-too-large")
    assert (await harness.request(path, body=b"webhook_id=12", headers=ping)).code == 200
    kept = harness.db("SELECT status, length(body) FROM deliveries ORDER BY id")
    assert kept == [(400, 65536), (200, 13)]
    with sqlite3.connect(harness.db_path) as conn:  # two days pass
        conn.execute("UPDATE deliveries SET received_at = datetime('now', '-2 days')")
    assert await service.apply_retention() == 2
    assert harness.deliveries() == []


@pytest.mark.gen_test
async def test_the_rejected_budget_follows_a_prune_made_by_the_cli(harness):
    service = await harness.start()
    big = json.dumps(shopify_order(line_item(title="z" * 100_000))).encode()
    assert (await harness.shopify(big, secret="forged")).code == 403
    assert service.store.rejected_bytes == 65536
    # past retention.rejected_days (30) prune may drop its body (before
    # retention, hourly, deletes it)
    harness.db("UPDATE deliveries SET received_at = datetime('now', '-31 days')")
    code, out, _ = await harness.cli("prune", "--older-than", "0")
    assert code == 0 and "1 finished deliveries" in out
    await until(lambda: service.store.rejected_bytes == 0)  # noticed within a second


# -- 7. writes racing the close

@pytest.mark.gen_test
async def test_writes_after_close_fail_at_once(tmp_path):
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'close.db'}")
    await store.start()
    delivery = NewDelivery(provider="shopify", endpoint="POST /x", received_at=utcnow(),
                           client_ip=None, headers={}, body=b"", body_size=0, status=404,
                           reason="unknown-endpoint")
    before = asyncio.ensure_future(store.record(delivery))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)  # close() has begun: the writer is finishing its queue
    late = [asyncio.ensure_future(store.check_writable()) for _ in range(3)]
    done, pending = await asyncio.wait([before, closing, *late], timeout=5)
    assert not pending
    assert before.result().delivery_id == 1  # queued before: committed
    for write in late:
        with pytest.raises(StoreClosed):
            write.result()
    with pytest.raises(StoreClosed):
        await store.prune(utcnow())


# -- 8. the CLI never creates a database

@pytest.mark.gen_test
@pytest.mark.parametrize("command", [["orders"], ["order", "shopify", "1"],
                                     ["retry", "--all-failed"], ["replay", "1"],
                                     ["prune", "--older-than", "1"]])
async def test_a_command_on_a_wrong_database_url_says_so(harness, command):
    await harness.start()
    await harness.stop()
    wrong = harness.tmp_path / "typo.db"
    harness.config_path.write_text(harness.config_path.read_text().replace(
        str(harness.db_path), str(wrong)))
    code, out, err = await harness.cli(*command)
    assert code == 1 and out == ""
    assert err == (f"edx-hooks: database {wrong} does not exist: check database.url "
                   "(only `edx-hooks serve` creates it)\n")
    assert not wrong.exists()
    code, out, _ = await harness.cli("check-config")
    assert code == 0 and f"database {wrong}: does not exist yet" in out
    assert not wrong.exists()


# -- 9. a flood of large forgeries has a budget

@pytest.mark.gen_test
async def test_rejected_bodies_have_a_total_budget(harness, caplog):
    budget = 1024 * 1024
    await harness.start(retention={"rejected_max_bytes": budget})
    big = json.dumps(shopify_order(line_item(title="z" * 100_000))).encode()
    for _ in range(40):  # 4 MB of forgeries
        assert (await harness.shopify(big, secret="forged")).code == 403
    kept = harness.db("SELECT length(body), body_size FROM deliveries")
    assert len(kept) == 40 and {size for _, size in kept} == {len(big)}
    assert sum(length for length, _ in kept) <= budget + 40 * 1024
    assert [length for length, _ in kept][:10] == [65536] * 10  # whole while within budget
    assert {length for length, _ in kept[-10:]} == {1024}  # then the first 1 KiB
    warnings = [r.getMessage() for r in caplog.records
                if "event=retention.budget_full" in r.getMessage()]
    assert len(warnings) == 1  # once an hour, not per request
    # genuine orders are whole, whatever the budget
    order = shopify_order(line_item(title="y" * 100_000))
    assert (await harness.shopify(order)).code == 200
    assert harness.deliveries()[-1]["body"] == json.dumps(order).encode()


# -- 5. an operator's retry acts now

@pytest.mark.gen_test
async def test_retry_is_acted_on_within_a_second_and_wait_prints_the_outcome(harness, lms):
    lms.forced.append(Forced(status=403, body='{"detail": "not staff"}'))
    await harness.start()  # retry.sweep_seconds at its default: 60 s
    order = shopify_order(line_item(email="again@example.org"))
    await harness.shopify(order)
    await until(lambda: harness.items()[0]["state"] == "failed")
    code, out, err = await asyncio.wait_for(
        harness.cli("retry", "shopify", str(order["id"]), "--wait", "20"), 30)
    assert code == 0, (out, err)
    assert f"item 1 (shopify order {order['id']}): enrolled" in out
    assert calls_per_learner(lms) == {"again@example.org": 2}


@pytest.mark.gen_test
async def test_retry_wait_reports_a_new_failure(harness, lms):
    lms.forced.extend([Forced(status=403)] * 2)
    await harness.start()
    order = shopify_order(line_item(email="still@example.org"))
    await harness.shopify(order)
    await until(lambda: harness.items()[0]["state"] == "failed")
    code, out, _ = await harness.cli("retry", "--item", "1", "--wait", "20")
    assert code == 1 and "item 1 (shopify order" in out and ": failed: bulk_enroll answered 403" \
        in out


# -- 10. a SKU redirect names a course only on the LMS's own origin

@pytest.mark.gen_test
@pytest.mark.parametrize("location, names_course", [
    ("/courses/{course}/about", True),
    ("http://127.0.0.1:{port}/courses/{course}/", True),
    ("http://127.0.0.1:1/courses/{course}/", False),       # another port
    ("https://127.0.0.1:{port}/courses/{course}/", False),  # another scheme
    ("http://localhost:{port}/courses/{course}/", False),  # another host name
])
async def test_sku_redirect_is_compared_by_origin(harness, lms, location, names_course):
    lms.redirects["sku/PY101"] = location.format(course=COURSE, port=lms.port)
    await harness.start()
    await harness.shopify(shopify_order(line_item(sku="PY101")))
    await harness.quiet()
    [item] = harness.items()
    if names_course:
        assert (item["state"], item["course_id"]) == ("enrolled", COURSE)
    else:
        assert item["state"] == "failed" and "names no course" in item["reason"]
        assert lms.calls == []
