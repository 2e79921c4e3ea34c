"""The operator's CLI against the database of a running service."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edx_hooks.cli import parser

from .conftest import SHOPIFY_SECRET, line_item, shopify_order, until
from .standin_lms import Forced


def settled(harness) -> bool:
    items = harness.items()
    return bool(items) and all(i["state"] != "pending" for i in items)


@pytest.mark.parametrize("command", ["serve", "orders", "order", "retry", "replay",
                                     "check-config", "prune", "settings", "demo",
                                     "deliveries"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args([command, "--help"])
    assert e.value.code == 0
    assert "usage: edx-hooks " + command in capsys.readouterr().out


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_reader_that_goes_away_gets_no_traceback(unbuffered):
    """`edx-hooks settings | head -1`: the pipe is closed before the output,
    which Python writes at once (PYTHONUNBUFFERED) or at the end."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from edx_hooks.cli import main; "
                             "sys.exit(main(['settings']))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # long before the child has imported what it needs and printed
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err == b""


@pytest.mark.gen_test
async def test_orders_lists_state_items_age_and_last_error(harness, lms):
    lms.forced.append(Forced(status=403, body='{"detail": "nope"}'))
    await harness.start()
    failed = shopify_order(line_item(email="a@example.org"))
    await harness.shopify(failed)
    await until(lambda: settled(harness))
    good = shopify_order(line_item(email="b@example.org"), line_item(email="c@example.org"))
    await harness.shopify(good)
    await until(lambda: len(harness.items()) == 3 and settled(harness))

    code, out, _ = await harness.cli("orders")
    assert code == 0
    header, newest, oldest = out.splitlines()
    assert header.split()[:7] == ["provider", "shop", "order", "name", "enrolled", "state", "age"]
    assert str(good["id"]) in newest and "2/2" in newest and " enrolled " in newest
    assert str(failed["id"]) in oldest and "0/1" in oldest and " failed " in oldest
    assert "answered 403" in oldest

    code, out, _ = await harness.cli("orders", "--state", "failed", "--json")
    assert code == 0
    [order] = json.loads(out)
    assert order["external_id"] == str(failed["id"]) and order["state"] == "failed"
    assert "403" in order["last_error"]

    code, out, _ = await harness.cli("orders", "--since", "2999-01-01")
    assert (code, out.strip()) == (0, "no orders")


@pytest.mark.gen_test
async def test_order_tells_the_whole_story(harness, lms):
    await harness.start()
    order = shopify_order(line_item(email="ada@example.org"), line_item(email=None))
    await harness.shopify(order)
    await harness.shopify(order)  # a repeat
    await until(lambda: settled(harness))

    code, out, _ = await harness.cli("order", "shopify", str(order["id"]))
    assert code == 0
    assert f"shopify order {order['id']} {order['name']}" in out
    deliveries = out.split("deliveries:")[1].split("line items:")[0]
    assert deliveries.count("accepted") == 2 and "127.0.0.1" in deliveries
    items = out.split("line items:")[1]
    assert "ada@example.org" in items and "enrolled" in items
    assert "no learner email" in items

    code, out, _ = await harness.cli("order", "shopify", str(order["id"]), "--json")
    [story] = json.loads(out)
    assert [d["status"] for d in story["deliveries"]] == [200, 200]
    assert [i["state"] for i in story["items"]] == ["enrolled", "failed"]

    code, _, err = await harness.cli("order", "shopify", "123")
    assert code == 1 and "no shopify order 123" in err


@pytest.mark.gen_test
async def test_retry_an_order_while_the_service_runs(harness, lms):
    lms.fail_all = Forced(status=403)  # not staff, until the LMS is fixed
    await harness.start(retry={"sweep_seconds": 0.3})
    order = shopify_order(line_item(email="a@example.org"), line_item(email="b@example.org"))
    await harness.shopify(order)
    await until(lambda: settled(harness))
    assert {i["state"] for i in harness.items()} == {"failed"}

    lms.fail_all = None
    code, out, _ = await harness.cli("retry", "shopify", str(order["id"]))
    assert code == 0 and "2 line item(s) set pending again" in out
    await until(lambda: settled(harness) and all(i["state"] == "enrolled"
                                                 for i in harness.items()))
    assert [i["attempts"] for i in harness.items()] == [1, 1]  # a fresh budget

    code, _, err = await harness.cli("retry", "--all-failed")
    assert code == 1 and "nothing to retry" in err
    code, _, err = await harness.cli("retry")
    assert code == 1 and "PROVIDER ORDER_ID" in err


