"""The web console over HTTP (issue 22): the real service on a real socket,
signing in at the stand-in LMS with the authorization-code flow, then the
pages and actions a staff member uses. The browser tests
(test_console_browser.py) run the same flows in Chromium."""

from __future__ import annotations

import json
import re
import time
import urllib.parse

import pytest
from tornado import web

from edx_hooks.console import signin

from .conftest import SHOPIFY_SECRET, line_item, shopify_order
from .console_client import CONSOLE, Browser
from .standin_lms import Forced

PAGE = "/webhooks/console/"


@pytest.fixture
def browser(io_loop):
    b = Browser()
    yield b
    b.close()


async def signed_in(harness, browser, username="support", staff=True, **console):
    harness.lms.sign_in(username, staff=staff)
    await harness.start(console={**CONSOLE, **console}, retry={"sweep_seconds": 0.3})
    response = await browser.fetch(harness.url + PAGE)
    return response


@pytest.mark.gen_test
async def test_console_is_off_without_its_section(harness, browser):
    await harness.start()
    for path in (PAGE, "/webhooks/console", "/webhooks/console/orders/1"):
        response = await browser.fetch(harness.url + path)
        assert response.code == 404 and "console is off" in browser.text()
    assert harness.deliveries() == []  # not stored as rejected deliveries


@pytest.mark.gen_test
async def test_a_signed_out_visitor_is_sent_to_sign_in_with_state_and_pkce(harness, browser):
    harness.lms.sign_in("support", staff=True)
    await harness.start(console=CONSOLE)
    first = await browser.fetch(harness.url + "/webhooks/console/orders?state=failed",
                                follow=False)
    assert first.code == 302
    assert first.headers["Location"].startswith("/webhooks/console/sign-in?next=")
    response = await browser.fetch(harness.url + "/webhooks/console/orders?state=failed")
    assert response.code == 200 and "<h1>Orders</h1>" in browser.text()
    assert response.effective_url.endswith("/webhooks/console/orders?state=failed")
    [asked] = harness.lms.authorize_requests
    assert asked["response_type"] == "code" and asked["scope"] == "profile email"
    assert asked["code_challenge_method"] == "S256" and len(asked["state"]) >= 20
    assert asked["redirect_uri"] == f"{harness.url}/webhooks/console/signed-in"
    jar = browser.cookies(harness.url)
    assert set(jar) >= {"edx_hooks_console"}
    assert "edx_hooks_console_signin" not in jar  # used once


@pytest.mark.gen_test
async def test_session_cookie_flags(harness, browser):
    harness.lms.sign_in("support", staff=True)
    await harness.start(console=CONSOLE)
    start = await browser.fetch(harness.url + "/webhooks/console/sign-in", follow=False)
    back = await browser.fetch(start.headers["Location"], follow=False)
    done = await browser.fetch(back.headers["Location"], follow=False)
    assert done.code == 302 and done.headers["Location"] == PAGE
    [session] = [c for c in done.headers.get_list("Set-Cookie")
                 if c.startswith("edx_hooks_console=")]
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Secure" not in session
    assert "Path=/webhooks/console/" in session and "expires=" in session.lower()


@pytest.mark.gen_test
async def test_a_non_staff_user_is_refused_by_name(harness, browser):
    response = await signed_in(harness, browser, username="learner7", staff=False)
    assert response.code == 403
    text = browser.text()
    assert "learner7" in text and "console.staff_usernames" in text
    assert (await browser.fetch(harness.url + "/webhooks/console/orders")).code == 403
    assert (await browser.fetch(harness.url + "/webhooks/console/rejected")).code == 403


@pytest.mark.gen_test
async def test_a_listed_username_gets_in_without_being_global_staff(harness, browser):
    response = await signed_in(harness, browser, username="helpdesk", staff=False,
                               staff_usernames=["helpdesk"])
    assert response.code == 200 and "Needs a human now" in browser.text()


