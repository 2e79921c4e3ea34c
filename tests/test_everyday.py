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


def _run(*args: str, env: dict[str, str] | None = None):
    import os
    import subprocess
    import sys
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDX_HOOKS_")}
    return subprocess.run([sys.executable, "-m", "edx_hooks", *args], capture_output=True,
                          text=True, timeout=60, env={**clean, **(env or {})})


@pytest.mark.parametrize("command", ["orders", "serve", "check-config", "settings --json"])
def test_without_a_config_file_the_command_says_so(command):
    proc = _run(*command.split(), env={"EDX_HOOKS_LMS_BASE_URL": "http://x"}
                if command == "settings --json" else None)
    assert proc.returncode == 2
    if command == "settings --json":  # a variable given: the config in force, incomplete
        assert "lms.client_id is required" in proc.stderr
        return
    assert proc.stderr == ("edx-hooks: config: no config file given: pass --config "
                           "/etc/edx-hooks/edx-hooks.toml or set EDX_HOOKS_CONFIG (sudo drops "
                           "the environment: sudo edx-hooks ... --config PATH)\n")


def test_settings_without_any_config_lists_the_defaults_also_as_json():
    import json
    proc = _run("settings", "--json")
    assert proc.returncode == 0
    found = {s["setting"]: s for s in json.loads(proc.stdout)}
    assert found["lms.base_url"]["required"] is True
    assert found["server.port"]["default"] == 8090


@pytest.mark.gen_test
async def test_settings_shows_the_values_in_force_with_their_source(harness):
    import json
    await harness.start(retry={"attempts": 7})
    proc = _run("settings", "--config", str(harness.config_path),
                env={"EDX_HOOKS_LMS_TIMEOUT_SECONDS": "4"})
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert lines["retry.attempts"].split()[1:] == ["7", "file"]
    assert lines["lms.timeout_seconds"].split()[1:] == [
        "4.0", "environment", "(EDX_HOOKS_LMS_TIMEOUT_SECONDS)"]
    assert lines["server.client_timeout_seconds"].split()[1:] == ["10.0", "default"]
    assert lines["shopify.secret"].split()[1:] == ["<hidden>", "file"]
    from .conftest import SHOPIFY_SECRET, WOO_SECRET
    assert SHOPIFY_SECRET not in proc.stdout and WOO_SECRET not in proc.stdout
    proc = _run("settings", "--json", env={"EDX_HOOKS_CONFIG": str(harness.config_path)})
    as_json = {s["setting"]: s for s in json.loads(proc.stdout)}
    assert as_json["woocommerce.secret"]["value"] == "<hidden>"


