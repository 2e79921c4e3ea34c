"""The web console in a real browser (issue 22): Debian's Chromium, driven by
Playwright, against the real service and the stand-in LMS. Skipped, with
the reason, where Chromium or Playwright is missing; test_console.py runs
the same flows over HTTP everywhere."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from tornado import web

from .conftest import line_item, shopify_order
from .console_client import CONSOLE
from .standin_lms import Forced

CHROMIUM = os.environ.get("EDX_HOOKS_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None

pytestmark = [
    pytest.mark.skipif(async_playwright is None,
                       reason="playwright is not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) or shutil.which("chromium")),
                       reason=f"chromium is not installed at {CHROMIUM} "
                              "(apt-get install chromium; .ci/run does)"),
]


class Chromium:
    """One browser for a test, its pages' screenshots kept in ``shots``."""

    def __init__(self, shots):
        self.shots = shots
        self.count = 0

    async def __aenter__(self):
        self.pw = await async_playwright().start()
        self.browser = await self.pw.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
            args=ARGS)
        self.context = await self.browser.new_context(viewport={"width": 1000, "height": 700})
        self.page = await self.context.new_page()
        return self

    async def __aexit__(self, *exc):
        await self.context.close()
        await self.browser.close()
        await self.pw.stop()

    async def shot(self, name: str, full: bool = True) -> None:
        self.count += 1
        await self.page.screenshot(path=str(self.shots / f"{self.count:02}-{name}.png"),
                                   full_page=full)


@pytest.fixture
def shots(tmp_path):
    path = tmp_path / "screenshots"
    path.mkdir()
    return path


@pytest.mark.gen_test(timeout=120)
async def test_staff_finds_a_failed_order_by_email_retries_it_and_sees_it_enrolled(
        harness, shots):
    harness.lms.sign_in("support", staff=True)
    await harness.start(console=CONSOLE, retry={"sweep_seconds": 0.3})
    harness.lms.fail_all = Forced(status=403)
    await harness.shopify(shopify_order(line_item(email="ada@example.org"), order_id=1001))
    await harness.shopify(shopify_order(line_item(email="bob@example.org"), order_id=1002))
    await harness.quiet()
    harness.lms.fail_all = None
    async with Chromium(shots) as b:
        page = b.page
        await page.goto(harness.url + "/webhooks/console/")
        assert await page.locator("h1").inner_text() == "Overview"
        assert await page.locator("header .who span").inner_text() == "support"
        await b.shot("overview")
        await page.click("text=Orders")
        await page.fill("input[name=q]", "ada@example.org")
        await page.click("button:has-text('Show')")
        rows = page.locator("table.list tbody tr")
        assert await rows.count() == 1
        assert "failed" in await rows.inner_text()
        await b.shot("orders")
        await rows.locator("a").first.click()
        assert "ada@example.org" in await page.locator("main").inner_text()
        await b.shot("order-failed")
        # on a desktop the line items fit their box: long course ids, emails
        # and the LMS's answer wrap instead of scrolling sideways
        box = await page.evaluate("(() => { const s = document.querySelector('.scroll');"
                                  " return [s.scrollWidth, s.clientWidth]; })()")
        assert box[0] <= box[1]
        await page.click("text=Retry all failed items…")
        await page.click("button:has-text('Retry')")
        assert "Retry requested" in await page.locator(".notice").inner_text()
        await harness.quiet()
        await page.reload()
        states = await page.locator("table.list .state").all_inner_texts()
        assert states == ["enrolled"]
        assert "console.retry by support" in await page.locator("main").inner_text()
        await b.shot("order-enrolled")
        # on a phone: the page fits, nothing needs scrolling sideways
        await page.set_viewport_size({"width": 390, "height": 800})
        await page.goto(harness.url + "/webhooks/console/")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        await b.shot("overview-phone")
    assert len(list(shots.glob("*.png"))) == 5


@pytest.mark.gen_test(timeout=120)
async def test_a_non_staff_user_is_refused(harness, shots):
    harness.lms.sign_in("learner7", staff=False)
    await harness.start(console=CONSOLE)
    async with Chromium(shots) as b:
        answer = await b.page.goto(harness.url + "/webhooks/console/orders")
        assert answer.status == 403
        text = await b.page.locator("main").inner_text()
        assert "learner7" in text and "console.staff_usernames" in text
        await b.shot("refused")


@pytest.mark.gen_test(timeout=120)
async def test_a_signed_out_visitor_is_sent_to_sign_in(harness, shots):
    await harness.start(console=CONSOLE)  # nobody is signed in at the LMS
    async with Chromium(shots) as b:
        await b.page.goto(harness.url + "/webhooks/console/orders?state=failed")
        assert b.page.url.startswith(harness.lms.url + "/oauth2/authorize?")
        harness.lms.sign_in("support", staff=True)  # the visitor signs in at the LMS
        await b.page.reload()
        assert b.page.url == harness.url + "/webhooks/console/orders?state=failed"
        assert await b.page.locator("h1").inner_text() == "Orders"


@pytest.mark.gen_test(timeout=120)
async def test_a_post_without_xsrf_is_refused(harness, shots):
    harness.lms.sign_in("support", staff=True)
    await harness.start(console=CONSOLE)
    harness.lms.fail_all = Forced(status=403)
    await harness.shopify(shopify_order(line_item(email="ada@example.org")))
    await harness.quiet()
    [item] = harness.items()
    async with Chromium(shots) as b:
        await b.page.goto(harness.url + f"/webhooks/console/orders/{item['order_id']}/retry")
        await b.page.evaluate("document.querySelector('main input[name=_xsrf]').remove()")
        async with b.page.expect_navigation():
            await b.page.click("button:has-text('Retry')")
        assert await b.page.locator("h1").inner_text() == "This form has expired"
        await b.shot("xsrf")
    assert [i["state"] for i in harness.items()] == ["failed"]


@pytest.mark.gen_test(timeout=120)
async def test_an_expired_session_and_an_unknown_order(harness, shots):
    secret = "browser-test-cookie-secret"
    harness.lms.sign_in("support", staff=True)
    await harness.start(console={**CONSOLE, "cookie_secret": secret})
    async with Chromium(shots) as b:
        answer = await b.page.goto(harness.url + "/webhooks/console/orders/4242")
        assert answer.status == 404
        assert "There is no order 4242" in await b.page.locator("main").inner_text()
        await b.shot("unknown-order")
        old = web.create_signed_value(secret, "edx_hooks_console",
                                      json.dumps({"u": "support", "a": True}),
                                      clock=lambda: time.time() - 9 * 3600).decode()
        await b.context.add_cookies([{"name": "edx_hooks_console", "value": old,
                                      "url": harness.url + "/webhooks/console/"}])
        answer = await b.page.goto(harness.url + "/webhooks/console/orders")
        assert answer.status == 401
        assert await b.page.locator("h1").inner_text() == "Please sign in again"
        await b.page.click("text=Sign in with Open edX")
        assert b.page.url == harness.url + "/webhooks/console/orders"
