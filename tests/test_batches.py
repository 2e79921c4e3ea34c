"""Flash sales: learners due for the same course go to the LMS in one bulk
enrollment call, and each still gets an exact outcome of their own."""

from __future__ import annotations

import asyncio
import collections
import json
import re

import pytest

from edx_hooks.batches import reason
from edx_hooks.enrollment import runtime
from edx_hooks.lms import Pacer

from .conftest import (
    COURSE,
    SHOPIFY_REFUND,
    line_item,
    shopify_order,
    shopify_refund,
    until,
)
from .standin_lms import Forced

DS = "course-v1:Demo+DS201+2026"


def states(harness) -> list[tuple[str, str]]:
    return [(i["email"], i["state"]) for i in harness.items()]


def per_learner(lms) -> collections.Counter:
    return collections.Counter(x.email for x in lms.learners())


@pytest.mark.gen_test
async def test_one_call_per_course_with_an_exact_outcome_per_learner(harness, lms):
    lms.registered.add("member@example.org")
    lms.invalid.add("odd@example.org")  # the LMS's own address check says no
    lms.omit.add("lost@example.org")  # the answer has no result for this one
    await harness.start()
    order = shopify_order(line_item(email="member@example.org"),
                          line_item(email="odd@example.org"),
                          line_item(email="newbie@example.org"),  # no account: allowed
                          line_item(email="lost@example.org"),
                          line_item(sku=DS, email="member@example.org"))
    assert (await harness.shopify(order)).code == 200
    await harness.quiet()
    assert states(harness) == [
        ("member@example.org", "enrolled"), ("odd@example.org", "failed"),
        ("newbie@example.org", "enrolled"), ("lost@example.org", "failed"),
        ("member@example.org", "enrolled")]
    reasons = [i["reason"] for i in harness.items()]
    assert reasons[1] == "the LMS rejected the learner email as invalid"
    assert reasons[3] == "bulk_enroll answered 200 without a result for the learner"
    # one call for the four of PY101, one for DS201: the pace counts calls
    assert sorted((c.form["courses"], c.form["identifiers"]) for c in lms.calls) == [
        (DS, "member@example.org"),
        (COURSE, "member@example.org,odd@example.org,newbie@example.org,lost@example.org")]
    assert {c.form["reason"] for c in lms.calls} == {f"edx-hooks shopify {order['name']}"}


@pytest.mark.gen_test
async def test_a_whole_call_failing_transiently_costs_each_an_attempt(harness, lms):
    lms.forced.append(Forced(status=503))
    await harness.start(retry={"delay_seconds": 2})  # long enough to see between attempts
    await harness.shopify(shopify_order(*[line_item(email=f"t{n}@example.org")
                                          for n in range(3)]))
    await until(lambda: {i["attempts"] for i in harness.items()} == {1}
                and {i["state"] for i in harness.items()} == {"pending"})
    assert {i["reason"] for i in harness.items()} == {"bulk_enroll answered 503"}
    await until(lambda: {i["state"] for i in harness.items()} == {"enrolled"}, timeout=10)
    await harness.quiet()
    assert {i["attempts"] for i in harness.items()} == {2}
    assert set(per_learner(lms).values()) == {2}


@pytest.mark.gen_test
async def test_a_whole_call_throttled_costs_no_attempt(harness, lms):
    lms.forced.append(Forced(status=429, headers={"Retry-After": "1"},
                             body='{"detail": "Request was throttled. Expected available in 1 '
                                  'seconds."}'))
    await harness.start()
    await harness.shopify(shopify_order(*[line_item(email=f"h{n}@example.org")
                                          for n in range(3)]))
    await until(lambda: {i["state"] for i in harness.items()} == {"enrolled"}, timeout=10)
    await harness.quiet()
    assert {i["attempts"] for i in harness.items()} == {1}  # the 429 was not one
    assert lms.calls[0].form["identifiers"].count(",") == 2  # all three in the call


@pytest.mark.gen_test
async def test_a_whole_call_refused_fails_each(harness, lms):
    lms.forced.append(Forced(status=403))
    await harness.start()
    await harness.shopify(shopify_order(*[line_item(email=f"r{n}@example.org")
                                          for n in range(3)]))
    await harness.quiet()
    assert {(i["state"], i["attempts"]) for i in harness.items()} == {("failed", 1)}
    assert len(lms.calls) == 1


