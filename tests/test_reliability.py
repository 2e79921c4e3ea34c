"""Nothing lost, nothing twice: the real service as a subprocess, killed with
SIGKILL at chosen points, stopped under load, facing LMS outages, throttling
and concurrent duplicates. Assertions are on the stand-in LMS's own record of
the calls it received."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys

import pytest
from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError

from edx_hooks.lms import Pacer

from .conftest import line_item, shopify_order, until
from .standin_lms import Forced


def enrolled(harness, count: int) -> bool:
    items = harness.items()
    return len(items) == count and all(i["state"] == "enrolled" for i in items)


async def answer_code(harness, order) -> int:
    """The status of a delivery; 599 when the connection was refused or cut."""
    try:
        return (await harness.shopify(order)).code
    except (OSError, StreamClosedError, HTTPClientError):
        return 599


def calls_per_learner(lms) -> collections.Counter:
    return collections.Counter(x.email for x in lms.learners())


@pytest.mark.gen_test
async def test_sigkill_after_the_200_before_the_enroll_call(harness, lms, serve):
    # the stalled token request must not time out (and be retried) before the kill
    service = serve(lms={"timeout_seconds": 30})
    await service.start()
    lms.forced_token.append(Forced(status=200, hang=60))  # the job stalls before enrolling
    order = shopify_order(line_item(email="a@example.org"), line_item(email="b@example.org"))
    assert (await harness.shopify(order)).code == 200
    await until(lambda: lms.token_requests >= 1)
    await service.kill()
    assert [i["state"] for i in harness.items()] == ["pending", "pending"]
    assert lms.calls == []

    await service.start()
    await until(lambda: enrolled(harness, 2), timeout=15)
    assert calls_per_learner(lms) == {"a@example.org": 1, "b@example.org": 1}
    assert service.lines("service.started")[-1].count("resumed_items=2")


@pytest.mark.gen_test
async def test_sigkill_while_the_lms_holds_the_enroll_call(harness, lms, serve):
    # the held call must not time out (and be retried) before the kill: its
    # deadline is 1 + 5 + 1 s
    service = serve(lms={"timeout_seconds": 5})
    await service.start()
    lms.forced.append(Forced(status=200, hang=60, body="{}"))  # holds the first call
    order = shopify_order(line_item(email="held@example.org"))
    assert (await harness.shopify(order)).code == 200
    await until(lambda: lms.calls)  # held: the first call is this one
    assert (await harness.shopify(shopify_order(line_item(email="free@example.org")))).code == 200
    await until(lambda: harness.items()[1]["state"] == "enrolled")
    assert harness.items()[0]["state"] == "pending"
    await service.kill()

    await service.start()
    await until(lambda: enrolled(harness, 2), timeout=20)
    await service.quiet()
    # the one call in flight at the kill is asked about once its deadline has
    # passed: the LMS shows nothing of it (its held answer did nothing), so it
    # is made once more; nothing else is
    assert calls_per_learner(lms) == {"held@example.org": 2, "free@example.org": 1}
    assert lms.allowance_lookups == ["held@example.org"]


@pytest.mark.gen_test
async def test_sigkill_under_load_loses_no_acknowledged_order(harness, lms, serve):
    service = serve(retry={"delay_seconds": 0.5})
    await service.start()
    orders = [shopify_order(line_item(email=f"load{n}@example.org")) for n in range(120)]
    acknowledged: list[int] = []
    queue = iter(orders)

    async def sender():
        for order in queue:
            code = await answer_code(harness, order)
            if code == 200:
                acknowledged.append(order["id"])

    senders = asyncio.gather(*[sender() for _ in range(16)])
    await until(lambda: len(acknowledged) >= 40, timeout=30)
    await service.kill()
    await senders  # the rest fail: the service is gone
    stored = {int(r[0]) for r in harness.db("SELECT external_id FROM orders")}
    assert set(acknowledged) <= stored  # every 200 was on disk before it was sent
    # the learners of the calls in flight at the kill: called, their outcome unrecorded
    in_flight = {x.email for x in lms.learners()} & {
        r[0] for r in harness.db("SELECT email FROM items WHERE state = 'pending'")}

    await service.start()
    await until(lambda: enrolled(harness, len(stored)), timeout=30)
    # Shopify re-delivers what was not acknowledged, and some that were
    for order in orders:
        assert (await harness.shopify(order)).code == 200
    await until(lambda: enrolled(harness, len(orders)), timeout=30)
    await service.quiet()
    per_learner = calls_per_learner(lms)
    assert set(per_learner) == {f"load{n}@example.org" for n in range(120)}
    repeated = {email for email, count in per_learner.items() if count > 1}
    assert max(per_learner.values()) <= 2
    assert repeated <= in_flight  # only the calls in flight at the kill are made again


@pytest.mark.gen_test
async def test_twenty_concurrent_duplicates_make_one_order_and_one_call_per_item(
        harness, lms, serve):
    service = serve()
    await service.start()
    order = shopify_order(line_item(email="a@example.org"), line_item(email="b@example.org"))
    responses = await asyncio.gather(*[harness.shopify(order) for _ in range(20)])
    assert [r.code for r in responses] == [200] * 20
    # a second purchase of the same course by the same learner is its own order
    assert (await harness.shopify(shopify_order(line_item(email="a@example.org")))).code == 200
    await until(lambda: enrolled(harness, 3))
    await service.quiet()
    assert harness.db("SELECT count(*) FROM orders") == [(2,)]
    assert harness.db("SELECT count(*) FROM deliveries WHERE status = 200") == [(21,)]
    assert calls_per_learner(lms) == {"a@example.org": 2, "b@example.org": 1}


@pytest.mark.gen_test
@pytest.mark.parametrize("outage", ["refused", "503", "hanging"])
async def test_outage_shorter_than_the_retry_window(harness, lms, serve, outage):
    service = serve(retry={"delay_seconds": 1.5}, lms={"timeout_seconds": 0.5})
    await service.start()
    if outage == "refused":
        await lms.stop()
    else:
        # hanging: past the deadline of a call for three (1 + 0.5 + 3 s)
        lms.fail_all = Forced(status=503) if outage == "503" else Forced(status=200, hang=6)
    for n in range(3):
        assert (await harness.shopify(shopify_order(line_item(email=f"o{n}@example.org")))).code \
            == 200
    await until(lambda: all(i["attempts"] == 1 for i in harness.items()), timeout=10)
    assert {i["state"] for i in harness.items()} == {"pending"}
    if outage == "refused":
        await lms.start(same_port=True)
    lms.fail_all = None
    await until(lambda: enrolled(harness, 3), timeout=15)
    assert all(i["attempts"] == 2 for i in harness.items())
    assert set(calls_per_learner(lms)) == {"o0@example.org", "o1@example.org", "o2@example.org"}


@pytest.mark.gen_test
async def test_long_outage_fails_items_with_the_last_error_and_the_operator_retries(
        harness, lms, serve):
    service = serve(retry={"delay_seconds": 0.3, "attempts": 2, "sweep_seconds": 0.5})
    await service.start()
    lms.fail_all = Forced(status=503)
    await harness.shopify(shopify_order(line_item(email="a@example.org"),
                                        line_item(email="b@example.org")))
    await until(lambda: all(i["state"] == "failed" for i in harness.items()), timeout=10)
    assert {i["reason"] for i in harness.items()} == {"bulk_enroll answered 503 (after 2 attempts)"}
    await until(lambda: len(service.lines("item.failed")) == 2)  # its log, read as it comes

    # the LMS is back; the operator retries while the service runs
    lms.fail_all = None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edx_hooks", "retry", "--config", str(service.config),
        "--all-failed", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert b"2 line item(s) set pending again: 1, 2" in out
    await until(lambda: enrolled(harness, 2), timeout=10)
    assert calls_per_learner(lms) == {"a@example.org": 3, "b@example.org": 3}  # 2 + 1


@pytest.mark.gen_test
async def test_a_burst_beyond_the_window_is_never_throttled(harness, lms):
    # The LMS's throttle scaled down to seconds: 10 calls in any 2 s; the
    # pacer counts the same window, at the same limit. One learner a call, the
    # 30 orders all at once: three windows' worth of calls (unpaced, the same
    # burst is throttled: the test below).
    lms.throttle = (10, 2.0)
    service = await harness.start(lms={"max_calls_per_minute": 10, "batch_size": 1})
    service.lms.pacer = Pacer(10, window=2.0)
    codes = await asyncio.gather(*[harness.shopify(shopify_order(
        line_item(email=f"b{n}@example.org"))) for n in range(30)])
    assert {r.code for r in codes} == {200}
    await until(lambda: enrolled(harness, 30), timeout=30)
    assert len(lms.calls) == 30 and len(lms.learners()) == 30
    # the stand-in's own sliding window never refused a call
    assert lms.throttled == 0


@pytest.mark.gen_test
async def test_throttling_costs_no_attempt_and_fails_no_order(harness, lms, serve):
    lms.throttle = (10, 1.0)
    # unpaced, one learner a call, the orders all at once: a burst of 30 calls
    service = serve(lms={"max_calls_per_minute": 0, "batch_size": 1}, retry={"attempts": 1})
    await service.start()
    codes = await asyncio.gather(*[harness.shopify(shopify_order(
        line_item(email=f"t{n}@example.org"))) for n in range(30)])
    assert {r.code for r in codes} == {200}
    await until(lambda: enrolled(harness, 30), timeout=20)
    assert lms.throttled > 0  # the LMS did say 429
    assert {i["attempts"] for i in harness.items()} == {1}
    assert service.lines("item.throttled") and not service.lines("item.failed")


@pytest.mark.gen_test
async def test_sigterm_under_load_finishes_cleanly_and_the_next_start_resumes(
        harness, lms, serve):
    service = serve()
    await service.start()
    lms.throttle = (40, 1.0)  # LMS calls are in flight when SIGTERM arrives
    codes: list[int] = []
    acknowledged: list[int] = []
    orders = [shopify_order(line_item(email=f"s{n}@example.org")) for n in range(150)]
    queue = iter(orders)

    async def sender():
        for order in queue:
            code = await answer_code(harness, order)
            codes.append(code)
            if code == 200:
                acknowledged.append(order["id"])

    senders = asyncio.gather(*[sender() for _ in range(16)])
    await until(lambda: len(codes) >= 30, timeout=30)
    assert await service.stop(signal.SIGTERM) == 0
    await senders
    # every answer was either a 200 or a refused/closed connection: nothing half-done
    assert set(codes) <= {200, 599}
    assert service.lines("service.stopped")
    stored = {int(r[0]) for r in harness.db("SELECT external_id FROM orders")}
    assert set(acknowledged) <= stored

    await service.start()
    await until(lambda: enrolled(harness, len(stored)), timeout=30)
    per_learner = calls_per_learner(lms)
    assert len(per_learner) == len(stored)
    assert max(per_learner.values()) <= 2
