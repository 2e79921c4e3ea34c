"""The operator's everyday questions (issue 23): retries that never put an
unsendable item in a call, merchandise that is not a course, and the CLI's
smaller traps."""

from __future__ import annotations

import datetime as dt

import pytest

from .conftest import line_item, shopify_order, until
from .standin_lms import Forced


def settled(harness) -> bool:
    items = harness.items()
    return bool(items) and all(i["state"] not in ("pending", "unenroll-pending")
                               for i in items)


@pytest.mark.gen_test
async def test_retry_all_failed_skips_an_item_without_email_and_enrolls_the_others(
        harness, lms):
    """After an LMS outage, `retry --all-failed` put a no-email item in one
    bulk call with a genuine one: a TypeError failed both."""
    await harness.start(retry={"attempts": 1})
    lms.fail_all = Forced(status=503)
    await harness.shopify(shopify_order(line_item(email=None)))
    await harness.shopify(shopify_order(line_item(email="genuine@example.org")))
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    no_email, genuine = harness.items()
    assert (no_email["state"], genuine["state"]) == ("failed", "failed")
    lms.fail_all = None

    code, out, err = await harness.cli("retry", "--all-failed", "--wait", "30")
    assert code == 0, out + err
    assert (f"item {no_email['id']} skipped: no valid learner email: not sent to the LMS; "
            f"its reason stays: {no_email['reason']}") in out
    assert f"1 line item(s) set pending again: {genuine['id']}" in out
    assert f"item {genuine['id']} (shopify order " in out and ": enrolled" in out
    after = {i["id"]: i for i in harness.items()}
    assert after[genuine["id"]]["state"] == "enrolled"
    assert (after[no_email["id"]]["state"], after[no_email["id"]]["reason"]) == (
        "failed", no_email["reason"])
    assert [x.email for x in lms.learners()][-1] == "genuine@example.org"

    code, _, err = await harness.cli("retry", "--item", str(no_email["id"]))
    assert code == 1 and "no failed line item can be sent to the LMS" in err


@pytest.mark.gen_test
async def test_an_item_without_email_set_pending_never_joins_a_call(harness, lms):
    """However it came to be pending again (an older version's retry, a hand
    edit), an item without a learner email fails on its own, with its reason,
    and the learner in its course is enrolled in the same round."""
    await harness.start(retry={"attempts": 1, "sweep_seconds": 0.3})
    lms.fail_all = Forced(status=503)
    await harness.shopify(shopify_order(line_item(email=None),
                                        line_item(email="genuine@example.org")))
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    lms.fail_all = None
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    harness.db("UPDATE items SET state = 'pending', attempts = 0, next_attempt_at = ?, "
               "pending_since = ?", now, now)
    await until(lambda: settled(harness), timeout=20)
    no_email, genuine = harness.items()
    assert genuine["state"] == "enrolled"
    assert (no_email["state"], no_email["reason"]) == (
        "failed", "no valid learner email: not sent to the LMS")
    assert [x.email for x in lms.learners()][-1] == "genuine@example.org"
    assert all(x.email != "None" for x in lms.learners())


@pytest.mark.gen_test
async def test_merchandise_is_not_a_course_and_leaves_the_order_enrolled(harness, lms):
    import json

    from .conftest import COURSE
    lms.redirects["sku/PY-101"] = f"/courses/{COURSE}/about"
    await harness.start()
    order = shopify_order(line_item(email="learner@example.org"),
                          line_item(sku="TSHIRT-M", email=None, title="T-shirt"),
                          line_item(sku=None, email=None, title="Sticker"))
    assert (await harness.shopify(order)).code == 200
    # setup errors stay failures: a course without its learner's email (a
    # course id, or a SKU the LMS redirects to a course), an email with a SKU
    # that names no course
    broken = shopify_order(line_item(email=None), line_item(sku="PY-101", email=None),
                           line_item(sku="NO-SUCH", email="lost@example.org"))
    assert (await harness.shopify(broken)).code == 200
    await until(lambda: len(harness.items()) == 6 and settled(harness), timeout=10)
    course, shirt, sticker, no_email, redirected, unknown = harness.items()
    assert course["state"] == "enrolled"
    assert (shirt["state"], shirt["reason"]) == (
        "not-a-course", "not a course (SKU 'TSHIRT-M' names none) and no learner email: "
                        "nothing to enroll")
    assert (sticker["state"], sticker["reason"]) == (
        "not-a-course", "not a course (no SKU) and no learner email: nothing to enroll")
    assert [no_email["state"], redirected["state"], unknown["state"]] == ["failed"] * 3
    assert redirected["reason"].startswith(f"no learner email for course {COURSE}")
    assert [x.email for x in lms.learners()] == ["learner@example.org"]

    code, out, _ = await harness.cli("orders", "--json")
    states = {o["external_id"]: o["state"] for o in json.loads(out)}
    assert states == {str(order["id"]): "enrolled", str(broken["id"]): "failed"}
    health = json.loads((await harness.request("/healthz", method="GET")).body)
    assert health["failed"] == 3  # the broken order's, none for the merchandise
    # and `retry --all-failed` leaves the merchandise alone
    code, out, _ = await harness.cli("retry", "--all-failed")
    assert str(shirt["id"]) not in out.split("set pending again:")[-1]
    assert {i["id"]: i["state"] for i in harness.items()}[shirt["id"]] == "not-a-course"
