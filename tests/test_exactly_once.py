"""Exactly once when the LMS's answer is lost (issue 18): the stand-in LMS
emails each learner inside the bulk enrollment call (``per_learner`` seconds
each) and finishes its work even when the caller has gone, as the real one
does. Assertions are on the stand-in's own record: each learner named in
exactly one enroll call, and every item enrolled."""

from __future__ import annotations

import asyncio
import collections
import json
import logging

import pytest

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

#: the LMS settings as shipped (the tests' base config shortens them)
DEFAULT_LMS = {"timeout_seconds": 10, "connect_timeout_seconds": 5,
               "max_calls_per_minute": 100}
WOO_UPDATE = "/webhooks/woocommerce/order/update"


def enroll_calls(lms) -> collections.Counter:
    """How many enroll calls named each learner."""
    return collections.Counter(x.email for x in lms.learners() if x.action == "enroll")


def states(harness) -> set[str]:
    return {i["state"] for i in harness.items()}


@pytest.mark.gen_test(timeout=90)
async def test_a_slow_batch_on_the_defaults_is_sent_once(harness, lms):
    """20 learners with an account, 0.6 s of email each inside the call
    (12 s in all, past the old 10 s timeout): on the shipped defaults the
    call is given the time it needs."""
    lms.per_learner = 0.6
    emails = [f"slow{n}@example.org" for n in range(20)]
    lms.registered.update(emails)
    await harness.start(lms=DEFAULT_LMS)
    # one order for 20 learners (a school buying seats): due together, they
    # are one call of 20 whatever the machine's timing
    assert (await harness.shopify(shopify_order(*(line_item(email=e) for e in emails)))).code \
        == 200
    await until(lambda: states(harness) == {"enrolled"} and len(harness.items()) == 20,
                timeout=60)
    await harness.quiet()
    assert enroll_calls(lms) == {e: 1 for e in emails}
    assert all(lms.enrollment(e, COURSE).is_active for e in emails)


@pytest.mark.gen_test(timeout=90)
async def test_a_kill_during_a_slow_batch_asks_the_lms_and_sends_nothing_twice(
        harness, lms, serve):
    """kill -9 while the LMS works through a batch: after the restart the
    call in flight is asked about once its deadline has passed, and only
    what the LMS does not show is sent."""
    lms.per_learner = 0.6
    emails = [f"crash{n}@example.org" for n in range(10)]
    lms.registered.update(emails)
    service = serve(lms=DEFAULT_LMS)
    await service.start()
    # one order for the 10: one call of 10, whatever the pacer does with a
    # burst of separate orders (sent at once, they could all be one-learner
    # calls finishing together, with no moment mid-batch to kill at)
    assert (await harness.shopify(shopify_order(*(line_item(email=e) for e in emails)))).code \
        == 200
    # the LMS has enrolled some of the call's learners, not all: kill now
    await until(lambda: len(lms.calls) == 1 and 1 <= len(lms.enrollments) < 8, timeout=20,
                interval=0.05)
    await service.kill()
    assert "pending" in states(harness)
    await service.start()
    await until(lambda: states(harness) == {"enrolled"}, timeout=60)
    await service.quiet()
    assert enroll_calls(lms) == {e: 1 for e in emails}
    assert service.lines("item.confirmed")  # what the LMS showed was recorded, not re-sent


@pytest.mark.gen_test(timeout=60)
async def test_a_timed_out_call_is_asked_about_not_sent_again(harness, lms):
    """1 s to answer, and the LMS takes 2.5 s: the call times out, the LMS
    enrolls (allowances: no accounts) all the same; the next attempt asks
    and records them enrolled, with no second call."""
    lms.latency = 2.5  # past the deadline of 1 s to connect and 1 s to answer
    await harness.start(lms={"timeout_seconds": 1, "seconds_per_learner": 0},
                        retry={"delay_seconds": 1})
    emails = [f"late{n}@example.org" for n in range(3)]
    for email in emails:
        assert (await harness.shopify(shopify_order(line_item(email=email)))).code == 200
    await until(lambda: states(harness) == {"enrolled"}, timeout=30)
    await harness.quiet()
    assert enroll_calls(lms) == {e: 1 for e in emails}
    assert sorted(lms.allowance_lookups) == emails
    assert all((e, COURSE) in lms.allowances for e in emails)
    assert {i["attempts"] for i in harness.items()} == {2}
    assert harness.db("SELECT count(*) FROM items WHERE unconfirmed IS NOT NULL") == [(0,)]


