"""The store: the database's one entry point. Reads run on SQLAlchemy's
asyncio engine (aiosqlite), writes go through the group-commit
:class:`~edx_hooks.store.writer.Writer`; every query edx-hooks runs is a
method here or a statement of ``schema``/``writes``."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .. import logs
from . import known
from .migrate import SchemaError, Upgrade, prepare_sqlite, sqlite_path
from .schema import (
    ACTIVE,
    AWAITING_ACCOUNT,
    ENROLLED,
    FAILED,
    ITEMS_FOR_JOBS,
    NOT_ENROLLED,
    PENDING,
    SCHEDULED,
    UNENROLL_FAILED,
    UNENROLLED,
    UNKNOWN,
    WITHDRAWN_AMONG,
    JobItem,
    NewDelivery,
    NewOrder,
    Recorded,
    Unenroll,
    deliveries,
    items,
    order_state,
    orders,
    reconcile_marks,
    unenroll_requests,
    utcnow,
)
from .sqlite import create_private, restrict_files, sqlite_pragmas
from .writer import Writer
from .writes import (
    beat,
    delete_rejected,
    mark_unconfirmed,
    prune,
    record_action,
    record_enrolled,
    record_failed,
    record_many,
    retry_failed,
    set_mark,
    settle,
    update_item,
    withdraw_item,
)

log = logging.getLogger("edx_hooks.store")

#: what is kept of a rejected delivery's body once the budget is spent
REJECTED_HEAD = 1024
#: rows a prune or retention pass changes per transaction: each holds the
#: write lock for milliseconds, so a delivery arriving meanwhile (in the
#: service, or beside `edx-hooks prune`) waits that long at most
CLEANUP_BATCH = 500
#: the pause between two of those transactions: longer than SQLite's longest
#: busy-handler sleep (100 ms), so that a writer of another process waiting
#: for the lock takes it before the next batch does
CLEANUP_PAUSE_SECONDS = 0.12

__all__ = ["REJECTED_HEAD", "Store"]


class Store:
    """The database of the service (an SQLite file) and of every command."""

    def __init__(self, url: str, sqlite_synchronous: str = "full",
                 after_commit: Callable[[list[int]], None] | None = None,
                 rejected_budget: int = 32 * 1024 * 1024):
        """``after_commit`` is called with the ids of the line items each
        committed batch added in state pending (or set to be unenrolled),
        before any request waiting on that batch is answered.
        ``rejected_budget``: bytes of rejected deliveries' bodies kept in all
        (beyond it, only their first :data:`REJECTED_HEAD` bytes)."""
        self.url = url
        #: reads
        self.engine: AsyncEngine = create_async_engine(url)
        sqlite_pragmas(self.engine.sync_engine, sqlite_synchronous)
        self.path = sqlite_path(self.engine.url)
        #: writes
        self.writer = Writer(self.engine.url, sqlite_synchronous, after_commit=self._committed)
        self.after_commit = after_commit
        self.rejected_budget = rejected_budget
        #: bytes of rejected bodies kept now: counted at start, added to as
        #: they come, subtracted from as retention deletes them
        self.rejected_bytes = 0
        self._budget_warned_at: float | None = None
        self._trimmed_since_warning = 0
        #: the writer connection's PRAGMA data_version when last read
        self._data_version: int | None = None
        #: what start() found and did to the schema
        self.upgrade: Upgrade | None = None

    async def start(self, create: bool = True) -> None:
        """Open the database and start the writer.

        ``create`` (``edx-hooks serve``): create a new database, upgrade an
        older schema in place. Without it (every other command) a database
        that does not exist, or is not at the current schema, raises
        :class:`SchemaError` and is left as it was.
        """
        if self.path is None:
            raise SchemaError("database.url must name an SQLite file")
        if not os.path.exists(self.path):
            if not create:
                raise SchemaError(f"database {self.path} does not exist: check database.url "
                                  "(only `edx-hooks serve` creates it)")
            create_private(self.path)
        self.upgrade = await self.writer.run(prepare_sqlite, self.writer.engine, create)
        restrict_files(self.path)
        self.writer.start()
        await self.count_rejected_bytes()
        await self.written_elsewhere()  # from here on, another process's write is seen

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close the connections.
        From the moment this is called, a new write fails at once with
        :class:`StoreClosed`."""
        await self.writer.close()
        await self.engine.dispose()

    def _committed(self, results: list[Any]) -> None:
        """After each commit: hand the batch's items with work to do to
        ``after_commit`` (the scheduler)."""
        pending = [i for r in results if isinstance(r, Recorded)
                   for i in r.new_pending + r.unenroll_now]
        if pending and self.after_commit is not None:
            try:
                self.after_commit(pending)
            except Exception:
                # Committed all the same: the scheduler's sweep gives these
                # items their job.
                logs.event(log, logs.ERROR, "schedule.failed", items=len(pending),
                           exc_info=True)

    async def _submit(self, op: Callable, *args: Any) -> Any:
        return await self.writer.submit(op, *args)

    # -- writes

    async def record(self, delivery: NewDelivery, order: NewOrder | None = None,
                     unenroll: Unenroll | None = None) -> Recorded:
        """Store a delivery and, when it was accepted, its order and new line
        items, or the unenrollment it asks for. A rejected delivery's body
        counts against :attr:`rejected_budget`."""
        if delivery.status >= 300:
            self._budget(delivery)
        return await self._submit(record_many, delivery, order, unenroll)

    def _budget(self, delivery: NewDelivery) -> None:
        """Keep a rejected body whole while the kept ones stay within the
        budget (so that `edx-hooks replay` can recover a genuine order
        rejected while a secret was wrong); past it, its first
        :data:`REJECTED_HEAD` bytes only. Warned once an hour, not per request.
        A delivery a shop signed is kept whole whatever the budget: only a
        genuine shop can send one (forgeries cannot use this), and a shop that
        never re-sends (WooCommerce) has no other way back in than
        `edx-hooks replay`."""
        if not delivery.verified and len(delivery.body) > REJECTED_HEAD \
                and self.rejected_bytes + len(delivery.body) > self.rejected_budget:
            delivery.body = delivery.body[:REJECTED_HEAD]
            self._trimmed_since_warning += 1
            now = time.monotonic()
            if self._budget_warned_at is None or now - self._budget_warned_at >= 3600:
                self._budget_warned_at = now
                logs.event(log, logs.WARNING, "retention.budget_full",
                           kept_bytes=self.rejected_bytes, budget=self.rejected_budget,
                           trimmed=self._trimmed_since_warning,
                           fix="rejected deliveries keep their first 1 KiB only until "
                               "retention.rejected_days removes older ones; see why they are "
                               "rejected (event=delivery.rejected)")
                self._trimmed_since_warning = 0
        self.rejected_bytes += len(delivery.body)

    async def count_rejected_bytes(self) -> int:
        """Count the bytes of rejected bodies kept (at start, before any request)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(sa.func.length(deliveries.c.body)), 0)) \
            .where(deliveries.c.status >= 300)
        async with self.engine.connect() as conn:
            self.rejected_bytes = (await conn.execute(query)).scalar_one()
        return self.rejected_bytes

    async def written_elsewhere(self) -> bool:
        """Whether another process (``edx-hooks retry``, ``replay``...) has
        committed to the database since the last call (PRAGMA data_version on
        the writer's own connection)."""
        if self.writer.closing:
            return False
        version = await self.writer.data_version()
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed

    async def record_enrolled(self, item_id: int, expected: str, state: str, attempts: int,
                              next_attempt_at: dt.datetime | None = None,
                              wait_until: dt.datetime | None = None) -> str | None:
        """Record an enrollment the LMS confirmed: ``state``, or
        ``unenroll-pending`` if a refund asked for it meanwhile (atomic)."""
        return await self._submit(record_enrolled, item_id, expected, state, attempts,
                                  next_attempt_at, wait_until)

    async def record_failed(self, item_id: int, expected: str, attempts: int,
                            reason: str) -> str | None:
        """Record that an item's attempts are over: failed, or unknown if a
        call's outcome is (atomic); the state set, None if not ``expected``."""
        return await self._submit(record_failed, item_id, expected, attempts, reason)

    async def mark_unconfirmed(self, item_ids: list[int], action: str,
                               deadline: dt.datetime) -> None:
        """Before a bulk enrollment call goes out: its items' outcome is
        unknown until it is recorded (a crash meanwhile leaves it so)."""
        await self._submit(mark_unconfirmed, item_ids, action, deadline)

    async def settle(self, item_ids: list[int]) -> None:
        """These items' last call was answered, or seen not done."""
        await self._submit(settle, item_ids)

    async def withdraw(self, item_id: int, expected: str, **values: Any) -> bool:
        """Change a line item still ``expected`` because of its refund or
        cancellation, only while that is in force (atomic); False if not."""
        return await self._submit(withdraw_item, item_id, values, expected)

    async def update(self, item_id: int, expected: str, **values: Any) -> bool:
        """Change a line item still in the ``expected`` state; False if it is not."""
        return await self._submit(update_item, item_id, values, expected)

    async def retry_failed(self, item_ids: list[int] | None = None,
                           order_ids: list[int] | None = None) -> list[int]:
        """Set failed (and unknown) line items pending again, attempts from
        zero; return their ids. An unknown one keeps its mark: the LMS is
        asked what it did before it is sent again.

        ``None`` for both: every failed item.
        """
        return await self._submit(retry_failed, item_ids, order_ids)

    async def prune(self, before: dt.datetime, rejected_since: dt.datetime | None = None
                    ) -> int:
        """Remove the raw body and headers of finished deliveries, but not of
        failed orders' nor of rejected ones received since ``rejected_since``;
        return how many. In transactions of :data:`CLEANUP_BATCH` rows, so
        that the service's writes never wait long for the write lock."""
        total = last = 0
        while True:
            done, last = await self._submit(prune, before, last, CLEANUP_BATCH, rejected_since)
            total += done
            if done < CLEANUP_BATCH:
                return total
            await asyncio.sleep(CLEANUP_PAUSE_SECONDS)

    async def delete_rejected(self, before: dt.datetime) -> int:
        """Delete rejected deliveries received before ``before``; return how
        many. In transactions of :data:`CLEANUP_BATCH` rows, as :meth:`prune`."""
        total = 0
        while True:
            deleted, kept = await self._submit(delete_rejected, before, CLEANUP_BATCH)
            total += deleted
            self.rejected_bytes = max(0, self.rejected_bytes - kept)
            if deleted < CLEANUP_BATCH:
                return total
            await asyncio.sleep(CLEANUP_PAUSE_SECONDS)

    async def set_watermark(self, provider: str, shop: str, watermark: dt.datetime) -> None:
        """Reconciliation read ``shop``'s orders modified before ``watermark``."""
        await self._submit(set_mark, provider, shop, watermark)

    async def check_writable(self) -> None:
        """Commit a write through the writer; raises if the database refuses it."""
        await self._submit(beat)

    # -- reads

    async def watermark(self, provider: str, shop: str) -> dt.datetime | None:
        """Up to when ``shop``'s orders were read back (None: never)."""
        rows = await self._all(sa.select(reconcile_marks.c.watermark)
                               .where(reconcile_marks.c.provider == provider,
                                      reconcile_marks.c.shop == shop))
        return rows[0]["watermark"] if rows else None

    async def missed(self, order: NewOrder | None, unenroll: Unenroll | None) -> list[str]:
        """What storing this order (read back from its shop) would add to what
        is stored; empty: known and unchanged, nothing to write (see
        :func:`~edx_hooks.store.known.missed`)."""
        async with self.engine.connect() as conn:
            return await known.missed(conn, order, unenroll)

    async def item_for_job(self, item_id: int) -> JobItem | None:
        """The line item with what the enrollment job needs of its order."""
        rows = await self.items_for_jobs([item_id])
        return rows[0] if rows else None

    async def items_for_jobs(self, item_ids: list[int]) -> list[JobItem]:
        """The line items with what their enrollment jobs need of their
        orders, in one query."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(ITEMS_FOR_JOBS, {"item_ids": item_ids})).mappings()
            return [JobItem(**row) for row in rows.all()]

    async def withdrawn_among(self, item_ids: list[int]) -> set[int]:
        """Which of these items a refund or cancellation names (asked just
        before their enrollment call goes out)."""
        async with self.engine.connect() as conn:
            return set((await conn.execute(WITHDRAWN_AMONG, {"item_ids": item_ids})).scalars())

    async def items_by_id(self, item_ids: list[int]) -> list[dict[str, Any]]:
        """These line items' state and reason, with their order's provider and id."""
        return await self._all(
            sa.select(items.c.id, items.c.state, items.c.reason, items.c.attempts,
                      orders.c.provider, orders.c.external_id.label("order_external_id"))
            .join(orders, items.c.order_id == orders.c.id)
            .where(items.c.id.in_(item_ids)).order_by(items.c.id))

    async def failed_items(self, item_ids: list[int] | None = None,
                           order_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """The failed (and unknown) line items (``None`` for both: every one)
        with what decides whether they can be retried: learner, course, SKU,
        reason."""
        query = (sa.select(items.c.id, items.c.state, items.c.email, items.c.course_id,
                           items.c.sku, items.c.mode, items.c.part, items.c.reason)
                 .where(items.c.state.in_((FAILED, UNENROLL_FAILED, UNKNOWN)))
                 .order_by(items.c.id))
        if item_ids is not None:
            query = query.where(items.c.id.in_(item_ids))
        if order_ids is not None:
            query = query.where(items.c.order_id.in_(order_ids))
        return await self._all(query)

    async def pending_items(self) -> list[tuple[int, dt.datetime | None, str]]:
        """Every line item with a job to come (work to do, an account to look
        for), with when it is due and its state."""
        query = (sa.select(items.c.id, items.c.next_attempt_at, items.c.state)
                 .where(items.c.state.in_(SCHEDULED)).order_by(items.c.id))
        async with self.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(query)).all()]

    async def _all(self, query: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def orders(self, state: str | None = None, since: dt.datetime | None = None,
                     limit: int = 1000, email: str | None = None) -> list[dict[str, Any]]:
        """Orders, newest first, with their items counted by state, the
        order's state and its latest error; ``email``: only those with a line
        item for that learner (any case)."""
        counts = (sa.select(
            items.c.order_id, sa.func.count().label("items"),
            sa.func.sum(sa.case((items.c.state.in_(ACTIVE), 1), else_=0)).label("pending"),
            sa.func.sum(sa.case((items.c.state.in_((FAILED, UNENROLL_FAILED)), 1),
                                else_=0)).label("failed"),
            sa.func.sum(sa.case((items.c.state == ENROLLED, 1), else_=0)).label("enrolled"),
            sa.func.sum(sa.case((items.c.state == UNENROLLED, 1), else_=0))
            .label("unenrolled"),
            sa.func.sum(sa.case((items.c.state == AWAITING_ACCOUNT, 1), else_=0))
            .label("awaiting_account"),
            sa.func.sum(sa.case((items.c.state == UNKNOWN, 1), else_=0)).label("unknown"),
            sa.func.max(sa.case((items.c.reason.is_not(None), items.c.updated_at)))
            .label("error_at"))
            .group_by(items.c.order_id).subquery())
        last_error = (sa.select(items.c.reason).where(items.c.order_id == orders.c.id,
                                                      items.c.reason.is_not(None))
                      .order_by(items.c.updated_at.desc()).limit(1).scalar_subquery())
        query = (sa.select(orders, sa.func.coalesce(counts.c["items"], 0).label("items"),
                           sa.func.coalesce(counts.c.pending, 0).label("pending"),
                           sa.func.coalesce(counts.c.failed, 0).label("failed"),
                           sa.func.coalesce(counts.c.enrolled, 0).label("enrolled"),
                           sa.func.coalesce(counts.c.unenrolled, 0).label("unenrolled"),
                           sa.func.coalesce(counts.c.awaiting_account, 0)
                           .label("awaiting_account"),
                           sa.func.coalesce(counts.c.unknown, 0).label("unknown"),
                           last_error.label("last_error"))
                 .outerjoin(counts, counts.c.order_id == orders.c.id)
                 .order_by(orders.c.created_at.desc(), orders.c.id.desc()))
        if since is not None:
            query = query.where(orders.c.created_at >= since)
        if email is not None:
            query = query.where(orders.c.id.in_(
                sa.select(items.c.order_id)
                .where(sa.func.lower(items.c.email) == email.strip().lower())))
        found = []
        for row in await self._all(query):
            row["state"] = order_state(row)
            if state is None or row["state"] == state:
                found.append(row)
            if len(found) >= limit:
                break
        return found

    async def order_story(self, provider: str, external_id: str) -> list[dict[str, Any]]:
        """Everything about the orders with this provider and id (one per shop),
        or else with this name or number as the shop shows it (``#1004``,
        ``1004``): the order, its deliveries and its line items."""
        found = await self._all(sa.select(orders).where(orders.c.provider == provider,
                                                        orders.c.external_id == external_id))
        if not found:  # what staff know: the name in the shop's admin and emails
            number = external_id.strip().lstrip("#").strip()
            found = await self._all(sa.select(orders).where(
                orders.c.provider == provider,
                orders.c.name.in_({external_id.strip(), number, f"#{number}"}))
                .order_by(orders.c.id))
        for order in found:
            external_id = order["external_id"]
            order["unenroll_requests"] = await self._all(
                sa.select(unenroll_requests.c.line_item_id, unenroll_requests.c.why,
                          unenroll_requests.c.delivery_id, unenroll_requests.c.requested_at)
                .where(unenroll_requests.c.provider == provider,
                       unenroll_requests.c.shop == order["shop"],
                       unenroll_requests.c.order_external_id == external_id)
                .order_by(unenroll_requests.c.id))
            order["deliveries"] = await self._all(
                sa.select(deliveries.c.id, deliveries.c.received_at, deliveries.c.client_ip,
                          deliveries.c.endpoint, deliveries.c.status, deliveries.c.reason)
                .where(deliveries.c.order_id == order["id"]).order_by(deliveries.c.id))
            order["items"] = await self._all(
                sa.select(items).where(items.c.order_id == order["id"]).order_by(items.c.id))
        return found

    async def list_deliveries(self, rejected: bool = False, since: dt.datetime | None = None,
                              limit: int = 1000) -> list[dict[str, Any]]:
        """Deliveries, newest first, without body or headers; ``rejected``:
        only those answered 300 or more (a bad signature, an unknown shop...)."""
        query = (sa.select(deliveries.c.id, deliveries.c.received_at, deliveries.c.provider,
                           deliveries.c.shop, deliveries.c.endpoint, deliveries.c.status,
                           deliveries.c.reason, deliveries.c.client_ip, deliveries.c.order_id)
                 .order_by(deliveries.c.id.desc()).limit(limit))
        if rejected:
            query = query.where(deliveries.c.status >= 300)
        if since is not None:
            query = query.where(deliveries.c.received_at >= since)
        return await self._all(query)

    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        rows = await self._all(sa.select(deliveries).where(deliveries.c.id == delivery_id))
        return rows[0] if rows else None

    async def health(self) -> dict[str, Any]:
        """How many items are pending and failed, and the oldest pending one's age."""
        query = sa.select(
            sa.func.sum(sa.case((items.c.state.in_(ACTIVE), 1), else_=0)),
            sa.func.sum(sa.case((items.c.state.in_((FAILED, UNENROLL_FAILED)), 1), else_=0)),
            sa.func.min(sa.case((items.c.state.in_(ACTIVE),
                                 sa.func.coalesce(items.c.pending_since, items.c.created_at)))),
            sa.func.sum(sa.case((items.c.state == AWAITING_ACCOUNT, 1), else_=0)),
            sa.func.sum(sa.case((items.c.state == UNKNOWN, 1), else_=0)))
        # a burst of these is what a wrong secret looks like
        rejected = (sa.select(sa.func.count()).select_from(deliveries)
                    .where(deliveries.c.received_at >= utcnow() - dt.timedelta(hours=1),
                           deliveries.c.status >= 300))
        async with self.engine.connect() as conn:
            pending, failed, oldest, awaiting, unknown = (await conn.execute(query)).one()
            rejected_count = (await conn.execute(rejected)).scalar_one()
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        return {"pending": pending or 0, "failed": failed or 0, "unknown": unknown or 0,
                "oldest_pending_seconds": round(age, 1), "awaiting_account": awaiting or 0,
                "rejected_last_hour": rejected_count}

    # -- reads for the web console: each bounded (a page, an aggregate over
    # an indexed range), on the read engine, never through the writer

    def _order_counts(self) -> Any:
        """Each order with its items counted by state, and its state as
        :func:`order_state` gives it, computed in SQL (so that a page of
        orders in one state is one bounded query)."""
        n = {name: sa.func.sum(sa.case((cond, 1), else_=0)) for name, cond in (
            ("pending", items.c.state.in_(ACTIVE)),
            ("failed", items.c.state.in_((FAILED, UNENROLL_FAILED))),
            ("enrolled", items.c.state == ENROLLED),
            ("unenrolled", items.c.state == UNENROLLED),
            ("awaiting_account", items.c.state == AWAITING_ACCOUNT),
            ("unknown", items.c.state == UNKNOWN))}
        counts = (sa.select(items.c.order_id, sa.func.count().label("items"),
                            *(v.label(k) for k, v in n.items()))
                  .group_by(items.c.order_id).subquery())
        c = {k: sa.func.coalesce(counts.c[k], 0) for k in ("items", *n)}
        state = sa.case((c["items"] == 0, sa.func.coalesce(orders.c.hold, "empty")),
                        (c["pending"] > 0, PENDING), (c["failed"] > 0, FAILED),
                        (c["unknown"] > 0, UNKNOWN),
                        (c["awaiting_account"] > 0, AWAITING_ACCOUNT),
                        (c["enrolled"] > 0, ENROLLED), (c["unenrolled"] > 0, UNENROLLED),
                        else_=NOT_ENROLLED)
        return (sa.select(orders, *(v.label(k) for k, v in c.items()), state.label("state"))
                .outerjoin(counts, counts.c.order_id == orders.c.id))

    async def order_page(self, *, state: str | None = None, shop: str | None = None,
                         since: dt.datetime | None = None, until: dt.datetime | None = None,
                         search: str | None = None, offset: int = 0,
                         limit: int = 50) -> list[dict[str, Any]]:
        """One page of orders, newest first: in ``state`` (an order's, as
        ``edx-hooks orders --state``), from ``shop``, received in [since,
        until), whose name or number is ``search`` or one of whose learners'
        email contains it. ``limit + 1`` rows are read, so the caller knows
        whether there is a next page."""
        rows = self._order_counts().subquery()
        query = sa.select(rows)
        if state:
            query = query.where(rows.c.state == state)
        if shop:
            query = query.where(rows.c.shop == shop)
        if since is not None:
            query = query.where(rows.c.created_at >= since)
        if until is not None:
            query = query.where(rows.c.created_at < until)
        if search:
            term = search.strip()
            bare = term.lstrip("#")
            by_learner = sa.select(items.c.order_id).where(
                items.c.email.ilike(f"%{_like(term)}%", escape="\\"))
            query = query.where(sa.or_(rows.c.external_id == bare, rows.c.name == term,
                                       rows.c.name == f"#{bare}", rows.c.id.in_(by_learner)))
        query = query.order_by(rows.c.created_at.desc(), rows.c.id.desc()) \
            .offset(offset).limit(limit + 1)
        return await self._all(query)

    async def shops(self) -> list[tuple[str, str]]:
        """The (provider, shop) pairs orders came from."""
        async with self.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(
                sa.select(orders.c.provider, orders.c.shop).distinct()
                .order_by(orders.c.provider, orders.c.shop).limit(200))).all()]

    async def overview(self, now: dt.datetime, awaiting_days: float = 7.0
                       ) -> dict[str, Any]:
        """What the console's first page shows: orders and line items per
        state received in the last day and week; what needs a human (failed
        and unknown items, items awaiting an account for over
        ``awaiting_days``, deliveries rejected in the last week); the last
        delivery accepted from each shop in the last 30 days."""
        day, week = now - dt.timedelta(days=1), now - dt.timedelta(days=7)
        result: dict[str, Any] = {}
        async with self.engine.connect() as conn:
            rows = self._order_counts().where(orders.c.created_at >= week).subquery()
            found = await conn.execute(
                sa.select(rows.c.state, sa.func.count(),
                          sa.func.sum(sa.case((rows.c.created_at >= day, 1), else_=0)))
                .group_by(rows.c.state))
            result["orders"] = {s: (d or 0, w) for s, w, d in found.all()}
            found = await conn.execute(
                sa.select(items.c.state, sa.func.count(),
                          sa.func.sum(sa.case((items.c.created_at >= day, 1), else_=0)))
                .where(items.c.created_at >= week).group_by(items.c.state))
            result["items"] = {s: (d or 0, w) for s, w, d in found.all()}
            long_ago = now - dt.timedelta(days=awaiting_days)
            found = await conn.execute(sa.select(
                sa.func.sum(sa.case((items.c.state.in_((FAILED, UNENROLL_FAILED)), 1),
                                    else_=0)),
                sa.func.sum(sa.case((items.c.state == UNKNOWN, 1), else_=0)),
                sa.func.sum(sa.case((sa.and_(items.c.state == AWAITING_ACCOUNT,
                                             items.c.created_at < long_ago), 1), else_=0)))
                .where(items.c.state.in_((FAILED, UNENROLL_FAILED, UNKNOWN,
                                          AWAITING_ACCOUNT))))
            failed, unknown, awaiting = found.one()
            rejected = (await conn.execute(sa.select(sa.func.count()).where(
                deliveries.c.received_at >= week, deliveries.c.status >= 300))).scalar_one()
            result["attention"] = {"failed": failed or 0, "unknown": unknown or 0,
                                   "awaiting": awaiting or 0, "rejected": rejected}
            found = await conn.execute(
                sa.select(deliveries.c.provider, deliveries.c.shop,
                          sa.func.max(deliveries.c.received_at))
                .where(deliveries.c.received_at >= now - dt.timedelta(days=30),
                       deliveries.c.status < 300, deliveries.c.shop.is_not(None),
                       ~deliveries.c.endpoint.startswith("CONSOLE "))
                .group_by(deliveries.c.provider, deliveries.c.shop)
                .order_by(deliveries.c.provider, deliveries.c.shop).limit(100))
            result["shops"] = [tuple(r) for r in found.all()]
        return result

    async def order_with_deliveries(self, order_id: int, body_limit: int = 65536
                                    ) -> dict[str, Any] | None:
        """One order by its row id, with its line items, its refunds and
        cancellations, and every delivery with its headers and (the first
        ``body_limit`` bytes of) its body; at most 200 of each."""
        found = await self._all(sa.select(orders).where(orders.c.id == order_id))
        if not found:
            return None
        order = found[0]
        order["items"] = await self._all(
            sa.select(items).where(items.c.order_id == order_id).order_by(items.c.id).limit(200))
        order["deliveries"] = await self._all(
            sa.select(deliveries.c.id, deliveries.c.received_at, deliveries.c.client_ip,
                      deliveries.c.endpoint, deliveries.c.status, deliveries.c.reason,
                      deliveries.c.headers, deliveries.c.body_size, deliveries.c.pruned_at,
                      sa.func.length(deliveries.c.body).label("kept"),
                      sa.func.substr(deliveries.c.body, 1, body_limit).label("body"))
            .where(deliveries.c.order_id == order_id).order_by(deliveries.c.id).limit(200))
        order["unenroll_requests"] = await self._all(
            sa.select(unenroll_requests.c.line_item_id, unenroll_requests.c.why,
                      unenroll_requests.c.delivery_id, unenroll_requests.c.requested_at,
                      unenroll_requests.c.lifted_at)
            .where(unenroll_requests.c.provider == order["provider"],
                   unenroll_requests.c.shop == order["shop"],
                   unenroll_requests.c.order_external_id == order["external_id"])
            .order_by(unenroll_requests.c.id).limit(200))
        return order

    async def rejected_page(self, offset: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        """Rejected deliveries, newest first, without their bodies (``limit
        + 1`` rows, as :meth:`order_page`)."""
        return await self._all(
            sa.select(deliveries.c.id, deliveries.c.provider, deliveries.c.endpoint,
                      deliveries.c.received_at, deliveries.c.client_ip, deliveries.c.status,
                      deliveries.c.reason, deliveries.c.shop, deliveries.c.body_size,
                      deliveries.c.pruned_at, sa.func.length(deliveries.c.body).label("kept"))
            .where(deliveries.c.status >= 300)
            .order_by(deliveries.c.received_at.desc(), deliveries.c.id.desc())
            .offset(offset).limit(limit + 1))

    async def record_action(self, delivery: NewDelivery, order_id: int) -> int:
        """Keep a staff member's action on an order (the console's retry) in
        its story, as a delivery row of its own (``CONSOLE ...``)."""
        return await self._submit(record_action, delivery, order_id)


def _like(term: str) -> str:
    """``term`` for a LIKE pattern: its wildcards matched as themselves."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
