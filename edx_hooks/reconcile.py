"""Reconciliation: read the orders a shop changed since the last reading back
from its API, and act on what its webhooks missed.

A webhook is a single chance: WooCommerce never re-sends (and disables a
webhook after more than five failures in a row), Shopify gives up after
about four hours. For each shop with API credentials, every
``reconcile.minutes`` (and on ``edx-hooks reconcile``):

- the orders modified since the shop's watermark (minus :data:`OVERLAP`; the
  first time, ``reconcile.first_lookback_hours`` back) are listed, page by
  page, by the storefront's API client (``storefronts/*_api``);
- each is judged by the storefront's own code and expanded by the catalog
  (:mod:`edx_hooks.intake`, as a delivery is), then the store says what of it
  is not stored yet (:meth:`Store.missed`). Known and unchanged: nothing is
  written. Otherwise it is recorded as a delivery whose endpoint says
  ``RECONCILE`` and logged as ``reconcile.found`` with what was missed; the
  store's rules make sure that an order arriving by webhook and read back at
  the same moment is enrolled once;
- when every page was read, the watermark moves to the run's start (kept in
  the database: it survives restarts). A page that does not parse is logged
  and skipped, and the watermark stays;
- WooCommerce: the shop's webhooks that point at this service are checked; a
  disabled or paused one is logged as ``webhook.disabled`` (error) once per
  state change and, with ``reactivate_webhooks``, set active again.

Bad answers never stop the service: a wrong key is one ``reconcile.auth_failed``
error per run with the fix; a throttle is waited out (then left to the next
run); a timeout or 5xx is left to the next run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from . import intake, logs
from .catalog import Catalog
from .config import Config
from .store import NewDelivery, Store, utcnow
from .storefronts import STOREFRONTS
from .storefronts.readback import AUTH, Client, Found, ShopAPIError
from .storefronts.shopify_api import ShopifyAPI
from .storefronts.woocommerce_api import WooCommerceAPI

log = logging.getLogger("edx_hooks.reconcile")

#: each reading starts this long before the last one's start: an order the
#: shop saved while the last reading was under way is not missed
OVERLAP = dt.timedelta(minutes=10)
#: each storefront's API client
CLIENTS: dict[str, Any] = {"woocommerce": WooCommerceAPI, "shopify": ShopifyAPI}
#: the headers stored with a read-back delivery
SOURCE_HEADER = "X-Edx-Hooks-Source"


@dataclass
class ShopRun:
    """What one reading of one shop found and did."""
    provider: str
    shop: str
    since: dt.datetime
    orders: int = 0
    pages: int = 0
    #: (order id, what was missed, reason, delivery id or None in a dry run)
    found: list[tuple[str, str, str, int | None]] = field(default_factory=list)
    skipped_pages: int = 0
    error: str | None = None
    #: the kind of ShopAPIError that ended it (auth, throttled, unavailable, unparsable)
    error_kind: str | None = None
    #: webhooks pointing here: (id, topic, status, url)
    webhooks: list[tuple[Any, str, str, str]] = field(default_factory=list)
    watermark: dt.datetime | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and not self.skipped_pages


class Reconciler:
    """Reads every shop with credentials back; one per service or command."""

    def __init__(self, cfg: Config, store: Store, catalog: Catalog, dry_run: bool = False):
        self.cfg, self.store, self.catalog, self.dry_run = cfg, store, catalog, dry_run
        self.lookback = dt.timedelta(hours=cfg.reconcile.first_lookback_hours)
        public = cfg.server.public_url or cfg.lms.base_url
        self.hook_prefix = f"{public}/webhooks/woocommerce/".lower()
        #: each webhook's last status seen, to log a change once
        self.webhook_status: dict[tuple[str, Any], str] = {}
        self.clients: list[tuple[str, Any, Client]] = []
        for name, make in CLIENTS.items():
            for shop in cfg.shops.get(name, ()):
                if getattr(shop, "readable", False):
                    self.clients.append((name, shop, make(shop)))
        self._task: asyncio.Task | None = None
        self.stopping = False

    def close(self) -> None:
        for _, _, client in self.clients:
            client.close()

    async def scheduled(self) -> None:
        """The service's job: one run, which stopping may cut short (nothing
        is lost: the watermark moves only at the end of a whole reading)."""
        if self.stopping:
            return
        self._task = asyncio.current_task()
        try:
            await self.run()
        except asyncio.CancelledError:
            if not self.stopping:
                raise
        finally:
            self._task = None

    async def stop(self) -> None:
        self.stopping = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        self.close()

    async def run(self, shop: str | None = None,
                  since: dt.datetime | None = None) -> list[ShopRun]:
        """Read every shop with credentials (or only ``shop``: its domain or
        URL) back; ``since`` (naive UTC) instead of the watermark."""
        done = []
        for provider, settings, client in self.clients:
            if shop is not None and shop.lower().rstrip("/") not in (
                    client.shop_id.lower().rstrip("/"), provider):
                continue
            try:
                done.append(await self.read(provider, settings, client, since))
            except asyncio.CancelledError:
                raise
            except Exception:  # a defect of ours: logged, and the next shop is read
                logs.event(log, logs.ERROR, "reconcile.error", provider=provider,
                           shop=client.shop_id, exc_info=True)
                done.append(ShopRun(provider, client.shop_id, since or utcnow(),
                                    error="internal error (see the log)"))
        return done

    async def read(self, provider: str, settings: Any, client: Client,
                   since: dt.datetime | None) -> ShopRun:
        started = utcnow()
        mark = await self.store.watermark(provider, client.shop_id)
        start = since or (mark - OVERLAP if mark else started - self.lookback)
        run = ShopRun(provider, client.shop_id, start)
        try:
            async for page in client.changed_since(start):
                run.pages += 1
                if page.error:
                    run.skipped_pages += 1
                    logs.event(log, logs.WARNING, "reconcile.page_skipped", provider=provider,
                               shop=client.shop_id, page=page.number, reason=page.error)
                    continue
                for found in page.orders:
                    run.orders += 1
                    await self.order(provider, found, run)
        except ShopAPIError as e:
            run.error, run.error_kind = str(e), e.kind
            if e.kind == AUTH:
                logs.event(log, logs.ERROR, "reconcile.auth_failed", provider=provider,
                           shop=client.shop_id, reason=str(e), fix=e.fix)
            else:
                logs.event(log, logs.WARNING, f"reconcile.{e.kind}", provider=provider,
                           shop=client.shop_id, reason=str(e),
                           fix="nothing is lost: the next run reads from the same point")
        if isinstance(client, WooCommerceAPI) and run.error_kind != AUTH:  # one error a run
            await self.webhooks(client, run)
        if run.complete and not self.dry_run and (mark is None or since is None or since <= mark):
            await self.store.set_watermark(provider, client.shop_id, started)
            run.watermark = started
        logs.event(log, logs.INFO if run.complete else logs.WARNING, "reconcile.done",
                   provider=provider, shop=client.shop_id, since=start.isoformat(), pages=run.pages,
                   orders=run.orders, found=len(run.found), skipped_pages=run.skipped_pages,
                   complete=run.complete, dry_run=self.dry_run)
        return run

    async def order(self, provider: str, found: Found, run: ShopRun) -> None:
        """One order read back: act on what is not stored yet, if anything."""
        for what, judge in found.judges:
            outcome = intake.decide(self.catalog, judge)
            if outcome.status >= 300 or (outcome.order is None and outcome.unenroll is None):
                if outcome.status >= 300:
                    logs.event(log, logs.WARNING, "reconcile.unreadable_order",
                               provider=provider, shop=run.shop, order=found.order_id,
                               reason=outcome.reason)
                continue
            missed = await self.store.missed(outcome.order, outcome.unenroll)
            if not missed:
                continue  # known and unchanged: no write
            delivery_id = new_items = None
            if not self.dry_run:
                recorded = await intake.record(self.store, NewDelivery(
                    provider=provider, endpoint=f"RECONCILE /webhooks/{provider}/{what}",
                    received_at=utcnow(), client_ip=None,
                    headers={SOURCE_HEADER: "reconcile"}, body=found.body,
                    body_size=len(found.body), status=outcome.status,
                    reason=f"{outcome.reason} (reconcile)", shop=outcome.shop, verified=True),
                    outcome)
                delivery_id, new_items = recorded.delivery_id, len(recorded.new_pending)
                for item_id, reason in recorded.new_failed:
                    logs.event(log, logs.ERROR, "item.failed", provider=provider,
                               order=found.order_id, item=item_id, attempt=0, reason=reason)
            run.found.append((found.order_id, ",".join(missed), outcome.reason, delivery_id))
            logs.event(log, logs.WARNING, "reconcile.found", provider=provider, shop=run.shop,
                       order=found.order_id, missed=",".join(missed), reason=outcome.reason,
                       delivery=delivery_id, new_items=new_items, dry_run=self.dry_run)

    async def webhooks(self, client: WooCommerceAPI, run: ShopRun) -> None:
        """Check the shop's webhooks pointing here; reactivate if allowed."""
        try:
            hooks = await client.webhooks()
        except ShopAPIError as e:
            logs.event(log, logs.WARNING, "webhook.check_failed", provider="woocommerce",
                       shop=run.shop, reason=str(e), fix=e.fix or "the next run tries again")
            return
        for hook in hooks:
            url = str(hook.get("delivery_url") or "")
            if not url.lower().startswith(self.hook_prefix):
                continue
            hook_id, status = hook.get("id"), str(hook.get("status") or "")
            run.webhooks.append((hook_id, str(hook.get("topic") or ""), status, url))
            key = (run.shop, hook_id)
            before, self.webhook_status[key] = self.webhook_status.get(key), status
            if status == "active":
                if before not in (None, "active"):
                    logs.event(log, logs.INFO, "webhook.active", provider="woocommerce",
                               shop=run.shop, webhook=hook_id, topic=hook.get("topic"))
                continue
            if before != status:
                logs.event(log, logs.ERROR, "webhook.disabled", provider="woocommerce",
                           shop=run.shop, webhook=hook_id, topic=hook.get("topic"),
                           status=status, url=url,
                           fix="set it Active in WooCommerce > Settings > Advanced > Webhooks "
                               "(or woocommerce.reactivate_webhooks = true); reconciliation "
                               "reads back what it missed meanwhile")
            if client.shop.reactivate_webhooks and not self.dry_run:
                try:
                    await client.activate(hook_id)
                except ShopAPIError as e:
                    logs.event(log, logs.ERROR, "webhook.reactivate_failed",
                               provider="woocommerce", shop=run.shop, webhook=hook_id,
                               reason=str(e), fix="give the REST API key Read/Write permission, "
                                                  "or reactivate it by hand")
                    continue
                self.webhook_status[key] = "active"
                logs.event(log, logs.WARNING, "webhook.reactivated", provider="woocommerce",
                           shop=run.shop, webhook=hook_id, topic=hook.get("topic"))