@pytest.mark.gen_test(timeout=60)
async def test_an_answer_lost_every_time_ends_unknown_then_refund_and_retry(harness, lms):
    """A proxy answers 502 to every call (the LMS behind it may have done
    it): after its attempts the item is unknown, not failed; a refund still
    unenrolls; a retry asks the LMS first."""
    await harness.start(shopify={"unenroll_on_refund": True},
                        retry={"attempts": 2, "delay_seconds": 0.2})
    lms.fail_all = Forced(status=502)
    kept, refunded = line_item(email="kept@example.org"), line_item(email="gone@example.org")
    order = shopify_order(kept, refunded)
    await harness.shopify(order)
    await until(lambda: states(harness) == {"unknown"}, timeout=20)
    [item] = [i for i in harness.items() if i["email"] == "kept@example.org"]
    assert item["reason"].startswith("bulk_enroll answered 502; outcome unknown")
    assert item["unconfirmed"] == "enroll"
    code, out, _ = await harness.cli("orders", "--state", "unknown")
    assert code == 0 and str(order["id"]) in out
    health = json.loads((await harness.request("/healthz", method="GET")).body)
    assert (health["unknown"], health["failed"]) == (2, 0)

    lms.fail_all = None
    # the LMS did enroll the kept learner behind the 502s (an allowance)
    lms.allowances[("kept@example.org", COURSE)] = True
    assert (await harness.shopify(shopify_refund(order, refunded, refund_id=18),
                                  **SHOPIFY_REFUND)).code == 200
    await until(lambda: {i["email"]: i["state"] for i in harness.items()}
                .get("gone@example.org") == "unenrolled", timeout=10)
    code, out, err = await harness.cli("retry", "--all-failed", "--wait", "20")
    assert code == 0, out + err
    await harness.quiet()
    assert {i["email"]: i["state"] for i in harness.items()} == {
        "kept@example.org": "enrolled", "gone@example.org": "unenrolled"}
    # kept: two 502s, then asked and found: no third enroll call
    assert enroll_calls(lms)["kept@example.org"] == 2
    assert "kept@example.org" in lms.allowance_lookups
    actions = [(x.action, x.email) for x in lms.learners() if x.email == "gone@example.org"]
    assert actions[-1] == ("unenroll", "gone@example.org")


@pytest.mark.gen_test(timeout=60)
async def test_without_the_allowance_view_a_learner_without_account_is_sent_again(
        harness, lms):
    """An LMS older than Quince has no enrollment_allowed view (404): a
    learner without an account cannot be asked about, and is sent again (the
    README says so)."""
    lms.allowed_view = False
    lms.latency = 2.5  # past the deadline of 1 s to connect and 1 s to answer
    await harness.start(lms={"timeout_seconds": 1, "seconds_per_learner": 0},
                        retry={"delay_seconds": 1})
    await harness.shopify(shopify_order(line_item(email="noview@example.org")))
    await until(lambda: lms.calls)
    lms.latency = 0  # the first call goes on for 2.5 s (and enrolls); the next is quick
    await until(lambda: states(harness) == {"enrolled"}, timeout=30)
    assert enroll_calls(lms) == {"noview@example.org": 2}


@pytest.mark.gen_test
async def test_one_learner_twice_in_a_batch_is_named_once(harness, lms):
    """Two line items for the same learner and course (two orders, or a
    gift bought twice) in one call: one identifier, so one email."""
    lms.hold = asyncio.Event()  # the first call stays under way while both queue
    await harness.start()
    await harness.shopify(shopify_order(line_item(email="first@example.org")))
    await until(lambda: lms.calls)
    await harness.shopify(shopify_order(line_item(email="Twice@example.org"),
                                        line_item(email="twice@example.org")))
    await until(lambda: len(harness.items()) == 3)
    await asyncio.sleep(0.2)  # both queued behind the held call
    lms.hold.set()
    await until(lambda: states(harness) == {"enrolled"}, timeout=10)
    assert [len(c.form["identifiers"].split(",")) for c in lms.calls] == [1, 1]
    assert collections.Counter(x.email.lower() for x in lms.learners()) == {
        "first@example.org": 1, "twice@example.org": 1}


def woo_at(order: dict, status: str, modified: str) -> dict:
    paid = status == "processing"
    return dict(order, status=status, date_modified_gmt=modified,
                date_paid_gmt="2026-11-28T12:00:00" if paid else None)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("first_call", ["succeeds", "fails once"])
