"""The console's pages and actions. Thin: they read the request, call the
store (read methods, bounded) or the CLI's retry and replay, and render a
template. Every refusal is a page that says what happened and what to do."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import time
import urllib.parse
from typing import Any

from .. import logs
from ..errors import Failure
from ..intake import replay_delivery
from ..store import ORDER_STATES, NewDelivery, utcnow
from . import signin
from .base import PAGE_SIZE, PENDING, RETRYABLE, SESSION, SIGNIN_MINUTES, Page, log, masked


class SignIn(Page):
    """Start signing in: a fresh ``state`` and PKCE verifier, kept in a
    short-lived signed cookie, then to the LMS."""
    staff_only = False

    def get(self) -> None:
        state, verifier = signin.new_state(), signin.new_verifier()
        after = self.get_argument("next", "/webhooks/console/")
        if not after.startswith("/webhooks/console/") or after.startswith("//"):
            after = "/webhooks/console/"
        self.set_secure(PENDING, json.dumps({"s": state, "v": verifier, "n": after}),
                        expires_days=SIGNIN_MINUTES / 1440)
        lms_url = self.cfg.server.public_url or self.cfg.lms.base_url
        self.redirect(signin.authorize_url(lms_url, self.cfg.console.client_id,
                                           self.redirect_uri(), state, verifier))

    def redirect_uri(self) -> str:
        return f"{self.request.protocol}://{self.request.host}/webhooks/console/signed-in"


class SignedIn(SignIn):
    """The LMS sends the browser back here with a code (or an error)."""

    def _request_summary(self) -> str:
        # the access log without the query: the code stays out of the log
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    async def get(self) -> None:  # type: ignore[override]
        raw = self.get_secure(PENDING, SIGNIN_MINUTES / 1440)
        pending = json.loads(raw) if raw else None
        retry = ("Sign in again", "/webhooks/console/sign-in")
        if pending is None:
            self.page(400, "message.html", title="Sign-in not completed",
                      text="This sign-in was not started from this browser in the last "
                           f"{SIGNIN_MINUTES} minutes (or cookies are blocked).", link=retry)
            return
        if self.get_argument("error", ""):
            self.page(403, "message.html", title="The LMS did not sign you in",
                      text=f"The LMS answered: {self.get_argument('error')[:100]}.",
                      link=retry)
            return
        state, code = self.get_argument("state", ""), self.get_argument("code", "")
        if not code or not hmac.compare_digest(state.encode(), pending["s"].encode()):
            logs.event(log, logs.WARNING, "console.refused", why="state")
            self.page(400, "message.html", title="Sign-in not completed",
                      text="The answer from the LMS does not belong to this sign-in "
                           "(its state does not match), so it was ignored.", link=retry)
            return
        self.clear_cookie(PENDING, path="/webhooks/console/")
        lms = self.cfg.lms
        try:
            person = await signin.exchange(
                lms.base_url, self.cfg.console.client_id, self.cfg.console.client_secret,
                code, self.redirect_uri(), pending["v"], timeout=lms.timeout_seconds,
                connect_timeout=lms.connect_timeout_seconds)
        except signin.SignInError as e:
            logs.event(log, logs.WARNING, "console.signin_failed", why=str(e))
            self.page(502, "message.html", title="Sign-in failed", text=f"{e}.", link=retry)
            return
        self.set_secure(SESSION, json.dumps({"u": person.username, "n": person.name,
                                             "e": person.email, "a": person.administrator}),
                        expires_days=self.cfg.console.session_hours / 24)
        self.person = person
        logs.event(log, logs.INFO, "console.signed_in", user=person.username,
                   staff=self.is_staff())
        self.redirect(pending["n"])


class SignOut(Page):
    staff_only = False

    def post(self) -> None:
        if self.person is not None:
            logs.event(log, logs.INFO, "console.signed_out", user=self.person.username)
        self.clear_cookie(SESSION, path="/webhooks/console/")
        self.person = None
        self.page(200, "message.html", title="Signed out",
                  text="You are signed out of the console. You are still signed in to "
                       "Open edX itself: sign out there too on a shared computer.",
                  link=("Sign in again", "/webhooks/console/sign-in"))

    def get(self) -> None:
        self.page(200, "message.html", title="Sign out",
                  text="Use the Sign out button at the top of any console page.",
                  link=("Back to the overview", "/webhooks/console/"))


class Overview(Page):
    async def get(self) -> None:
        now = utcnow()
        found = await self.store.overview(now)
        upgrade = self.store.upgrade
        self.render("overview.html", title="Overview", found=found, states=ORDER_STATES,
                    item_states=sorted(found["items"]), lms=self.context.lms,
                    schema=upgrade.after if upgrade else "?",
                    since_awaiting=(now - dt.timedelta(days=7)).date())


class Orders(Page):
    async def get(self) -> None:
        state = self.get_argument("state", "")
        if state and state not in ORDER_STATES:
            self.bad(400, "Unknown state", f"{state[:40]!r} is not an order state; the "
                     f"states are: {', '.join(ORDER_STATES)}.")
            return
        dates = {}
        for name in ("since", "until"):
            raw = self.get_argument(name, "")
            try:
                dates[name] = dt.datetime.fromisoformat(raw) if raw else None
            except ValueError:
                self.bad(400, "Not a date", f"{name} must be a date like 2026-11-28, "
                         f"not {raw[:40]!r}.")
                return
        if dates["until"] is not None and len(self.get_argument("until")) <= 10:
            dates["until"] += dt.timedelta(days=1)  # a day: up to its end
        page = self.int_arg("page", 1, 1, 100000)
        if page is None:
            return
        shop, search = self.get_argument("shop", ""), self.get_argument("q", "")[:320]
        rows = await self.store.order_page(state=state or None, shop=shop or None,
                                           search=search or None, offset=(page - 1) * PAGE_SIZE,
                                           limit=PAGE_SIZE, **dates)
        more = len(rows) > PAGE_SIZE
        query = {k: v for k, v in (("state", state), ("shop", shop), ("q", search),
                                   ("since", self.get_argument("since", "")),
                                   ("until", self.get_argument("until", ""))) if v}
        self.render("orders.html", title="Orders", rows=rows[:PAGE_SIZE], page=page, more=more,
                    state=state, shop=shop, search=search, states=ORDER_STATES,
                    shops=await self.store.shops(), query=query,
                    since=self.get_argument("since", ""), until=self.get_argument("until", ""),
                    urlencode=urllib.parse.urlencode)


class Order(Page):
    async def load(self, order_id: str) -> dict[str, Any] | None:
        order = await self.store.order_with_deliveries(int(order_id)) \
            if len(order_id) < 12 else None
        if order is None:
            self.bad(404, "No such order", f"There is no order {order_id} (it may have been "
                     "mistyped). The Orders page lists every order.")
        return order

    async def get(self, order_id: str) -> None:
        order = await self.load(order_id)
        if order is not None:
            self.render("order.html", title=f"Order {order['name']}", order=order,
                        masked=masked, retryable=RETRYABLE,
                        done=self.get_argument("done", ""))


class Retry(Order):
    """Retry one failed item (``item``) or all of an order's: GET asks to
    confirm, POST does it."""

    async def chosen(self, order_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        order = await self.load(order_id)
        if order is None:
            return None
        item = self.get_argument("item", "")
        failed = [i for i in order["items"] if i["state"] in RETRYABLE
                  and (not item or str(i["id"]) == item)]
        if not failed:
            self.bad(409, "Nothing to retry", f"Order {order['name']} has no failed line item"
                     + (f" {item[:20]}" if item else "") + " now: it may have been retried "
                     "already.")
            return None
        return order, failed

    async def get(self, order_id: str) -> None:
        found = await self.chosen(order_id)
        if found:
            order, failed = found
            self.render("confirm.html", title="Retry", order=order, chosen=failed,
                        action=self.request.path, item=self.get_argument("item", ""),
                        what="Retry", delivery=None)

    async def post(self, order_id: str) -> None:
        found = await self.chosen(order_id)
        if not found:
            return
        order, failed = found
        ids = await self.store.retry_failed(item_ids=[i["id"] for i in failed])
        user = self.person.username if self.person else "?"
        await self.store.record_action(NewDelivery(
            provider=order["provider"], endpoint="CONSOLE retry", received_at=utcnow(),
            client_ip=self.request.remote_ip, headers={}, body=b"", body_size=0, status=200,
            reason=f"console.retry by {user}: item(s) {', '.join(map(str, ids))}",
            shop=order["shop"]), order["id"])
        self.context.schedule(ids)
        logs.event(log, logs.INFO, "console.retry", user=user, provider=order["provider"],
                   order=order["external_id"], items=",".join(map(str, ids)))
        self.redirect(f"/webhooks/console/orders/{order['id']}?done=retry")


class Replay(Page):
    async def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        found = await self.store.delivery(int(delivery_id)) if len(delivery_id) < 12 else None
        if found is None:
            self.bad(404, "No such delivery", f"There is no delivery {delivery_id}.")
        return found

    async def get(self, delivery_id: str) -> None:
        found = await self.delivery(delivery_id)
        if found:
            self.render("confirm.html", title="Replay", order=None, chosen=[],
                        action=self.request.path, item="", what="Replay", delivery=found)

    async def post(self, delivery_id: str) -> None:
        found = await self.delivery(delivery_id)
        if not found:
            return
        user = self.person.username if self.person else "?"
        try:
            recorded, outcome = await replay_delivery(self.store, self.cfg, found["id"], by=user)
        except Failure as e:
            self.bad(409, "Cannot replay this delivery", f"{e}.")
            return
        logs.event(log, logs.INFO, "console.replay", user=user, delivery=found["id"],
                   replayed_as=recorded.delivery_id, status=outcome.status,
                   reason=outcome.reason)
        if recorded.order_id is not None:
            self.redirect(f"/webhooks/console/orders/{recorded.order_id}?done=replay")
            return
        self.page(200, "message.html", title=f"Replayed: {outcome.status} {outcome.reason}",
                  text=f"Delivery {found['id']} was processed again as delivery "
                       f"{recorded.delivery_id}: {outcome.status} {outcome.reason}. "
                       + FIXES.get(outcome.reason, ""),
                  link=("Rejected deliveries", "/webhooks/console/rejected"))


#: what to fix for each reason a delivery is rejected
FIXES = {
    "bad-signature": "The signature does not match any secret configured for this shop: "
                     "copy the shop's webhook secret into the config again (Shopify: the "
                     "app's API secret; WooCommerce: the webhook's secret), restart, then "
                     "replay.",
    "unknown-shop": "No [[shopify]] shop has this shop_domain: add the shop or fix its "
                    "domain, then replay.",
    "unknown-source": "No [[woocommerce]] shop has this source URL: add it or fix "
                      "woocommerce.source, then replay.",
    "missing-signature": "The request carried no signature: it did not come from the shop's "
                         "webhooks (or a proxy dropped the header).",
    "missing-shop-domain": "No X-Shopify-Shop-Domain header: not a Shopify webhook.",
    "missing-source": "No X-WC-Webhook-Source header: not a WooCommerce webhook.",
    "body-too-large": "Larger than server.max_body_size: raise it if the shop's orders are "
                      "that large.",
    "unsupported-content-type": "Send webhooks as JSON (WooCommerce: the webhook's API "
                                "version must be a current one).",
    "body-not-json-object": "The body is not a JSON object: check the webhook's format.",
    "order-id-missing": "The body names no order: check the webhook's topic.",
    "unknown-endpoint": "Sent to a URL edx-hooks does not serve: fix the webhook's URL "
                        "(edx-hooks check-config lists them).",
    "shopify-not-configured": "Shopify is not configured here: add a [[shopify]] shop.",
    "woocommerce-not-configured": "WooCommerce is not configured here: add a "
                                  "[[woocommerce]] shop.",
    "method-not-allowed": "Not a POST: a browser or a probe, not a shop.",
    "incomplete-request": "The sender gave up before the whole body came.",
}


class Rejected(Page):
    async def get(self) -> None:
        page = self.int_arg("page", 1, 1, 100000)
        if page is None:
            return
        rows = await self.store.rejected_page(offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        self.render("rejected.html", title="Rejected deliveries", rows=rows[:PAGE_SIZE],
                    page=page, more=len(rows) > PAGE_SIZE, fixes=FIXES, now=time.time())
