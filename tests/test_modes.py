"""Selling what the learner paid for: course modes through the enrollment
API, bundles, and buyers without an LMS account yet, against the stand-in
LMS speaking the platform's contract (accounts by email, the enrollment API,
allowances that turn into enrollments at activation, one throttle bucket)."""

from __future__ import annotations

import logging
import signal

import pytest

from edx_hooks import scheduler
from edx_hooks.lms import Pacer
from edx_hooks.store import utcnow

from .conftest import (
    COURSE,
    SHOPIFY_REFUND,
    line_item,
    shopify_order,
    shopify_refund,
    until,
)
from .standin_lms import Enrollment

DS = "course-v1:Demo+DS201+2026"
CATALOG = [{"sku": "PY-CERT", "courses": [COURSE], "mode": "verified"},
           {"sku": "BUNDLE", "courses": [COURSE, DS], "mode": "verified"},
           {"sku": "PY-AUDIT", "courses": [COURSE]}]
#: account checks every 0.3 s, a wait of a few seconds: time compressed
FAST = {"account_check_minutes": 0.005, "account_wait_days": 0.0001}


def states(harness) -> list[tuple[str, int, str]]:
    return [(i["course_id"], i["part"], i["state"]) for i in harness.items()]


def events(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"event={name} " in r.getMessage()]


@pytest.mark.gen_test
async def test_an_existing_learner_is_enrolled_in_the_mode_sold(harness, lms):
    lms.register("ada@example.org", active=True)
    await harness.start(products=CATALOG)
    order = shopify_order(line_item(sku="PY-CERT", email="ada@example.org"))
    assert (await harness.shopify(order)).code == 200
    await harness.quiet()
    assert states(harness) == [(COURSE, 0, "enrolled")]
    assert harness.items()[0]["mode"] == "verified"
    enrollment = lms.enrollment("ada@example.org", COURSE)
    assert (enrollment.mode, enrollment.is_active) == ("verified", True)
    [call] = lms.mode_calls
    assert call.form == {"user": "ada", "mode": "verified", "is_active": True,
                         "course_details": {"course_id": COURSE}, "force_enrollment": True}
    assert call.authorization.startswith("JWT ")
    assert lms.calls == [] and lms.account_lookups == ["ada@example.org"]


@pytest.mark.gen_test
async def test_default_mode_for_a_sku_outside_the_catalog_and_none_for_audit(harness, lms):
    lms.register("bo@example.org", active=True)
    await harness.start(products=CATALOG, lms={"default_mode": "verified"})
    await harness.shopify(shopify_order(line_item(sku=COURSE, email="bo@example.org")))
    await harness.quiet()
    assert lms.enrollment("bo@example.org", COURSE).mode == "verified"
    # a catalog entry without a mode takes the default too
    await harness.shopify(shopify_order(line_item(sku="PY-AUDIT", email="bo@example.org")))
    await harness.quiet()
    assert [i["mode"] for i in harness.items()] == ["verified", "verified"]


@pytest.mark.gen_test
async def test_a_learner_without_an_account_gets_the_mode_once_activated(harness, lms, caplog):
    caplog.set_level(logging.INFO, logger="edx_hooks")
    await harness.start(products=CATALOG, lms=FAST | {"account_wait_days": 1})
    order = shopify_order(line_item(sku="PY-CERT", email="newbie@example.org"))
    await harness.shopify(order)
    await until(lambda: harness.items()[0]["state"] == "awaiting-account")
    # bulk enrollment with auto_enroll left an allowance: the LMS enrolls at activation
    [bulk] = lms.calls
    assert (bulk.form["action"], bulk.form["auto_enroll"]) == ("enroll", "true")
    assert lms.allowances == {("newbie@example.org", COURSE): True}
    # logged once the state is written: the state can be read a moment before
    await until(lambda: events(caplog, "item.awaiting_account"))
    code, out, _ = await harness.cli("orders", "--state", "awaiting-account")
    assert code == 0 and str(order["id"]) in out
    await until(lambda: len(lms.account_lookups) >= 3)  # checks come and find no account
    assert harness.items()[0]["state"] == "awaiting-account" and lms.mode_calls == []

    lms.activate("newbie@example.org")  # default mode, from the allowance
    assert lms.enrollment("newbie@example.org", COURSE).mode == "audit"
    await until(lambda: harness.items()[0]["state"] == "enrolled")
    assert lms.enrollment("newbie@example.org", COURSE).mode == "verified"
    [mode_set] = await until(lambda: events(caplog, "item.mode_set"))
    assert "mode=verified" in mode_set and f"order={order['id']}" in mode_set
    await harness.quiet()
    assert len(lms.learners()) == 1 and len(lms.mode_calls) == 1