async def test_a_woocommerce_order_cancelled_then_paid_ends_enrolled(harness, lms, first_call):
    """pending (enrolled, as a placed order) -> cancelled (unenrolled) ->
    processing, modified later: the latest state wins, the learner who paid
    is enrolled again."""
    await harness.start(woocommerce={"unenroll_on_refund": True},
                        retry={"delay_seconds": 1.0})
    if first_call == "fails once":
        lms.forced.append(Forced(status=503))
    order = woo_order(woo_line(email="paid@example.org"), status="pending")
    for status, modified in (("pending", "2026-11-28T10:00:00"),
                             ("cancelled", "2026-11-28T11:00:00")):
        assert (await harness.woocommerce(woo_at(order, status, modified), path=WOO_UPDATE,
                                          topic="order.updated")).code == 200
        if first_call == "succeeds":
            await harness.quiet()
    assert (await harness.woocommerce(woo_at(order, "processing", "2026-11-28T12:00:00"),
                                      path=WOO_UPDATE, topic="order.updated")).code == 200
    await harness.quiet(timeout=20)
    [item] = harness.items()
    assert item["state"] == "enrolled" and item["unenroll_requested_at"] is None
    assert (("paid@example.org", COURSE) in lms.allowances) is True
    actions = [x.action for x in lms.learners()]
    assert actions[-1] == "enroll"
    if first_call == "succeeds":
        assert actions[-3:] == ["enroll", "unenroll", "enroll"]


@pytest.mark.gen_test(timeout=60)
async def test_an_outcome_that_changes_nothing_is_not_logged_as_done(harness, lms, caplog):
    """The cancellation's unenroll call is under way when a later payment
    places the order again: the unenrollment's outcome finds the item moved
    on, records nothing and logs no item.unenrolled; the learner is
    enrolled again, and that is logged."""
    caplog.set_level(logging.INFO, logger="edx_hooks")
    await harness.start(woocommerce={"unenroll_on_refund": True})
    order = woo_order(woo_line(email="moved@example.org"), status="pending")

    async def deliver(status: str, modified: str) -> None:
        assert (await harness.woocommerce(woo_at(order, status, modified), path=WOO_UPDATE,
                                          topic="order.updated")).code == 200

    await deliver("pending", "2026-11-28T10:00:00")
    await harness.quiet()
    lms.hold = asyncio.Event()
    await deliver("cancelled", "2026-11-28T11:00:00")
    await until(lambda: len(lms.calls) == 2)  # the unenroll call, held
    await deliver("processing", "2026-11-28T12:00:00")
    assert harness.items()[0]["state"] == "pending"
    lms.hold.set()
    await until(lambda: harness.items()[0]["state"] == "enrolled", timeout=20)
    await harness.quiet()
    events = [r.getMessage().split()[0] for r in caplog.records
              if r.getMessage().startswith("event=item.")]
    assert "event=item.unenrolled" not in events
    assert events.count("event=item.enrolled") == 2
    assert [x.action for x in lms.learners()] == ["enroll", "unenroll", "enroll"]


@pytest.mark.gen_test(timeout=60)
async def test_a_withdrawal_is_written_only_while_its_cancellation_is_in_force(harness, lms):
    """The job reads an item withdrawn, and a later delivery places the order
    again before the job writes not-enrolled: the write must not land (it
    did, now and then, and the learner who paid stayed not-enrolled)."""
    lms.hold = asyncio.Event()  # no enrollment finishes meanwhile
    await harness.start(woocommerce={"unenroll_on_refund": True})
    store = harness.service.store
    lifted = woo_order(woo_line(email="lifted@example.org"), status="pending")
    standing = woo_order(woo_line(email="standing@example.org"), status="pending")
    for order, steps in ((lifted, ("pending", "cancelled", "processing")),
                         (standing, ("pending", "cancelled"))):
        for n, status in enumerate(steps):
            assert (await harness.woocommerce(woo_at(order, status, f"2026-11-28T1{n}:00:00"),
                                              path=WOO_UPDATE, topic="order.updated")).code \
                == 200
    by_email = {i["email"]: i for i in harness.items()}
    assert {e: i["state"] for e, i in by_email.items()} == {
        "lifted@example.org": "pending", "standing@example.org": "pending"}
    assert not await store.withdraw(by_email["lifted@example.org"]["id"], "pending",
                                    state="not-enrolled", reason="stale")
    assert await store.withdraw(by_email["standing@example.org"]["id"], "pending",
                                state="not-enrolled", reason="cancelled")
    assert {i["email"]: i["state"] for i in harness.items()} == {
        "lifted@example.org": "pending", "standing@example.org": "not-enrolled"}
    lms.hold.set()