@pytest.mark.gen_test
async def test_a_forged_or_replayed_sign_in_answer_is_refused(harness, browser):
    harness.lms.sign_in("support", staff=True)
    await harness.start(console=CONSOLE)
    start = await browser.fetch(harness.url + "/webhooks/console/sign-in", follow=False)
    back = await browser.fetch(start.headers["Location"], follow=False)
    location = back.headers["Location"]
    forged = re.sub(r"state=[^&]+", "state=forged", location)
    response = await browser.fetch(forged)
    assert response.code == 400 and "does not match" in browser.text()
    # another browser, which never started this sign-in
    other = Browser()
    try:
        response = await other.fetch(location)
        assert response.code == 400 and "not started from this browser" in other.text()
    finally:
        other.close()
    assert "edx_hooks_console" not in browser.cookies(harness.url)


@pytest.mark.gen_test
async def test_the_lms_refusing_the_code_is_a_clear_page(harness, browser):
    harness.lms.sign_in("support", staff=True)
    await harness.start(console={**CONSOLE, "client_secret": "a-wrong-secret"})
    response = await browser.fetch(harness.url + PAGE)
    assert response.code == 502
    assert "console.client_secret" in browser.text() and "a-wrong-secret" not in browser.text()


@pytest.mark.gen_test
async def test_staff_finds_a_failed_order_by_email_retries_it_and_sees_it_enrolled(
        harness, browser):
    assert (await signed_in(harness, browser)).code == 200
    harness.lms.fail_all = Forced(status=403)
    order = shopify_order(line_item(email="ada@example.org"), line_item(email="bob@example.org"))
    await harness.shopify(order)
    await harness.shopify(shopify_order(line_item(email="other@example.org")))
    await harness.quiet()
    harness.lms.fail_all = None

    overview = await browser.fetch(harness.url + PAGE)
    assert "3 failed line item(s)" in browser.text(overview)
    found = await browser.fetch(harness.url + "/webhooks/console/orders?q=ADA@example")
    rows = re.findall(r'href="/webhooks/console/orders/(\d+)"', browser.text(found))
    assert len(rows) == 1 and "failed" in browser.text(found)
    by_state = browser.text(await browser.fetch(
        harness.url + "/webhooks/console/orders?state=failed"))
    assert len(re.findall(r'href="/webhooks/console/orders/\d+"', by_state)) == 2
    page = browser.text(await browser.fetch(harness.url + f"/webhooks/console/orders/{rows[0]}"))
    assert "ada@example.org" in page and "bob@example.org" in page
    assert SHOPIFY_SECRET not in page and "•••• (hidden)" in page  # the HMAC header
    assert re.search(r"X-Shopify-Hmac-Sha256</th><td>•••• \(hidden\)", page)

    done = await browser.submit(harness.url + f"/webhooks/console/orders/{rows[0]}/retry")
    assert done.code == 200 and "Retry requested" in browser.text(done)
    await harness.quiet()
    assert [i["state"] for i in harness.items()][:2] == ["enrolled", "enrolled"]
    page = browser.text(await browser.fetch(harness.url + f"/webhooks/console/orders/{rows[0]}"))
    assert "console.retry by support" in page and "Retry…" not in page


@pytest.mark.gen_test
async def test_retry_one_item_and_a_retry_with_nothing_left(harness, browser):
    await signed_in(harness, browser)
    harness.lms.fail_all = Forced(status=403)
    await harness.shopify(shopify_order(line_item(email="a@example.org"),
                                        line_item(email="b@example.org")))
    await harness.quiet()
    harness.lms.fail_all = None
    first, second = harness.items()
    oid = first["order_id"]
    await browser.submit(harness.url + f"/webhooks/console/orders/{oid}/retry?item={first['id']}")
    await harness.quiet()
    assert [i["state"] for i in harness.items()] == ["enrolled", "failed"]
    again = await browser.fetch(harness.url + f"/webhooks/console/orders/{oid}/retry"
                                f"?item={first['id']}")
    assert again.code == 409 and "no failed line item" in browser.text()