@pytest.mark.gen_test
async def test_the_mode_is_set_even_before_the_activation_enrolls(harness, lms):
    lms.register("early@example.org")  # registered, not yet active
    await harness.start(products=CATALOG, lms=FAST | {"account_wait_days": 1})
    await harness.shopify(shopify_order(line_item(sku="PY-CERT", email="early@example.org")))
    await until(lambda: harness.items()[0]["state"] == "awaiting-account")
    lms.accounts["early@example.org"].is_active = True  # active, no allowance turned yet
    await until(lambda: harness.items()[0]["state"] == "enrolled")
    assert lms.enrollment("early@example.org", COURSE).mode == "verified"


@pytest.mark.gen_test
async def test_past_the_wait_it_fails_and_retry_waits_again(harness, lms):
    await harness.start(products=CATALOG, lms=FAST)  # about 9 s of waiting
    await harness.shopify(shopify_order(line_item(sku="PY-CERT", email="late@example.org")))
    await until(lambda: harness.items()[0]["state"] == "failed", timeout=20)
    assert "no active LMS account for the learner within lms.account_wait_days" in \
        harness.items()[0]["reason"]
    lms.activate("late@example.org")
    code, out, _ = await harness.cli("retry", "--item", "1", "--wait", "20")
    assert code == 0 and "item 1 (shopify order" in out and "enrolled" in out
    assert lms.enrollment("late@example.org", COURSE).mode == "verified"
    assert len(lms.learners()) == 1  # the allowance was there: no second invitation email


@pytest.mark.gen_test
async def test_a_bundle_enrolls_each_course_and_a_refund_unenrolls_both(harness, lms):
    lms.register("pair@example.org", active=True)
    await harness.start(products=CATALOG, shopify={"unenroll_on_refund": True})
    line = line_item(sku="BUNDLE", email="pair@example.org")
    order = shopify_order(line)
    await harness.shopify(order)
    await harness.quiet()
    assert states(harness) == [(COURSE, 0, "enrolled"), (DS, 1, "enrolled")]
    assert {(c.form["course_details"]["course_id"], c.form["mode"]) for c in lms.mode_calls} \
        == {(COURSE, "verified"), (DS, "verified")}
    response = await harness.shopify(shopify_refund(order, line, refund_id=1),
                                     **SHOPIFY_REFUND)
    assert response.code == 200
    await harness.quiet()
    assert states(harness) == [(COURSE, 0, "unenrolled"), (DS, 1, "unenrolled")]
    for course in (COURSE, DS):  # deactivated, the mode kept by the LMS
        enrollment = lms.enrollment("pair@example.org", course)
        assert (enrollment.mode, enrollment.is_active) == ("verified", False)


@pytest.mark.gen_test
async def test_a_refund_while_awaiting_the_account_removes_the_allowance(harness, lms):
    await harness.start(products=CATALOG, shopify={"unenroll_on_refund": True},
                        lms=FAST | {"account_wait_days": 1})
    line = line_item(sku="PY-CERT", email="gone@example.org")
    order = shopify_order(line)
    await harness.shopify(order)
    await until(lambda: harness.items()[0]["state"] == "awaiting-account")
    await harness.shopify(shopify_refund(order, line, refund_id=2),
                                     **SHOPIFY_REFUND)
    await until(lambda: harness.items()[0]["state"] == "unenrolled")
    assert lms.allowances == {}
    lms.activate("gone@example.org")  # activation now enrolls no one
    assert lms.enrollment("gone@example.org", COURSE) is None
    await harness.quiet()
    assert lms.mode_calls == []


@pytest.mark.gen_test
@pytest.mark.parametrize("course_state, message", [
    ("no verified mode", "The [verified] course mode is expired or otherwise unavailable for "
                         f"course run [{COURSE}]."),
    ("full", f"Course {COURSE} is full"),
])
async def test_a_refusal_fails_the_item_with_the_lms_own_words(harness, lms, course_state,
                                                               message):
    lms.register("ada@example.org", active=True)
    if course_state == "full":
        lms.full.add(COURSE)
    else:
        lms.modes[COURSE] = ["audit", "honor"]
    await harness.start(products=CATALOG)
    await harness.shopify(shopify_order(line_item(sku="PY-CERT", email="ada@example.org")))
    await harness.quiet()
    [item] = harness.items()
    assert item["state"] == "failed" and item["attempts"] == 1
    assert item["reason"] == f"the enrollment API answered 400: {message}"
    assert len(lms.mode_calls) == 1  # at once: no retry