@pytest.mark.gen_test
async def test_replay_refuses_when_the_secret_is_not_loaded(harness, lms):
    """The config keeps a placeholder and the service gets the secret from
    its environment; an operator's shell (or sudo) does not have it: replay
    would turn a genuine delivery into a new 403. It refuses, naming it."""
    from .conftest import base_sections, write_config
    await harness.start()
    assert (await harness.shopify(shopify_order(line_item()))).code == 200
    sections = base_sections(harness.tmp_path, lms.url)
    sections["shopify"]["secret"] = "set-me-in-EDX_HOOKS_SHOPIFY_SECRET"
    path = write_config(harness.tmp_path / "as-deployed.toml", sections)
    proc = _run("replay", "1", "--config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("edx-hooks: config: shopify.secret is a placeholder")
    assert "EDX_HOOKS_SHOPIFY_SECRET" in proc.stderr
    assert len(harness.deliveries()) == 1  # nothing recorded


@pytest.mark.gen_test
async def test_rejected_deliveries_are_listed_and_counted_by_the_health_check(harness):
    """A wrong secret: `orders` shows nothing and /healthz said ok; the
    delivery id replay needs was only in a log line."""
    import json
    await harness.start()
    assert (await harness.shopify(shopify_order(line_item()))).code == 200
    for _ in range(2):
        assert (await harness.shopify(shopify_order(line_item()),
                                      secret="the-secret-of-last-year")).code == 403
    health = json.loads((await harness.request("/healthz", method="GET")).body)
    assert (health["status"], health["rejected_last_hour"]) == ("ok", 2)

    code, out, _ = await harness.cli("deliveries", "--rejected")
    assert code == 0
    header, *rows = out.split("\n\n")[0].splitlines()
    assert header.split() == ["id", "received", "(UTC)", "provider", "shop", "endpoint",
                              "answer", "reason", "client"]
    assert [row.split()[0] for row in rows] == ["3", "2"]
    for row in rows:
        assert row.split()[3:10] == ["shopify", "school.myshopify.com", "POST",
                                     "/webhooks/shopify/order/create", "403", "bad-signature",
                                     "127.0.0.1"]
    assert "`edx-hooks replay ID`" in out
    code, out, _ = await harness.cli("deliveries", "--json", "--since", "2020-01-01")
    assert [(d["id"], d["status"], d["reason"]) for d in json.loads(out)] == [
        (3, 403, "bad-signature"), (2, 403, "bad-signature"), (1, 200, "accepted")]


@pytest.mark.gen_test
async def test_retry_resolves_the_sku_again_with_the_catalog_in_force(harness, lms):
    """Order 5004 failed with "SKU 'PY101' resolves to no course"; PY101 is
    added to [[products]] and the service restarted: retry enrolls it."""
    from .conftest import COURSE
    await harness.start()
    order = shopify_order(line_item(sku="PY101", email="late@example.org"))
    await harness.shopify(order)
    await until(lambda: settled(harness))
    [item] = harness.items()
    assert item["state"] == "failed"
    assert item["reason"].startswith("SKU 'PY101' resolves to no course: not in the catalog "
                                     "([[products]]), and HEAD ")
    await harness.stop()
    await harness.start(products=[{"sku": "PY101", "courses": [COURSE], "mode": "verified"}])
    lms.register("late@example.org", active=True)
    code, out, err = await harness.cli("retry", "shopify", str(order["id"]), "--wait", "30")
    assert code == 0, out + err
    assert f"item {item['id']}: SKU 'PY101' now sells {COURSE} in mode verified" in out
    [item] = harness.items()
    assert (item["state"], item["course_id"], item["mode"]) == ("enrolled", COURSE, "verified")
    assert lms.enrollment("late@example.org", COURSE).mode == "verified"


@pytest.mark.gen_test
async def test_the_learner_email_property_names_and_the_buyer_fallback(harness, lms):
    from .conftest import woo_line, woo_order
    await harness.start(shopify={"learner_email_properties": ["Learner email", "email"],
                                 "learner_email": "buyer"},
                        woocommerce={"learner_email_properties": ["Learner email"]})
    named = line_item(email=None)
    named["properties"].append({"name": "LEARNER EMAIL", "value": "named@example.org"})
    await harness.shopify(shopify_order(named, line_item(email=None)))  # the second: the buyer
    meta = [{"id": 1, "key": "Learner email", "value": "meta@example.org",
             "display_key": "Learner email", "display_value": "meta@example.org"}]
    await harness.woocommerce(woo_order(woo_line(email=None, meta=meta),
                                        woo_line(email=None, meta=[])))
    await until(lambda: len(harness.items()) == 4 and settled(harness))
    assert [(i["email"], i["state"]) for i in harness.items()] == [
        ("named@example.org", "enrolled"), ("buyer@example.org", "enrolled"),
        ("meta@example.org", "enrolled"),
        (None, "failed")]  # WooCommerce keeps "property": no fallback
    assert harness.items()[3]["reason"] == (
        "no learner email (a Product Input Fields field of type email, or a field or "
        "meta_data entry named 'learner email')")


@pytest.mark.gen_test
async def test_by_default_the_learner_email_is_the_property_named_email(harness, lms):
    await harness.start()
    named = line_item(email=None)
    named["properties"].append({"name": "Learner email", "value": "named@example.org"})
    await harness.shopify(shopify_order(named))
    await until(lambda: settled(harness))
    [item] = harness.items()
    assert (item["state"], item["reason"]) == ("failed",
                                               "no learner email (line item property 'email')")


@pytest.mark.gen_test
async def test_an_order_is_found_by_its_name_or_number_and_orders_by_learner(harness, lms):
    import json
    await harness.start()
    order = shopify_order(line_item(email="Ada@Example.org"), order_id=5_900_001_004)
    other = shopify_order(line_item(email="grace@example.org"))
    await harness.shopify(order)
    await harness.shopify(other)
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    assert order["name"] == "#1004"
    for wanted in ("#1004", "1004", str(order["id"])):
        code, out, err = await harness.cli("order", "shopify", wanted, "--json")
        assert code == 0, err
        assert [o["external_id"] for o in json.loads(out)] == [str(order["id"])], wanted
    code, _, err = await harness.cli("order", "shopify", "#1005")
    assert code == 1 and "no shopify order #1005" in err

    code, out, _ = await harness.cli("orders", "--email", "ada@example.org", "--json")
    assert [o["external_id"] for o in json.loads(out)] == [str(order["id"])]
    code, out, _ = await harness.cli("orders", "--email", "nobody@example.org")
    assert out == "no orders\n"


@pytest.mark.gen_test
async def test_prune_keeps_what_replay_needs(harness, lms):
    """`prune --older-than 0` removed the bodies of a failed order and of a
    rejected delivery; replay then said "its body is gone"."""
    await harness.start(retry={"attempts": 1})
    lms.fail_all = Forced(status=403, body='{"detail": "not staff"}')
    await harness.shopify(shopify_order(line_item(email="failed@example.org")))
    await until(lambda: settled(harness))
    lms.fail_all = None
    await harness.shopify(shopify_order(line_item(email="done@example.org")))
    await harness.shopify(shopify_order(line_item(email="late@example.org")),
                          secret="last-years-secret")  # rejected: 403
    await until(lambda: len(harness.items()) == 2 and settled(harness))
    old_rejected = await harness.shopify(shopify_order(line_item()), secret="forged-long-ago")
    assert old_rejected.code == 403
    harness.db("UPDATE deliveries SET received_at = datetime('now', '-31 days') WHERE id = 4")

    code, out, _ = await harness.cli("prune", "--older-than", "0")
    assert code == 0 and "removed body and headers of 2 finished deliveries" in out
    kept = {d["id"]: d["pruned_at"] is None and len(d["body"]) > 0
            for d in harness.deliveries()}
    assert kept == {1: True, 2: False, 3: True, 4: False}  # failed, enrolled, rejected, old
    code, out, err = await harness.cli("replay", "3")
    assert code == 1 and "403 bad-signature" in out  # read again: its body is there
    assert "body is gone" not in err