@pytest.mark.gen_test
async def test_a_post_without_xsrf_is_refused_and_does_nothing(harness, browser):
    await signed_in(harness, browser)
    harness.lms.fail_all = Forced(status=403)
    await harness.shopify(shopify_order(line_item(email="a@example.org")))
    await harness.quiet()
    [item] = harness.items()
    response = await browser.submit(
        harness.url + f"/webhooks/console/orders/{item['order_id']}/retry", xsrf=False)
    assert response.code == 403 and "This form has expired" in browser.text()
    stale = await browser.submit(
        harness.url + f"/webhooks/console/orders/{item['order_id']}/retry",
        extra={"_xsrf": "2|deadbeef|00|1"})
    assert stale.code == 403
    assert [i["state"] for i in harness.items()] == ["failed"]
    assert "Traceback" not in browser.text()


@pytest.mark.gen_test
async def test_an_expired_session_gets_a_sign_in_page(harness, browser):
    secret = "console-cookie-secret-for-tests"
    await signed_in(harness, browser, cookie_secret=secret, session_hours=1)
    jar = browser.cookies(harness.url)
    old = web.create_signed_value(secret, "edx_hooks_console",
                                  json.dumps({"u": "support", "a": True}),
                                  clock=lambda: time.time() - 2 * 3600).decode()
    jar["edx_hooks_console"] = old
    response = await browser.fetch(harness.url + "/webhooks/console/orders")
    assert response.code == 401 and "Please sign in again" in browser.text()
    assert "1 hours" in browser.text()
    # and a POST with it does nothing
    jar["edx_hooks_console"] = old
    response = await browser.fetch(harness.url + "/webhooks/console/sign-out", "POST", {})
    assert response.code == 200  # signing out needs no session


@pytest.mark.gen_test
async def test_sessions_end_at_restart_without_a_cookie_secret(harness, browser):
    await signed_in(harness, browser)
    before = harness.url
    await harness.stop()
    await harness.start(console=CONSOLE)
    browser.moved(before, harness.url)
    response = await browser.fetch(harness.url + "/webhooks/console/orders", follow=False)
    assert response.code == 401 and "restarts without console.cookie_secret" in browser.text()


@pytest.mark.gen_test
async def test_sessions_outlive_a_restart_with_a_cookie_secret(harness, browser):
    await signed_in(harness, browser, cookie_secret="kept-between-starts")
    before = harness.url
    await harness.stop()
    await harness.start(console={**CONSOLE, "cookie_secret": "kept-between-starts"})
    browser.moved(before, harness.url)
    response = await browser.fetch(harness.url + "/webhooks/console/orders", follow=False)
    assert response.code == 200


@pytest.mark.gen_test
async def test_sign_out(harness, browser):
    await signed_in(harness, browser)
    response = await browser.submit(harness.url + PAGE, form="<header>.*?")
    assert response.code == 200 and "Signed out" in browser.text()
    assert "edx_hooks_console" not in browser.cookies(harness.url)
    assert (await browser.fetch(harness.url + PAGE, follow=False)).code == 302


@pytest.mark.gen_test
async def test_bad_input_gets_a_clear_page(harness, browser):
    await signed_in(harness, browser)
    for path, code, words in (
            ("/webhooks/console/orders/424242", 404, "There is no order 424242"),
            ("/webhooks/console/orders/99999999999999999999", 404, "There is no order"),
            ("/webhooks/console/orders?state=lost", 400, "is not an order state"),
            ("/webhooks/console/orders?since=yesterday", 400, "a date like"),
            ("/webhooks/console/orders?page=-1", 400, "whole number"),
            ("/webhooks/console/rejected?page=x", 400, "whole number"),
            ("/webhooks/console/deliveries/77/replay", 404, "no delivery 77"),
            ("/webhooks/console/nowhere", 404, "no console page"),
            ("/webhooks/console/orders/1/retry?item=5", 404, "There is no order 1")):
        response = await browser.fetch(harness.url + path)
        assert response.code == code, path
        assert words in browser.text() and "Traceback" not in browser.text(), path
    assert harness.deliveries() == []