@pytest.mark.gen_test
async def test_a_closed_course_takes_a_paid_learner(harness, lms):
    lms.register("paid@example.org", active=True)
    lms.closed.add(COURSE)
    await harness.start(products=CATALOG)
    await harness.shopify(shopify_order(line_item(sku="PY-CERT", email="paid@example.org")))
    await harness.quiet()
    assert harness.items()[0]["state"] == "enrolled"  # force_enrollment: the shop is the gate


@pytest.mark.gen_test
@pytest.mark.parametrize("enrolled", [True, False], ids=["a change", "a new enrollment"])
@pytest.mark.parametrize("api_key", [None, "the-edx-api-key"])
async def test_past_the_upgrade_deadline_the_mode_needs_the_api_key(harness, lms, api_key,
                                                                    enrolled):
    lms.api_key = "the-edx-api-key"
    lms.register("audit@example.org", active=True)
    if enrolled:
        lms.enrollments[("audit", COURSE)] = Enrollment("audit")
    lms.past_upgrade_deadline.add(COURSE)
    await harness.start(products=CATALOG, lms={"api_key": api_key or ""})
    await harness.shopify(shopify_order(line_item(sku="PY-CERT", email="audit@example.org")))
    await harness.quiet()
    [item] = harness.items()
    if api_key:
        assert item["state"] == "enrolled"
        assert lms.enrollment("audit@example.org", COURSE).mode == "verified"
    else:
        assert item["state"] == "failed" and "course mode is expired" in item["reason"]


@pytest.mark.gen_test
async def test_selling_a_free_mode_never_downgrades_a_paid_one(harness, lms):
    lms.register("paid@example.org", active=True)
    lms.enrollments[("paid", COURSE)] = Enrollment("verified")
    lms.register("fresh@example.org", active=True)
    await harness.start(products=[{"sku": "FREE", "courses": [COURSE], "mode": "audit"}])
    await harness.shopify(shopify_order(line_item(sku="FREE", email="paid@example.org"),
                                        line_item(sku="FREE", email="fresh@example.org")))
    await harness.quiet()
    assert {i["state"] for i in harness.items()} == {"enrolled"}
    assert lms.enrollment("paid@example.org", COURSE).mode == "verified"  # kept
    assert lms.enrollment("fresh@example.org", COURSE).mode == "audit"


@pytest.mark.gen_test
async def test_a_refund_without_unenrolling_stops_the_wait_for_the_account(harness, lms):
    await harness.start(products=CATALOG, lms=FAST | {"account_wait_days": 1})
    line = line_item(sku="PY-CERT", email="quit@example.org")
    order = shopify_order(line)
    await harness.shopify(order)
    await until(lambda: harness.items()[0]["state"] == "awaiting-account")
    await harness.shopify(shopify_refund(order, line, refund_id=3),
                                     **SHOPIFY_REFUND)
    await until(lambda: harness.items()[0]["state"] == "not-enrolled")
    assert "the paid mode is not set" in harness.items()[0]["reason"]
    lms.activate("quit@example.org")
    await harness.quiet()
    assert lms.mode_calls == []  # the mode is never set for a refunded item


@pytest.mark.gen_test
async def test_a_refund_during_an_account_check_is_not_pushed_back(harness, lms):
    # the checks are ten minutes apart: a refund pushed back behind one would wait
    await harness.start(products=CATALOG, shopify={"unenroll_on_refund": True},
                        lms={"account_check_minutes": 10})
    line = line_item(sku="PY-CERT", email="race@example.org")
    order = shopify_order(line)
    await harness.shopify(order)
    await until(lambda: harness.items()[0]["state"] == "awaiting-account")
    # the job schedules its check once the state is written: after it, ours replaces it
    await until(lambda: harness.service.scheduler.get_job("account-1"))
    lms.account_latency = 1.0
    # its check comes now, and its lookup is slow
    scheduler.schedule_check(harness.service.scheduler, 1, utcnow())
    await until(lambda: len(lms.account_lookups) == 2)
    await harness.shopify(shopify_refund(order, line, refund_id=4),
                                     **SHOPIFY_REFUND)
    await until(lambda: harness.items()[0]["state"] == "unenrolled", timeout=10)
    assert lms.allowances == {}