def since_value(value: str) -> dt.datetime:
    """``--since``: an ISO time (naive = UTC) or a duration back from now
    (``90m``, ``2h``, ``3d``); naive UTC. ValueError with the fix."""
    text = value.strip().lower()
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return utcnow() - dt.timedelta(**{units[text[-1]]: float(text[:-1])})
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither a time like 2026-12-01T08:00 nor a duration "
                         "like 90m, 2h or 3d") from None
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


def report(runs: list[ShopRun], dry_run: bool) -> str:
    """What ``edx-hooks reconcile`` prints."""
    lines = []
    for run in runs:
        state = "complete" if run.complete else f"INCOMPLETE ({run.error or 'pages skipped'})"
        since = f"{run.since:%Y-%m-%d %H:%M:%S}"
        lines.append(f"{run.provider} {run.shop}: orders changed since {since} UTC: "
                     f"{run.orders} read in {run.pages} page(s), {len(run.found)} missed by "
                     f"the webhooks; {state}")
        for order, missed, reason, delivery in run.found:
            done = "would be recorded (dry run)" if dry_run else f"recorded as delivery {delivery}"
            lines.append(f"  order {order}: missed {missed} ({reason}): {done}")
        for hook_id, topic, status, url in run.webhooks:
            lines.append(f"  webhook {hook_id} {topic} {status} {url}")
        if run.skipped_pages:
            lines.append(f"  {run.skipped_pages} page(s) did not parse: see reconcile.page_skipped "
                         "in the log; the watermark stays")
    return "\n".join(lines) or "no shop has API credentials: nothing to read back"


