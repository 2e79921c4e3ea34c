"""HTTP handlers: receive a delivery, let its storefront judge it, store it
(the store schedules what it asks for), answer.

Every request that reaches a handler here is stored as a delivery with its
outcome before the answer leaves, whatever the answer. Bodies are streamed so
the size limit is ours to enforce: Tornado on its own answers an over-long
body with a bare 400 and closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from tornado import web

from . import intake, logs
from .catalog import Catalog
from .store import NewDelivery, Recorded, Store, utcnow
from .storefronts import Endpoint, Outcome, Storefront, rejected

log = logging.getLogger("edx_hooks.handlers")

#: How long the health check waits for the database before answering 503.
HEALTH_TIMEOUT = 2.0



class Inflight:
    """Counts requests being handled, so stopping can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


# A body declared this many times over ``server.max_body_size`` is refused
# before it is read; up to it (which covers what a proxy in front lets
# through: the shipped nginx and Caddy caps are 1.5 times) it is read first.
DRAINED_FACTOR = 4


@web.stream_request_body
class DeliveryHandler(web.RequestHandler):
    """Every request to ``/webhooks/`` (and any unknown path): a POST is
    judged by the route's storefront; whatever the answer, the request is
    stored first."""

    def initialize(self, store: Store, max_body_size: int, rejected_body_keep: int,
                   inflight: Inflight, catalog: Catalog, storefront: Storefront | None = None,
                   shops: Sequence[Any] = (), endpoint: Endpoint | None = None,
                   not_found: str = "unknown-endpoint") -> None:
        """Tornado's injection (``Application`` route arguments): the store,
        limits, the catalog and, for a configured storefront's route, the storefront that
        judges POSTs to it, its shops and the endpoint; without a storefront
        the route answers 404 ``not_found``."""
        self.store = store
        self.inflight = inflight
        self.catalog = catalog
        self.counted = False
        self.concluding = False
        self.max_body_size = max_body_size
        self.rejected_body_keep = rejected_body_keep
        self.storefront = storefront
        self.shops = shops
        self.endpoint = endpoint
        self.not_found = not_found
        self.provider = storefront.name if storefront else "unknown"

    def prepare(self) -> Any:
        self.inflight.enter()
        self.counted = True
        self.received_at = utcnow()
        self.chunks: list[bytes] = []
        self.size = self.held = 0
        self.too_large = False
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_body_size:
            if int(declared) > DRAINED_FACTOR * self.max_body_size:
                # Refused before reading it; Tornado closes the connection after.
                self.size = int(declared)
                return self.conclude(rejected(413, "body-too-large"))
            # Read (keeping only the rejected-bytes budget), then answered
            # 413 in post(): answered early, the close with bytes unread
            # resets the connection, and a proxy in front (Caddy, nginx)
            # turns the 413 it may not have read yet into a 502.
            self.too_large = True
        return None

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_body_size:
            self.too_large = True  # what follows is only counted
        keep = self.rejected_body_keep if self.too_large else self.max_body_size
        if self.held < keep:
            self.chunks.append(chunk[:keep - self.held])
            self.held += len(self.chunks[-1])

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def on_finish(self) -> None:
        if self.counted:
            self.counted = False
            self.inflight.leave()

    def on_connection_close(self) -> None:
        """The client left (or was cut off by the body timeout) before its
        request was complete: record what came, then let go."""
        super().on_connection_close()
        if self.counted and not self._finished and not self.concluding \
                and hasattr(self, "received_at"):
            asyncio.ensure_future(self._record_incomplete())
        self.on_finish()

    async def _record_incomplete(self) -> None:
        try:
            recorded = await self.store.record(self._delivery(rejected(408, "incomplete-request")))
        except Exception:
            return
        logs.event(log, logs.WARNING, "delivery.rejected", provider=self.provider,
                   delivery=recorded.delivery_id, status=408, reason="incomplete-request",
                   ip=self.request.remote_ip)

    # -- methods

    async def post(self, *_: str) -> None:
        if self.too_large:
            await self.conclude(rejected(413, "body-too-large"))
        elif self.storefront is None:
            await self.conclude(rejected(404, self.not_found))
        else:
            try:
                storefront, endpoint = self.storefront, self.endpoint
                outcome = intake.decide(self.catalog, lambda: storefront.receive(
                    self.request.headers, self.body, self.shops, endpoint))
            except Exception:
                outcome = self._internal_error()
            await self.conclude(outcome)

    def _internal_error(self) -> Outcome:
        """A defect of ours, not the shop's: logged with its traceback,
        answered 500 and still kept; whole when a shop's signature verified,
        whatever the rejected-bytes budget, since a shop that does not
        re-send (WooCommerce) leaves `edx-hooks replay` as its only way in
        once the defect is fixed."""
        logs.event(log, logs.ERROR, "delivery.error", provider=self.provider, exc_info=True)
        outcome = rejected(500, "internal-error")
        if self.storefront is not None:
            try:
                outcome.verified = self.storefront.verified(self.request.headers, self.body,
                                                            self.shops)
            except Exception:
                logs.event(log, logs.ERROR, "delivery.error", provider=self.provider,
                           exc_info=True)
        return outcome

    async def _not_post(self, *_: str) -> None:
        if self.storefront is None:
            await self.conclude(rejected(404, self.not_found))
        else:
            self.set_header("Allow", "POST")
            await self.conclude(rejected(405, "method-not-allowed"))

    get = head = put = patch = delete = options = _not_post

    # -- the answer

    async def conclude(self, outcome: Outcome) -> None:
        """Store the delivery (and its order), then answer. The store schedules
        the order's new line items before the commit is acknowledged."""
        self.concluding = True
        try:
            recorded = await intake.record(self.store, self._delivery(outcome), outcome)
        except Exception:
            # Not stored means not accepted: the shop will deliver it again.
            logs.event(log, logs.ERROR, "delivery.unstored", provider=self.provider, status=503)
            self._answer(503, "storage-unavailable", None)
            return
        try:
            self._log_outcome(outcome, recorded)
        except Exception:
            # Stored with its outcome, and acted on: it is answered as stored,
            # not with Tornado's error page (whose 500 would say otherwise).
            logs.event(log, logs.ERROR, "delivery.error", provider=self.provider,
                       delivery=recorded.delivery_id, exc_info=True)
        self._answer(outcome.status, outcome.reason, recorded.delivery_id)

    def _delivery(self, outcome: Outcome) -> NewDelivery:
        """The delivery as stored: all of an accepted body, or of a verified
        one we failed to read; of a rejected one, only the first
        ``retention.rejected_body_bytes`` (enough to diagnose it and, for most
        orders, to replay it; not enough for a flood to fill the disk)."""
        whole = outcome.status < 300 or outcome.verified
        body = self.body if whole else self.body[:self.rejected_body_keep]
        headers = {name: value[:1000] for name, value in self.request.headers.get_all()}
        return NewDelivery(
            provider=self.provider, endpoint=f"{self.request.method} {self.request.path}"[:200],
            received_at=self.received_at, client_ip=self.request.remote_ip,
            headers=headers, body=body, body_size=self.size, status=outcome.status,
            reason=outcome.reason, shop=outcome.shop, verified=outcome.verified)

    def _log_outcome(self, outcome: Outcome, recorded: Recorded) -> None:
        """One line per delivery, and one per line item that failed on arrival
        or that an earlier refund or cancellation keeps from being enrolled."""
        delivery = {"provider": self.provider, "delivery": recorded.delivery_id}
        for warning in outcome.warnings:
            logs.event(log, logs.WARNING, "delivery.warning", **delivery, message=warning)
        if outcome.event:  # a ping (who sent it matters), a delivery not acted on
            logs.event(log, outcome.level, outcome.event, **delivery, **outcome.extra,
                       ip=self.request.remote_ip,
                       agent=self.request.headers.get("User-Agent", "")[:200])
        elif outcome.unenroll is not None:
            logs.event(log, logs.INFO, "delivery.unenroll", **delivery, shop=outcome.shop,
                       order=outcome.unenroll.order_external_id, why=outcome.unenroll.why,
                       unenroll=outcome.unenroll.act, unenroll_now=len(recorded.unenroll_now),
                       after_enrollment=len(recorded.unenroll_after),
                       not_enrolled=len(recorded.new_not_enrolled),
                       known_order=(recorded.order_existed if outcome.order is not None
                                    else recorded.order_id is not None), **outcome.extra)
        elif outcome.status < 300:
            logs.event(log, logs.INFO, "delivery.accepted", **delivery, shop=outcome.shop,
                       order=outcome.order.external_id if outcome.order else None,
                       reason=outcome.reason, new_items=len(recorded.new_pending),
                       failed_items=len(recorded.new_failed),
                       not_enrolled=len(recorded.new_not_enrolled),
                       repeat=recorded.order_existed, **outcome.extra)
        else:
            logs.event(log, logs.WARNING, "delivery.rejected", **delivery,
                       status=outcome.status, reason=outcome.reason, shop=outcome.shop,
                       ip=self.request.remote_ip, **outcome.extra)
            return
        order = outcome.order.external_id if outcome.order else None
        for item_id, reason in recorded.new_failed:
            logs.event(log, logs.ERROR, "item.failed", provider=self.provider, order=order,
                       item=item_id, attempt=0, reason=reason)
        for item_id, reason in recorded.new_not_enrolled:
            logs.event(log, logs.INFO, "item.not_enrolled", provider=self.provider,
                       order=order, item=item_id, reason=reason)

    def _answer(self, status: int, reason: str, delivery_id: int | None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if self.request.method != "HEAD":
            self.write(json.dumps({"status": status, "reason": reason, "delivery": delivery_id}))
        if not self._finished:
            self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "reason": self._reason}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            return
        logs.event(log, logs.ERROR, "request.error", provider=self.provider, path=self.request.path,
                  exc_info=(typ, value, tb))


class HealthHandler(web.RequestHandler):
    """``GET /healthz``: 200 with counts, or 503 when the database cannot be
    written. No personal data. Outside ``/webhooks/``, so the nginx include
    does not expose it."""

    def initialize(self, store: Store) -> None:
        self.store = store

    async def get(self) -> None:
        status, code = "ok", 200
        try:
            await asyncio.wait_for(self.store.check_writable(), HEALTH_TIMEOUT)
        except Exception:
            status, code = "database-unwritable", 503
        try:
            counts = await asyncio.wait_for(self.store.health(), HEALTH_TIMEOUT)
        except Exception:
            status, code, counts = "database-unreadable", 503, {}
        self.set_status(code)
        self.set_header("Cache-Control", "no-store")
        self.finish({"status": status, **counts})

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        logs.event(log, logs.ERROR, "request.error", path=self.request.path,
                   exc_info=(typ, value, tb))