@pytest.mark.gen_test(timeout=60)
async def test_both_apis_share_one_throttle_that_default_pacing_never_exceeds(harness, lms):
    # the LMS's bucket scaled down: 4 calls in 2 s is its 120 a minute; the
    # default pacing (100 a minute) scaled the same: 3 calls in 2 s. One
    # learner a call: 8 calls, which unpaced the bucket refuses in part.
    lms.throttle = (4, 2.0)
    for n in range(4):
        lms.register(f"v{n}@example.org", active=True)
    service = await harness.start(products=CATALOG, lms={"batch_size": 1})
    service.lms.pacer = Pacer(3, window=2.0)
    for n in range(4):
        await harness.shopify(shopify_order(line_item(email=f"a{n}@example.org"),
                                            line_item(sku="PY-CERT", email=f"v{n}@example.org")))
    await until(lambda: len(harness.items()) == 8
                and all(i["state"] == "enrolled" for i in harness.items()), timeout=30)
    # the stand-in's one bucket for both views refused nothing (how evenly
    # the calls arrive is loopback jitter on a loaded machine: not asserted)
    assert lms.throttled == 0
    assert len(lms.learners()) == 4 and len(lms.mode_calls) == 4


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("api_key", ["", "the-edx-api-key"])
async def test_unpaced_calls_meet_the_shared_bucket_unless_the_api_key_is_sent(harness, lms,
                                                                               api_key):
    lms.throttle = (3, 2.0)
    lms.api_key = "the-edx-api-key"
    for n in range(3):
        lms.register(f"k{n}@example.org", active=True)
    await harness.start(products=CATALOG, lms={"max_calls_per_minute": 0, "api_key": api_key})
    for n in range(3):
        await harness.shopify(shopify_order(line_item(email=f"p{n}@example.org"),
                                            line_item(sku="PY-CERT", email=f"k{n}@example.org")))
    await until(lambda: len(harness.items()) == 6
                and {i["state"] for i in harness.items()} == {"enrolled"}, timeout=30)
    if api_key:
        assert lms.throttled == 0  # six calls in a bucket of three: the key skips it
    else:  # both kinds of call count in the one bucket; throttling fails no item
        assert lms.throttled > 0 and {i["attempts"] for i in harness.items()} == {1}


@pytest.mark.gen_test(timeout=120)
async def test_a_restart_while_awaiting_the_account_loses_nothing(harness, lms, serve):
    service = serve(products=CATALOG, lms=FAST | {"account_wait_days": 1})
    await service.start()
    await harness.shopify(shopify_order(line_item(sku="BUNDLE", email="later@example.org")))
    await until(lambda: [i["state"] for i in harness.items()] == ["awaiting-account"] * 2)
    assert await service.stop(signal.SIGTERM) == 0
    # the account checks wait in the job store while the service is down
    assert sorted(harness.jobs()) == ["account-1", "account-2"]
    lms.activate("later@example.org")
    await service.start()
    await until(lambda: [i["state"] for i in harness.items()] == ["enrolled"] * 2)
    for course in (COURSE, DS):
        assert lms.enrollment("later@example.org", course).mode == "verified"
    assert await until(lambda: service.lines("item.mode_set"))


@pytest.mark.gen_test
@pytest.mark.parametrize("location, course", [
    ("https://apps.lms.example.org/learning/course/{c}/home", COURSE),
    ("/courses/Demo/PY101/2026/about", "Demo/PY101/2026"),
])
async def test_sku_redirects_to_the_learning_mfe_or_an_old_course_id(harness, lms, location,
                                                                      course):
    lms.redirects["sku/PY101"] = location.format(c=COURSE)
    await harness.start(lms={"learning_mfe_url": "https://apps.lms.example.org/learning/"})
    await harness.shopify(shopify_order(line_item(sku="PY101")))
    await harness.quiet()
    [item] = harness.items()
    assert (item["state"], item["course_id"]) == ("enrolled", course)
    assert lms.calls[0].form["courses"] == course


@pytest.mark.gen_test
async def test_check_config_online_checks_the_catalog(harness, lms):
    lms.modes[DS] = ["audit"]
    lms.courses = {COURSE, DS}
    await harness.start(products=CATALOG + [{"sku": "GONE", "courses": ["course-v1:X+Y+Z"]}])
    code, out, _ = await harness.cli("check-config", "--online")
    assert code == 1
    assert "ok   account lookup: answers for the client" in out
    assert f"ok   catalog PY-CERT: {COURSE} offers verified" in out
    assert f"FAIL catalog BUNDLE: {DS} does not offer the verified mode (it offers audit)" \
        in out
    assert "FAIL catalog GONE: course-v1:X+Y+Z is not a course of this LMS" in out
