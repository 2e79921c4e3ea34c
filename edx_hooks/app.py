"""The service: wires the store, the scheduler, the LMS client and the HTTP
server together, and takes them down again in order.

The path of an order: ``handlers`` receives it → ``storefronts.<shop>``
verifies and reads it → ``store`` commits it → ``scheduler`` schedules one
job for the line items of each committed batch (and one per retry) →
``enrollment`` enrolls each through ``lms`` (its runtime, owned here, runs
the jobs; ``jobs`` names them for the job store). ``reconcile`` reads back from the
shops what their webhooks missed, into the same path (``intake``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket

from sqlalchemy.engine import make_url
from tornado import web
from tornado.httpserver import HTTPServer

from . import console, logs
from . import scheduler as sched
from .catalog import Catalog
from .config import Config
from .enrollment.runtime import Runtime
from .handlers import DRAINED_FACTOR, DeliveryHandler, HealthHandler, Inflight
from .lms import LMSClient
from .reconcile import Reconciler
from .store import Store, utcnow
from .storefronts import STOREFRONTS

log = logging.getLogger("edx_hooks.app")

#: How long stopping waits for requests under way.
SHUTDOWN_GRACE_SECONDS = 5.0
#: How much longer than the longest LMS call may take (a full batch: see
#: LMSClient.deadline) stopping waits for the calls under way to finish and
#: their outcome to be recorded.
DRAIN_MARGIN_SECONDS = 5.0
#: How often the service looks whether another process (the CLI's retry or
#: replay) wrote to the database, to act on it at once.
WATCH_SECONDS = 1.0


class Service:
    """The whole service in one process: the store, the LMS client, the
    catalog, the job scheduler and the HTTP server with its webhook routes
    (and the console's). :meth:`start` opens them in order, :meth:`stop`
    closes them; ``edx-hooks serve`` and ``edx-hooks demo`` build one.

    Arguments:

    * ``cfg`` -- the loaded :class:`~edx_hooks.config.Config`: every part is
      built from it (nothing is read from the environment here).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        lms = cfg.lms
        self.lms = LMSClient(lms.base_url, lms.client_id, lms.client_secret,
                             timeout=lms.timeout_seconds,
                             connect_timeout=lms.connect_timeout_seconds,
                             seconds_per_learner=lms.seconds_per_learner,
                             auto_enroll=lms.auto_enroll,
                             email_students=lms.email_students, sku_prefix=lms.sku_prefix,
                             max_calls_per_minute=lms.max_calls_per_minute,
                             api_key=lms.api_key, learning_mfe_url=lms.learning_mfe_url)
        # Each committed batch's new line items get their job before any
        # request in that batch is answered.
        self.store = Store(cfg.database.url, cfg.database.sqlite_synchronous,
                           after_commit=lambda ids: sched.schedule_new(self.scheduler, ids),
                           rejected_budget=cfg.retention.rejected_max_bytes)
        #: what the enrollment jobs run in; the scheduler's executor hands it to them
        self.runtime = Runtime(
            self.store, self.lms, batch_size=lms.batch_size, attempts=cfg.retry.attempts,
            delay_seconds=cfg.retry.delay_seconds,
            account_check=dt.timedelta(minutes=lms.account_check_minutes),
            account_wait=dt.timedelta(days=lms.account_wait_days))
        self.scheduler = sched.create(cfg.database.jobs_url, self.runtime)
        self.catalog = Catalog(cfg.products, lms.default_mode)
        self.inflight = Inflight()
        self.server: HTTPServer | None = None
        self.reconciler: Reconciler | None = None
        self.port: int | None = None

    def make_app(self) -> web.Application:
        common = dict(store=self.store, inflight=self.inflight, catalog=self.catalog,
                      max_body_size=self.cfg.server.max_body_size,
                      rejected_body_keep=self.cfg.retention.rejected_body_bytes)
        routes = []
        for name, storefront in STOREFRONTS.items():
            shops = self.cfg.shops[name]
            for endpoint in storefront.endpoints:
                path = rf"/webhooks/{name}/{endpoint.path}/?"
                if not shops:
                    routes.append((path, DeliveryHandler,
                                   dict(common, not_found=f"{name}-not-configured")))
                else:
                    routes.append((path, DeliveryHandler,
                                   dict(common, storefront=storefront, shops=shops,
                                        endpoint=endpoint)))
        routes.append((r"/healthz", HealthHandler, {"store": self.store}))
        # the staff's web console (a 404 while [console] is not configured),
        # before the storefronts' catch-all
        routes[:0] = console.routes(self.cfg, self.store, self.lms,
                                    lambda ids: sched.schedule_new(self.scheduler, ids))
        return web.Application(routes, default_handler_class=DeliveryHandler,
                               default_handler_args=common)

    async def start(self, sock: socket.socket | None = None) -> None:
        """Open the database, resume unfinished items, start serving.

        ``sock``: an already bound socket (tests); otherwise listen on the
        configured address and port.
        """
        await self.store.start()
        self.scheduler.start(paused=True)
        self.runtime.start(self.scheduler)
        resumed = await sched.resume(self.store, self.scheduler)
        sched.start_sweep(self.store, self.scheduler, self.cfg.retry.sweep_seconds,
                          busy=self.runtime.running, watch_seconds=WATCH_SECONDS,
                          track=self.runtime.tracked)
        self.scheduler.add_job(self.runtime.tracked(self.apply_retention), "interval", hours=1,
                               id="retention",
                               jobstore="memory", replace_existing=True,
                               next_run_time=dt.datetime.now(dt.UTC))
        self.reconciler = Reconciler(self.cfg, self.store, self.catalog)
        if self.cfg.reconcile.minutes > 0 and self.reconciler.clients:
            # first at start: what the shops sold while the service was down
            self.scheduler.add_job(self.reconciler.scheduled, "interval",
                                   minutes=self.cfg.reconcile.minutes, id="reconcile",
                                   jobstore="memory", replace_existing=True,
                                   next_run_time=dt.datetime.now(dt.UTC))
        self.scheduler.resume()
        limit = self.cfg.server.max_body_size
        self.server = HTTPServer(self.make_app(), xheaders=self.cfg.server.xheaders,
                                 # our own limit answers 413; Tornado's is only a backstop
                                 max_body_size=max(DRAINED_FACTOR * limit, 100 * 1024 * 1024),
                                 # slow clients (slowloris) are cut off
                                 idle_connection_timeout=self.cfg.server.client_timeout_seconds,
                                 body_timeout=self.cfg.server.client_timeout_seconds)
        if sock is None:
            self.server.listen(self.cfg.server.port, self.cfg.server.address)
            self.port = self.cfg.server.port
        else:
            self.server.add_socket(sock)
            self.port = sock.getsockname()[1]
        logs.event(log, logs.INFO, "service.started", address=self.cfg.server.address,
                   port=self.port, database=_safe_url(self.cfg.database.url),
                   storefronts=",".join(self.cfg.storefronts) or "none",
                   resumed_items=resumed)

    async def apply_retention(self) -> int:
        """Delete rejected deliveries older than ``retention.rejected_days``."""
        days = self.cfg.retention.rejected_days
        deleted = await self.store.delete_rejected(utcnow() - dt.timedelta(days=days))
        if deleted:
            logs.event(log, logs.INFO, "retention.pruned", deliveries=deleted, days=days)
        return deleted

    async def stop(self) -> None:
        """Stop taking requests and starting LMS calls at once; let requests
        under way finish (up to SHUTDOWN_GRACE_SECONDS) and LMS calls under
        way finish and record their outcome (up to the deadline of a full
        batch + DRAIN_MARGIN_SECONDS); keep every job; close the database.
        The whole of stopping is here, in this order."""
        if self.server is not None:
            self.server.stop()
        if self.scheduler.running:
            self.scheduler.pause()  # no job starts from here on
        self.runtime.halt()  # no LMS call starts from here on
        if self.reconciler is not None:
            await self.reconciler.stop()  # cut short: its watermark stays
        draining = asyncio.ensure_future(
            self.runtime.drain(self.lms.deadline(self.cfg.lms.batch_size)
                               + DRAIN_MARGIN_SECONDS))
        if self.server is not None:
            if not await self.inflight.wait_idle(SHUTDOWN_GRACE_SECONDS):
                logs.event(log, logs.WARNING, "service.stop_timeout", what="requests",
                           count=self.inflight.count)
            await self.server.close_all_connections()
        interrupted = await draining
        if interrupted:
            logs.event(log, logs.WARNING, "service.stop_timeout", what="lms-calls",
                       items=",".join(map(str, interrupted)))
        await self.runtime.finish()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.store.close()
        self.lms.close()
        logs.event(log, logs.INFO, "service.stopped")


def _safe_url(url: str) -> str:
    """A database URL without its password, for the log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable>"