@pytest.mark.gen_test
async def test_orders_filters_and_pages_match_the_cli(harness, browser):
    await signed_in(harness, browser)
    for n in range(55):
        await harness.shopify(shopify_order(line_item(email=f"l{n}@example.org"),
                                            order_id=5000 + n))
    await harness.quiet()
    first = browser.text(await browser.fetch(harness.url + "/webhooks/console/orders"))
    assert len(re.findall(r'href="/webhooks/console/orders/\d+"', first)) == 50
    assert "older →" in first
    second = browser.text(await browser.fetch(harness.url + "/webhooks/console/orders?page=2"))
    assert len(re.findall(r'href="/webhooks/console/orders/\d+"', second)) == 5
    assert "older →" not in second and "← newer" in second
    code, out, _ = await harness.cli("orders", "--state", "enrolled", "--json")
    cli = {o["id"] for o in json.loads(out)}
    pages = set()
    for p in (1, 2):
        html = browser.text(await browser.fetch(
            harness.url + f"/webhooks/console/orders?state=enrolled&page={p}"))
        pages |= {int(i) for i in re.findall(r'href="/webhooks/console/orders/(\d+)"', html)}
    assert pages == cli and len(cli) == 55
    by_number = browser.text(await browser.fetch(harness.url + "/webhooks/console/orders?q=5007"))
    assert len(re.findall(r'href="/webhooks/console/orders/\d+"', by_number)) == 1
    today = time.strftime("%Y-%m-%d", time.gmtime())
    dated = browser.text(await browser.fetch(
        harness.url + f"/webhooks/console/orders?since={today}&until={today}&shop="
        + urllib.parse.quote("school.myshopify.com")))
    assert len(re.findall(r'href="/webhooks/console/orders/\d+"', dated)) == 50
    none = browser.text(await browser.fetch(
        harness.url + "/webhooks/console/orders?until=2000-01-01"))
    assert "No order matches" in none


@pytest.mark.gen_test
async def test_rejected_deliveries_say_what_to_fix_and_replay_once_fixed(harness, browser):
    secret = "keep-me"
    harness.lms.sign_in("support", staff=True)
    await harness.start(shopify={"secret": "the-old-wrong-secret"},
                        console={**CONSOLE, "cookie_secret": secret})
    order = shopify_order(line_item(email="late@example.org"))
    assert (await harness.shopify(order)).code == 403
    [rejected] = harness.deliveries()
    page = browser.text(await browser.fetch(harness.url + "/webhooks/console/rejected"))
    assert "bad-signature" in page and "webhook secret" in page
    assert "1 rejected deliveries" in browser.text(await browser.fetch(harness.url + PAGE))

    before = harness.url
    await harness.stop()  # the secret is fixed
    await harness.start(console={**CONSOLE, "cookie_secret": secret},
                        retry={"sweep_seconds": 0.3})
    browser.moved(before, harness.url)
    done = await browser.submit(
        harness.url + f"/webhooks/console/deliveries/{rejected['id']}/replay")
    assert done.code == 200 and "The delivery was replayed" in browser.text(done)
    assert f"replay of {rejected['id']} by support" in browser.text(done)
    await harness.quiet()
    assert [i["state"] for i in harness.items()] == ["enrolled"]


@pytest.mark.gen_test
async def test_the_code_is_worthless_without_the_pkce_verifier(harness, browser):
    """A stolen code cannot be traded without the verifier the sign-in kept."""
    lms = harness.lms
    lms.sign_in("support", staff=True)
    verifier = signin.new_verifier()
    assert 43 <= len(verifier) <= 128
    redirect = "http://127.0.0.1:9/webhooks/console/signed-in"
    url = signin.authorize_url(lms.url, lms.console_client_id, redirect, "s", verifier)
    back = await browser.fetch(url, follow=False)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(back.headers["Location"]).query)["code"][0]
    kw = dict(timeout=2, connect_timeout=1)
    with pytest.raises(signin.SignInError, match="refused the sign-in code"):
        await signin.exchange(lms.url, lms.console_client_id, lms.console_client_secret, code,
                              redirect, signin.new_verifier(), **kw)
    back = await browser.fetch(url, follow=False)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(back.headers["Location"]).query)["code"][0]
    person = await signin.exchange(lms.url, lms.console_client_id, lms.console_client_secret,
                                   code, redirect, verifier, **kw)
    assert person == signin.Person("support", "Support", "support@example.org", True)