async def check_webhooks(cfg: Config) -> list[tuple[bool, str]]:
    """``check-config --online``: each WooCommerce shop's webhooks that point
    at this service (topic, status, URL), and what does not match the config:
    a URL that is no endpoint, a topic the endpoint does not act on, a
    webhook not active, Order created where require_payment needs Order
    updated."""
    storefront = STOREFRONTS["woocommerce"]
    public = (cfg.server.public_url or cfg.lms.base_url).lower()
    found: list[tuple[bool, str]] = []
    for shop in cfg.shops.get("woocommerce", ()):
        if not shop.readable:
            continue
        client = WooCommerceAPI(shop)
        try:
            hooks = await client.webhooks()
        except ShopAPIError as e:
            found.append((False, f"woocommerce {client.shop_id}: webhooks: {e}"
                                 + (f": {e.fix}" if e.fix else "")))
            continue
        finally:
            client.close()
        ours = [h for h in hooks if str(h.get("delivery_url") or "").lower().startswith(public)
                or "/webhooks/woocommerce/" in str(h.get("delivery_url") or "")]
        if not ours:
            found.append((False, f"woocommerce {client.shop_id}: no webhook points at "
                                 f"{public}/webhooks/woocommerce/: add one (check-config lists "
                                 "the URLs)"))
        updated = False
        for hook in ours:
            url, topic = str(hook.get("delivery_url")), str(hook.get("topic") or "")
            status = str(hook.get("status") or "")
            line = f"woocommerce {client.shop_id}: webhook {hook.get('id')} {topic} {status} {url}"
            path = url.split("/webhooks/woocommerce/", 1)[-1] if "/webhooks/woocommerce/" in url \
                else ""
            endpoint = storefront.endpoint(path) if url.lower().startswith(public) else None
            if endpoint is None:
                found.append((False, f"{line}: not an endpoint of this service (expected "
                                     f"{public}/webhooks/woocommerce/order/create or "
                                     "order/update)"))
            elif topic not in endpoint.topics:
                found.append((False, f"{line}: topic {topic} is not acted on there (expected "
                                     f"{', '.join(endpoint.topics)})"))
            elif status != "active":
                found.append((False, f"{line}: not active: set it Active in WooCommerce "
                                     "(reconciliation reads back what it missed)"))
            elif topic == "order.created" and shop.require_payment:
                found.append((False, f"{line}: Order created while require_payment = true: "
                                     "unpaid orders are only recorded; subscribe Order updated "
                                     "to enroll on payment"))
            else:
                found.append((True, line))
            updated |= endpoint is not None and topic == "order.updated" and status == "active"
        if shop.require_payment and ours and not updated:
            found.append((False, f"woocommerce {client.shop_id}: require_payment = true needs an "
                                 "active Order updated webhook (payment arrives as an update)"))
    return found