@pytest.mark.gen_test
async def test_replay_a_delivery_rejected_while_the_secret_was_wrong(harness, lms):
    await harness.start(shopify={"secret": "the-old-wrong-secret"}, retry={"sweep_seconds": 0.3})
    order = shopify_order(line_item(email="late@example.org"))
    response = await harness.shopify(order)  # signed with the shop's real secret
    assert response.code == 403
    [rejected] = harness.deliveries()

    await harness.stop()  # the operator fixes the secret and restarts
    await harness.start(retry={"sweep_seconds": 0.3})
    code, out, _ = await harness.cli("replay", str(rejected["id"]))
    assert code == 0, out
    assert f"delivery {rejected['id']} replayed as delivery 2: 200 accepted" in out
    await until(lambda: settled(harness))
    assert harness.items()[0]["state"] == "enrolled"
    assert [x.email for x in lms.learners()] == ["late@example.org"]
    assert harness.deliveries()[1]["endpoint"].startswith("REPLAY POST")

    # replaying a forgery is refused again, and says so
    await harness.shopify(shopify_order(line_item()), secret="forged")
    code, out, _ = await harness.cli("replay", "3")
    assert code == 1 and "403 bad-signature" in out
    assert SHOPIFY_SECRET not in out


@pytest.mark.gen_test
async def test_replay_never_guesses_the_endpoint(harness, lms):
    await harness.start(shopify={"secret": "the-old-wrong-secret"})
    assert (await harness.shopify(shopify_order(line_item()))).code == 403
    # a delivery to an endpoint this version no longer has (as a later one might)
    harness.db("UPDATE deliveries SET endpoint = 'POST /webhooks/shopify/order/gone'")
    code, _, err = await harness.cli("replay", "1")
    assert code == 1 and "which is no endpoint of shopify: nothing to replay" in err


@pytest.mark.gen_test
async def test_replay_of_a_truncated_body_is_refused(harness):
    await harness.start(server={"max_body_size": 200 * 1024})
    big = shopify_order(line_item(title="x" * 100_000))
    response = await harness.shopify(big, secret="wrong")
    assert response.code == 403
    code, _, err = await harness.cli("replay", "1")
    assert code == 1 and "cannot be verified" in err


@pytest.mark.gen_test
async def test_prune_keeps_orders_and_unfinished_deliveries(harness, lms):
    # the held call outlasts what follows, CLI start included, by a wide margin
    await harness.start(lms={"timeout_seconds": 15})
    lms.forced.append(Forced(status=200, hang=8, body="{}"))  # this one stays pending
    await harness.shopify(shopify_order(line_item(email="slow@example.org")))
    await until(lambda: lms.calls)
    await harness.shopify(shopify_order(line_item(email="done@example.org")))
    await harness.shopify(b"[]")  # rejected
    await until(lambda: harness.items()[1]["state"] == "enrolled")

    code, out, _ = await harness.cli("prune", "--older-than", "0")
    assert code == 0 and "1 finished deliveries" in out
    rows = harness.db("SELECT length(body), headers, body_size, pruned_at IS NOT NULL, status "
                      "FROM deliveries ORDER BY id")
    assert rows[0][0] > 0 and rows[0][3] == 0          # its order is still pending
    assert rows[1][:2] == (0, "{}") and rows[1][3] == 1
    # rejected, and younger than retention.rejected_days: kept for replay
    assert rows[2][0] > 0 and rows[2][3] == 0 and rows[2][4] == 400
    assert harness.db("SELECT count(*) FROM orders") == [(2,)]