@pytest.mark.parametrize("environ, words", [
    ({"EDX_HOOKS_CONSOLE_CLIENT_ID": "c"}, "console.client_secret is required"),
    ({"EDX_HOOKS_CONSOLE_CLIENT_SECRET": "s"}, "console.client_id is required"),
    ({"EDX_HOOKS_CONSOLE_CLIENT_ID": "c", "EDX_HOOKS_CONSOLE_CLIENT_SECRET": "s",
      "EDX_HOOKS_CONSOLE_SESSION_HOURS": "0"}, "console.session_hours = '0'"),
    ({"EDX_HOOKS_CONSOLE_CLIENT_ID": "c", "EDX_HOOKS_CONSOLE_CLIENT_SECRET": "s",
      "EDX_HOOKS_CONSOLE_STAFF_USERNAMES": "[1]"}, "console.staff_usernames"),
])
def test_a_half_configured_console_stops_start_up_with_one_line(environ, words):
    from edx_hooks import config
    base = {"EDX_HOOKS_LMS_BASE_URL": "https://lms.example.org", "EDX_HOOKS_LMS_CLIENT_ID": "a",
            "EDX_HOOKS_LMS_CLIENT_SECRET": "b"}
    with pytest.raises(config.ConfigError) as e:
        config.load(None, {**base, **environ})
    assert words in str(e.value) and "\n" not in str(e.value) and ": set " in str(e.value)
    assert "'s'" not in str(e.value)  # a secret is never echoed


@pytest.mark.gen_test
async def test_no_code_token_or_secret_reaches_the_log(harness, browser, caplog):
    caplog.set_level("DEBUG")
    await signed_in(harness, browser, cookie_secret="a-cookie-key-for-tests")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/webhooks/console/signed-in" in logged  # the access log has the callback...
    assert "code-" not in logged and "code=" not in logged  # ...without its code
    assert "event=console.signed_in user=support staff=true" in logged
    for secret in ("console-client-secret", "a-cookie-key-for-tests", harness.lms.jwt_key):
        assert secret not in logged
    assert not [r for r in caplog.records if "eyJ" in r.getMessage()]  # no JWT


@pytest.mark.gen_test
async def test_the_console_s_order_states_are_the_cli_s(harness, browser):
    """The state an order is filed under is computed in SQL for the console
    (a page is one query): it must be store.order_state's, for every state."""
    from edx_hooks.store import ORDER_STATES

    from .conftest import woo_order
    await harness.start(console=CONSOLE, woocommerce={"require_payment": True})
    await harness.shopify(shopify_order(line_item(email="ok@example.org"), order_id=1))
    await harness.quiet()
    harness.lms.fail_all = Forced(status=403)
    await harness.shopify(shopify_order(line_item(email="no@example.org"), order_id=2))
    await harness.quiet()
    harness.lms.fail_all = None
    await harness.woocommerce(woo_order(paid=False, order_id=3))
    store = harness.service.store
    seen = set()
    for state in ORDER_STATES:
        cli = {o["id"] for o in await store.orders(state=state)}
        console = {o["id"] for o in await store.order_page(state=state, limit=1000)}
        assert console == cli, state
        seen |= {state} if cli else set()
    assert seen == {"enrolled", "failed", "awaiting-payment"}


@pytest.mark.gen_test
async def test_a_post_without_a_session_does_nothing_and_the_stylesheet_is_served(
        harness, browser):
    await signed_in(harness, browser)
    harness.lms.fail_all = Forced(status=403)
    await harness.shopify(shopify_order(line_item(email="a@example.org")))
    await harness.quiet()
    [item] = harness.items()
    stranger = Browser()
    try:
        response = await stranger.fetch(
            harness.url + f"/webhooks/console/orders/{item['order_id']}/retry", "POST", {})
        assert response.code == 401 and "nothing was done" in stranger.text()
        css = await stranger.fetch(harness.url + "/webhooks/console/static/console.css")
        assert css.code == 200 and css.headers["Content-Type"].startswith("text/css")
    finally:
        stranger.close()
    assert [i["state"] for i in harness.items()] == ["failed"]
