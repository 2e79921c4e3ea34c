"""The enrollment job against the stand-in LMS: what to enroll, retries,
permanent failures, the token, and idempotence."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import COURSE, line_item, shopify_order, until
from .standin_lms import Forced


def states(harness) -> list[str]:
    return [i["state"] for i in harness.items()]


def settled(harness) -> bool:
    items = harness.items()
    return bool(items) and all(i["state"] != "pending" for i in items)


@pytest.mark.gen_test
async def test_sku_resolved_through_the_lms_redirect(harness, lms):
    lms.redirects["sku/PY-101"] = "/courses/course-v1:Demo+PY101+2026/about"
    lms.redirects["sku/DATA 2"] = "https://ignored.example/courses/course-v1:X+Y+Z/"
    lms.redirects["sku/ABS"] = lms.url + "/courses/course-v1%3AAbs+C+R/course/"
    await harness.start()
    await harness.shopify(shopify_order(line_item(sku="PY-101", email="a@example.org"),
                                        line_item(sku="DATA 2", email="b@example.org"),
                                        line_item(sku="ABS", email="c@example.org")))
    await until(lambda: settled(harness))
    items = harness.items()
    assert [i["course_id"] for i in items] == ["course-v1:Demo+PY101+2026", None,
                                               "course-v1:Abs+C+R"]
    assert [i["state"] for i in items] == ["enrolled", "failed", "enrolled"]
    # a redirect to another host yields no course id
    assert "names no course" in items[1]["reason"]
    assert sorted(c.form["courses"] for c in lms.calls) == ["course-v1:Abs+C+R",
                                                            "course-v1:Demo+PY101+2026"]
    assert "sku/DATA 2" in lms.head_requests


@pytest.mark.gen_test
async def test_sku_without_redirect_fails_without_enroll_call(harness, lms):
    await harness.start()
    await harness.shopify(shopify_order(line_item(sku="NO-SUCH-SKU")))
    await until(lambda: settled(harness))
    [item] = harness.items()
    assert item["state"] == "failed"
    assert "resolves to no course" in item["reason"] and "404" in item["reason"]
    assert lms.calls == []


@pytest.mark.gen_test
async def test_bad_line_item_fails_while_its_sibling_enrolls(harness, lms):
    await harness.start()
    response = await harness.shopify(shopify_order(
        line_item(email=None),                      # no learner
        line_item(sku=None, email="b@example.org"),  # no SKU
        line_item(email="not an email"),
        line_item(email="a@x.org,b@y.org"),         # would be two enrollments
        line_item(sku="course-v1:a+b+c,course-v1:d+e+f"),
        line_item(email="good@example.org"),
        "not an object"))
    assert response.code == 200
    await until(lambda: settled(harness))
    items = harness.items()
    assert [i["state"] for i in items] == ["failed"] * 5 + ["enrolled", "failed"]
    reasons = [i["reason"] for i in items]
    assert reasons[0] == "no learner email (line item property 'email')"
    assert reasons[1].startswith("no SKU")
    assert reasons[2] == reasons[3] == "learner email is not one valid address"
    assert "not a valid course id" in reasons[4]
    assert reasons[6] == "line item is not a JSON object"
    assert [x.email for x in lms.learners()] == ["good@example.org"]


@pytest.mark.gen_test
async def test_duplicate_delivery_causes_one_lms_call(harness, lms):
    await harness.start()
    order = shopify_order(line_item(email="a@example.org"), line_item(email="b@example.org"))
    # twice at once, while nothing is enrolled yet, then again once enrolled
    first, second = await asyncio.gather(harness.shopify(order), harness.shopify(order))
    assert first.code == second.code == 200
    await until(lambda: settled(harness))
    third = await harness.shopify(order)
    assert third.code == 200
    await harness.quiet()
    assert states(harness) == ["enrolled", "enrolled"]
    assert sorted(x.email for x in lms.learners()) == ["a@example.org", "b@example.org"]
    assert harness.db("SELECT count(*) FROM orders") == [(1,)]
    assert harness.db("SELECT count(*), sum(status = 200) FROM deliveries") == [(3, 3)]


@pytest.mark.gen_test
async def test_new_line_item_on_a_repeat_delivery_is_enrolled_alone(harness, lms):
    await harness.start()
    first = line_item(email="a@example.org")
    order = shopify_order(first)
    await harness.shopify(order)
    await until(lambda: settled(harness))
    order["line_items"].append(line_item(email="b@example.org"))
    await harness.shopify(order)
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    assert [x.email for x in lms.learners()] == ["a@example.org", "b@example.org"]


@pytest.mark.gen_test
async def test_same_learner_and_course_in_two_orders_are_two_purchases(harness, lms):
    await harness.start()
    await harness.shopify(shopify_order(line_item()))
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    assert len(lms.learners()) == 2


@pytest.mark.gen_test
@pytest.mark.parametrize("failure", [
    Forced(status=503), Forced(status=502), Forced(status=500, body="<html>oops</html>"),
    # past the call's deadline: 1 s to connect, 2 s to answer, 1 s for its learner
    Forced(status=200, hang=5.0),
])
async def test_transient_failure_is_retried_then_enrolls(harness, lms, failure):
    await harness.start()
    lms.forced.append(failure)
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness), timeout=15)
    [item] = harness.items()
    assert item["state"] == "enrolled"
    assert item["attempts"] == 2
    assert len(lms.learners()) == 2


@pytest.mark.gen_test
async def test_connection_refused_is_transient(harness, lms):
    await harness.start()
    await lms.stop()  # the LMS is down
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: harness.items()[0]["attempts"] >= 1)
    assert harness.items()[0]["state"] == "pending"
    assert "unreachable" in harness.items()[0]["reason"]
    await lms.start()  # back, on a new port: point the service at it
    harness.service.lms.base_url = lms.url
    await until(lambda: settled(harness))
    assert harness.items()[0]["state"] == "enrolled"


@pytest.mark.gen_test
async def test_transient_failures_exhaust_the_attempts(harness, lms):
    await harness.start()
    lms.forced += [Forced(status=503)] * 5
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness))
    [item] = harness.items()
    assert item["state"] == "failed"
    assert item["attempts"] == 3
    assert item["reason"] == "bulk_enroll answered 503 (after 3 attempts)"
    await harness.quiet()  # and nothing more is tried
    assert len(lms.learners()) == 3


@pytest.mark.gen_test
async def test_retry_delay_is_respected(harness, lms):
    await harness.start(retry={"delay_seconds": 1.0})
    lms.forced.append(Forced(status=503))
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness))
    first, second = lms.calls
    assert second.at - first.at >= 0.95


@pytest.mark.gen_test
@pytest.mark.parametrize("failure, reason", [
    (Forced(status=403, body='{"detail": "not staff"}'), "not global staff"),
    (Forced(status=404), "ENABLE_BULK_ENROLLMENT_VIEW"),
    (Forced(status=400, body='{"courses": ["bad"]}'), "rejected the request"),
    (Forced(status=301, headers={"Location": "https://lms.example/login"}), "redirected"),
])
async def test_permanent_failure_fails_at_once(harness, lms, failure, reason):
    await harness.start()
    lms.forced.append(failure)
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness))
    [item] = harness.items()
    assert item["state"] == "failed" and item["attempts"] == 1
    assert reason in item["reason"]
    await harness.quiet()
    assert len(lms.learners()) == 1


@pytest.mark.gen_test
async def test_unknown_course_fails(harness, lms):
    lms.courses = {"course-v1:Other+C+R"}
    await harness.start()
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness))
    assert "404" in harness.items()[0]["reason"]


@pytest.mark.gen_test
async def test_error_inside_a_200_fails_the_item(harness, lms):
    lms.erroring.add("broken@example.org")
    await harness.start()
    await harness.shopify(shopify_order(line_item(email="broken@example.org"),
                                        line_item(email="fine@example.org")))
    await until(lambda: settled(harness))
    broken, fine = harness.items()
    assert broken["state"] == "failed" and "reported an error" in broken["reason"]
    assert fine["state"] == "enrolled"
    assert len(lms.learners()) == 2


@pytest.mark.gen_test
async def test_registered_and_unregistered_learners_both_count_as_enrolled(harness, lms):
    lms.registered.add("member@example.org")
    await harness.start()
    await harness.shopify(shopify_order(line_item(email="member@example.org"),
                                        line_item(email="newcomer@example.org")))
    await until(lambda: settled(harness))
    assert states(harness) == ["enrolled", "enrolled"]


@pytest.mark.gen_test
async def test_token_is_reused_across_calls(harness, lms):
    await harness.start()
    for _ in range(3):
        await harness.shopify(shopify_order(line_item()))
    await until(lambda: len(harness.items()) == 3 and settled(harness))
    assert states(harness) == ["enrolled"] * 3
    assert lms.token_requests == 1
    assert len({c.authorization for c in lms.calls}) == 1


@pytest.mark.gen_test
async def test_401_fetches_one_fresh_token_and_repeats_the_call(harness, lms):
    await harness.start()
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness))
    lms.revoke_tokens()  # e.g. the LMS's signing key rotated
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    assert states(harness) == ["enrolled", "enrolled"]
    assert lms.token_requests == 2
    assert len(lms.learners()) == 3  # first order, refused call, repeated call
    assert lms.calls[1].authorization != lms.calls[2].authorization
    assert harness.items()[1]["attempts"] == 1  # the refresh is not another attempt


@pytest.mark.gen_test
async def test_wrong_client_secret_fails_with_a_clear_reason(harness, lms):
    lms.client_secret = "rotated"
    await harness.start()
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness))
    assert "check lms.client_id and lms.client_secret" in harness.items()[0]["reason"]
    assert lms.calls == []


@pytest.mark.gen_test
async def test_429_honours_retry_after_without_using_an_attempt(harness, lms):
    await harness.start(retry={"attempts": 1})
    lms.forced.append(Forced(status=429, headers={"Retry-After": "1"}))
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness))
    [item] = harness.items()
    assert item["state"] == "enrolled" and item["attempts"] == 1
    first, second = lms.calls
    assert second.at - first.at >= 0.95


@pytest.mark.gen_test
async def test_email_students_and_auto_enroll_come_from_config(harness, lms):
    await harness.start(lms={"email_students": False, "auto_enroll": False})
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: settled(harness))
    [call] = lms.calls
    assert call.form["email_students"] == "false" and call.form["auto_enroll"] == "false"
    assert call.form["courses"] == COURSE