@pytest.mark.gen_test(timeout=120)
async def test_a_crash_during_a_batch_call_repeats_that_call_only(harness, lms, serve):
    # the held call outlasts the test's steps: its deadline is 1 + 5 + 3 s
    service = serve(lms={"timeout_seconds": 5})
    await service.start()
    lms.forced.append(Forced(status=200, hang=60, body="{}"))  # holds the first call
    held = shopify_order(*[line_item(email=f"held{n}@example.org") for n in range(3)])
    assert (await harness.shopify(held)).code == 200
    await until(lambda: lms.calls)
    free = shopify_order(line_item(email="free@example.org"))
    assert (await harness.shopify(free)).code == 200
    await until(lambda: harness.items()[-1]["state"] == "enrolled")
    await service.kill()
    await service.start()
    await until(lambda: {i["state"] for i in harness.items()} == {"enrolled"}, timeout=20)
    await service.quiet()
    # the call in flight at the kill is asked about (its deadline past); the
    # LMS shows nothing of it, so it is made once more, for its learners only
    assert per_learner(lms) == {"held0@example.org": 2, "held1@example.org": 2,
                                "held2@example.org": 2, "free@example.org": 1}
    assert sorted(lms.allowance_lookups) == [f"held{n}@example.org" for n in range(3)]


@pytest.mark.gen_test
async def test_a_refund_while_its_batch_is_in_flight_unenrolls_after(harness, lms):
    lms.hold = asyncio.Event()  # the batch call stays under way until set free
    await harness.start(shopify={"unenroll_on_refund": True})
    lines = [line_item(email=f"f{n}@example.org") for n in range(2)]
    order = shopify_order(*lines)
    await harness.shopify(order)
    await until(lambda: lms.calls)
    assert (await harness.shopify(shopify_refund(order, *lines), **SHOPIFY_REFUND)).code == 200
    assert lms.in_flight and {i["state"] for i in harness.items()} == {"pending"}
    lms.hold.set()  # the LMS enrolls them; the refund that came meanwhile follows
    await until(lambda: {i["state"] for i in harness.items()} == {"unenrolled"}, timeout=15)
    actions = [(x.action, x.email) for x in lms.learners()]
    assert actions[:2] == [("enroll", "f0@example.org"), ("enroll", "f1@example.org")]
    assert sorted(actions[2:]) == [("unenroll", "f0@example.org"),
                                   ("unenroll", "f1@example.org")]


@pytest.mark.gen_test(timeout=60)
async def test_a_refund_while_a_retry_waits_for_its_batch_unenrolls_a_timed_out_call(
        harness, lms):
    """The first call timed out (the LMS may have enrolled the learner); the
    refund comes while the retry waits for its batch's turn: it is not sent,
    and the learner is unenrolled, in case."""
    lms.forced.append(Forced(status=200, hang=30, body="{}"))
    service = await harness.start(shopify={"unenroll_on_refund": True},
                                  lms={"timeout_seconds": 0.5}, retry={"delay_seconds": 0.1})
    service.lms.pacer = Pacer(1, window=3.0)  # a call in any 3 s
    line = line_item(email="maybe@example.org")
    order = shopify_order(line)
    await harness.shopify(order)
    await until(lambda: harness.service.runtime.batcher.queues  # the retry, in the queue
                and harness.items()[0]["reason"].startswith("LMS unreachable"))
    assert (await harness.shopify(shopify_refund(order, line), **SHOPIFY_REFUND)).code == 200
    await until(lambda: harness.items()[0]["state"] == "unenrolled", timeout=20)
    await harness.quiet()
    assert [(c.form["action"], c.form["identifiers"]) for c in lms.calls] == [
        ("enroll", "maybe@example.org"), ("unenroll", "maybe@example.org")]