@pytest.mark.gen_test(timeout=120)
async def test_prune_commits_in_small_transactions_beside_the_service(harness, lms):
    """A prune of a long history never holds the write lock for long: it
    commits batch after batch, and the service's deliveries go in between."""
    import asyncio
    import datetime as dt
    import sqlite3

    import sqlalchemy as sa

    from edx_hooks.store import Store, utcnow
    from edx_hooks.store.database import CLEANUP_BATCH

    await harness.start()
    assert (await harness.shopify(shopify_order(line_item()))).code == 200
    assert (await harness.shopify(b"[]")).code == 400
    await until(lambda: settled(harness))
    copies = CLEANUP_BATCH + 50
    with sqlite3.connect(harness.db_path) as conn:  # a year of history: each delivery, again
        conn.execute(
            "INSERT INTO deliveries (provider, endpoint, received_at, client_ip, headers, body, "
            "body_size, status, reason, shop, order_id) "
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "SELECT provider, endpoint, datetime('now', '-400 days'), client_ip, headers, body, "
            "body_size, status, reason, shop, order_id FROM deliveries, n", (copies,))
    old = 2 * copies

    store = Store(f"sqlite+aiosqlite:///{harness.db_path}")  # as `edx-hooks prune` opens it
    await store.start(create=False)
    commits = []
    sa.event.listen(store.writer.engine, "commit", lambda conn: commits.append(1))
    try:
        pruning = asyncio.ensure_future(store.prune(utcnow() - dt.timedelta(days=1)))
        await until(lambda: commits, timeout=20)
        response = await harness.shopify(shopify_order(line_item(email="ada@example.org")))
        assert response.code == 200
        assert await pruning == old
    finally:
        await store.close()
    assert len(commits) == -(-old // CLEANUP_BATCH) == 3
    assert harness.db("SELECT count(*) FROM deliveries WHERE pruned_at IS NOT NULL "
                      "AND body = x'' AND headers = '{}'") == [(old,)]
    assert harness.db("SELECT count(*) FROM deliveries WHERE pruned_at IS NULL") == [(3,)]
    await until(lambda: settled(harness) and len(harness.items()) == 2)


@pytest.mark.gen_test
async def test_check_config_offline_and_online(harness, lms):
    await harness.start()
    code, out, _ = await harness.cli("check-config")
    assert code == 0 and out.startswith("config OK") and "storefronts: shopify, woocommerce" in out
    # the webhooks to subscribe, from the storefronts' declarations
    assert f"  {lms.url}/webhooks/shopify/refund/create  [refunds/create]: never enrolls" in out
    assert f"  {lms.url}/webhooks/woocommerce/order/update  [order.created, order.updated" \
        in out

    code, out, _ = await harness.cli("check-config", "--online")
    assert code == 0, out
    assert "ok   token" in out and "on (401 without a token)" in out
    assert "may enroll learners" in out

    lms.client_secret = "rotated"
    code, out, _ = await harness.cli("check-config", "--online")
    assert code == 1 and "FAIL token" in out and "lms.client_secret" in out


@pytest.mark.gen_test
async def test_check_config_lists_the_webhooks_at_the_public_url(harness, lms):
    """Where edx-hooks calls the LMS by an inside name (Tutor: http://lms:8000),
    the URLs to give the shop are the public ones."""
    await harness.start(server={"public_url": "https://lms.example.org/"})
    code, out, _ = await harness.cli("check-config")
    assert code == 0
    assert "  https://lms.example.org/webhooks/shopify/order/create  [orders/create" in out
    assert lms.url not in out.split("storefronts:")[1]


@pytest.mark.gen_test
async def test_check_config_online_says_when_the_view_is_off(harness, lms):
    lms.forced.append(Forced(status=404))  # the unauthenticated probe
    await harness.start()
    code, out, _ = await harness.cli("check-config", "--online")
    assert code == 1
    assert "ENABLE_BULK_ENROLLMENT_VIEW" in out


@pytest.mark.gen_test
async def test_check_config_online_says_when_the_user_is_not_staff(harness, lms):
    lms.forced.extend([Forced(status=401), Forced(status=403)])
    await harness.start()
    code, out, _ = await harness.cli("check-config", "--online")
    assert code == 1 and "not global staff" in out