@pytest.mark.gen_test(timeout=60)
async def test_a_refund_while_waiting_for_its_batch_is_never_sent(harness, lms):
    service = await harness.start()
    service.lms.pacer = Pacer(1, window=3.0)  # a call in any 3 s
    first = shopify_order(line_item(email="first@example.org"))
    await harness.shopify(first)
    await until(lambda: lms.calls)
    line = line_item(email="late@example.org")
    order = shopify_order(line)
    await harness.shopify(order)
    await until(lambda: harness.service.runtime.batcher.queues)  # waits for the next turn
    assert (await harness.shopify(shopify_refund(order, line), **SHOPIFY_REFUND)).code == 200
    await until(lambda: harness.items()[1]["state"] == "not-enrolled", timeout=10)
    assert harness.items()[1]["reason"] == "refunded before it was enrolled: not enrolled"
    assert [c.form["identifiers"] for c in lms.calls] == ["first@example.org"]


@pytest.mark.gen_test(timeout=60)
async def test_orders_arriving_while_a_call_waits_its_turn_share_the_next(harness, lms):
    service = await harness.start()
    service.lms.pacer = Pacer(1, window=4.0)  # a call in any 4 s
    first = shopify_order(line_item(email="first@example.org"))
    await harness.shopify(first)
    await until(lambda: lms.calls)  # the first call went at once; the next in 4 s
    later = [shopify_order(line_item(email=f"l{n}@example.org")) for n in range(5)]
    for order in later:
        await harness.shopify(order)
    await until(lambda: len(harness.items()) == 6
                and {i["state"] for i in harness.items()} == {"enrolled"}, timeout=15)
    assert len(lms.calls) == 2
    second = lms.calls[1].form
    assert second["identifiers"] == ",".join(f"l{n}@example.org" for n in range(5))
    assert second["reason"] == "edx-hooks " + ", ".join(f"shopify {o['name']}" for o in later)


@pytest.mark.gen_test(timeout=60)
async def test_batch_size_caps_the_learners_of_a_call(harness, lms):
    await harness.start(lms={"batch_size": 2})
    await harness.shopify(shopify_order(*[line_item(email=f"c{n}@example.org")
                                          for n in range(5)]))
    await harness.quiet()
    assert {i["state"] for i in harness.items()} == {"enrolled"}
    assert sorted(c.form["identifiers"].count(",") + 1 for c in lms.calls) == [1, 2, 2]


def test_the_audit_reason_names_the_orders_as_far_as_the_field_holds():
    assert reason(["shopify #1", "shopify #1", "woocommerce #7"]) == \
        "edx-hooks shopify #1, woocommerce #7"
    long = reason([f"shopify #{n}" for n in range(1000, 1100)])
    assert len(long) <= 255 and long.startswith("edx-hooks shopify #1000, shopify #1001")
    assert re.search(r", shopify #\d+ and \d+ more$", long)
    # an order whose name alone is too long: as much of it as fits
    odd = reason(["shopify " + "x" * 300, "shopify #2"])
    assert len(odd) == 255 and odd.startswith("edx-hooks shopify xxx")
    assert odd.endswith("x and 1 more")


@pytest.mark.gen_test
async def test_an_email_with_a_comma_never_reaches_a_batch(harness, lms):
    await harness.start()
    await harness.shopify(shopify_order(line_item(email="a@x.org,b@y.org"),
                                        line_item(email="ok@example.org")))
    await harness.quiet()
    assert [c.form["identifiers"] for c in lms.calls] == ["ok@example.org"]
    assert json.loads(json.dumps(states(harness)))[0] == ["a@x.org,b@y.org", "failed"]


@pytest.mark.gen_test(timeout=60)
async def test_a_backlog_beyond_the_admission_cap_is_all_enrolled(harness, lms, monkeypatch):
    monkeypatch.setattr(runtime, "ITEMS_AT_ONCE", 5)  # jobs of several items, five at a time
    await harness.start()
    orders = [shopify_order(*[line_item(sku=[COURSE, DS][n % 2], email=f"b{n}.{k}@example.org")
                              for k in range(3)]) for n in range(20)]
    await asyncio.gather(*(harness.shopify(order) for order in orders))
    await until(lambda: len(harness.items()) == 60
                and {i["state"] for i in harness.items()} == {"enrolled"}, timeout=30)
    await harness.quiet()
    assert set(per_learner(lms).values()) == {1}
    assert max(c.form["identifiers"].count(",") + 1 for c in lms.calls) <= 5


@pytest.mark.gen_test
async def test_admission_is_first_come_first_served_and_never_held_in_part():
    from edx_hooks.enrollment.runtime import Admission
    admission = Admission(4)
    await admission.take(3)
    big = asyncio.ensure_future(admission.take(4))  # must wait for all four
    small = asyncio.ensure_future(admission.take(1))  # behind it, though one is free
    await asyncio.sleep(0)
    assert not big.done() and not small.done() and admission.free == 1
    admission.give(3)
    await asyncio.sleep(0)
    assert big.done() and not small.done() and admission.free == 0
    admission.give(4)
    await asyncio.sleep(0)
    assert small.done() and admission.free == 3
    waiting = asyncio.ensure_future(admission.take(4))
    await asyncio.sleep(0)
    waiting.cancel()  # a job stopped while waiting leaves the queue
    await asyncio.sleep(0)
    admission.give(1)
    assert admission.free == 4 and not admission._waiting


@pytest.mark.gen_test
async def test_admission_wakes_the_next_when_the_first_waiting_leaves():
    from edx_hooks.enrollment.runtime import Admission
    admission = Admission(4)
    await admission.take(2)
    head = asyncio.ensure_future(admission.take(4))  # waits for all four
    behind = asyncio.ensure_future(admission.take(2))  # two are free, but behind it
    await asyncio.sleep(0)
    assert not head.done() and not behind.done()
    head.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert behind.done() and not behind.cancelled() and admission.free == 0
    # a waiter cancelled after give() passed it over leaves no trace either
    gone = asyncio.ensure_future(admission.take(1))
    await asyncio.sleep(0)
    gone.cancel()
    admission.give(2)
    await asyncio.sleep(0)
    assert gone.cancelled() and admission.free == 2 and not admission._waiting


@pytest.mark.gen_test(timeout=60)
async def test_a_stop_during_an_account_lookup_sends_nothing_more(harness, lms):
    lms.account_latency = 1.0  # the lookup is under way when the stop comes
    await harness.start(products=[{"sku": "PY-CERT", "courses": [COURSE],
                                   "mode": "verified"}])
    await harness.shopify(shopify_order(line_item(sku="PY-CERT", email="new@example.org")))
    await until(lambda: lms.account_lookups)
    # the lookup's end, not the stop's bound: a hang here fails the test
    assert await asyncio.wait_for(harness.service.runtime.drain(60), timeout=20) == []
    assert lms.calls == []
    item = harness.items()[0]
    assert (item["state"], item["attempts"]) == ("pending", 0)  # the next start resumes it


@pytest.mark.allow_tracebacks
@pytest.mark.gen_test(timeout=60)
async def test_a_fault_in_the_batcher_fails_over_to_a_retry_and_it_goes_on(harness, lms, caplog):
    await harness.start(retry={"delay_seconds": 0.2})
    batcher = harness.service.runtime.batcher
    real, faults = batcher.on_taken, []

    def faulty(entries):
        if not faults:
            faults.append(len(entries))
            raise RuntimeError("a bug")
        real(entries)

    batcher.on_taken = faulty
    await harness.shopify(shopify_order(line_item(email="one@example.org"),
                                        line_item(email="two@example.org")))
    await until(lambda: {i["state"] for i in harness.items()} == {"enrolled"}, timeout=15)
    await harness.quiet()
    assert faults == [2]
    assert [(x.action, x.email) for x in lms.learners()] == [
        ("enroll", "one@example.org"), ("enroll", "two@example.org")]
    assert {i["attempts"] for i in harness.items()} == {2}
    assert any("event=batches.error" in r.getMessage() for r in caplog.records)


@pytest.mark.allow_tracebacks
@pytest.mark.gen_test(timeout=60)
async def test_a_job_whose_read_fails_gives_its_items_another_later(harness, lms):
    import sqlalchemy.exc
    await harness.start(retry={"delay_seconds": 0.2})
    store, failures = harness.service.store, []
    real = store.items_for_jobs

    async def busy_once(item_ids):
        if not failures:
            failures.append(list(item_ids))
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("database is locked"))
        return await real(item_ids)

    store.items_for_jobs = busy_once
    await harness.shopify(shopify_order(line_item(email="x@example.org"),
                                        line_item(email="y@example.org")))
    await until(lambda: {i["state"] for i in harness.items()} == {"enrolled"}, timeout=15)
    assert failures == [[1, 2]]
    assert {i["attempts"] for i in harness.items()} == {1}  # a read is not an attempt
