"""The database: the engines, the writer task that group-commits every write,
and the read queries."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .. import logs
from .migrate import SchemaError, Upgrade, prepare, prepare_sqlite, sqlite_path
from .schema import (
    ACTIVE,
    ENROLLED,
    FAILED,
    ITEMS_FOR_JOB,
    UNENROLL_FAILED,
    UNENROLLED,
    NewDelivery,
    NewOrder,
    Recorded,
    Unenroll,
    deliveries,
    items,
    order_state,
    orders,
    unenroll_requests,
    utcnow,
)
from .writes import (
    beat,
    delete_rejected,
    prune,
    record_enrolled,
    record_many,
    retry_failed,
    update_item,
)

log = logging.getLogger("edx_hooks.store")

#: what is kept of a rejected delivery's body once the budget is spent
REJECTED_HEAD = 1024


def sqlite_pragmas(engine: sa.Engine, synchronous: str) -> None:
    """WAL, the given ``synchronous`` level and a busy timeout on every new
    connection of ``engine`` (a synchronous engine, or an async one's)."""
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def create_private(path: str) -> None:
    """Create an SQLite file readable by this user only, if it does not exist
    yet; SQLite gives its WAL and shared-memory files the same permissions."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        pass  # it exists; or it cannot be created, which opening it will report


class StoreClosed(RuntimeError):
    """A write asked of a store that is closing or closed."""


@dataclass
class _Write:
    #: a batch operation: op(connection, [args, ...]) -> [result, ...]
    op: Callable[[Connection, list[tuple]], list[Any]]
    args: tuple
    future: asyncio.Future


class Store:
    """Owns the engine and the writer task; every query is a method here."""

    def __init__(self, url: str, sqlite_synchronous: str = "full",
                 after_commit: Callable[[list[int]], None] | None = None,
                 rejected_budget: int = 32 * 1024 * 1024):
        """``after_commit`` is called with the ids of the line items each
        committed batch added in state pending, before any request waiting
        on that batch is answered. ``rejected_budget``: bytes of rejected
        deliveries' bodies kept in all (beyond it, only their first
        :data:`REJECTED_HEAD` bytes)."""
        self.url = url
        self.after_commit = after_commit
        self.rejected_budget = rejected_budget
        #: bytes of rejected bodies kept now: counted at start, added to as
        #: they come, subtracted from as retention deletes them
        self.rejected_bytes = 0
        self._budget_warned_at: float | None = None
        self._trimmed_since_warning = 0
        #: the writer connection's PRAGMA data_version when last read
        self._data_version: int | None = None
        #: for reads; writes go through the writer task and its own engine
        self.engine: AsyncEngine = create_async_engine(url)
        #: writes to a server database: the async engine, one connection
        self._write_engine: AsyncEngine | None = None
        #: SQLite: the writer runs each whole batch in one thread of its own,
        #: through SQLAlchemy's synchronous engine on the same file. One hop
        #: per batch, where the async driver makes two or three per statement.
        self._sync_writer: sa.Engine | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        if self.engine.dialect.name != "sqlite":
            self._write_engine = create_async_engine(url, pool_size=1, max_overflow=0)
        else:
            self._sync_writer = sa.create_engine(
                self.engine.url.set(drivername="sqlite"), pool_size=1, max_overflow=0,
                connect_args={"check_same_thread": False})
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="edx-hooks-writer")
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._closing = False
        #: what start() found and did to the schema
        self.upgrade: Upgrade | None = None
        if self.engine.dialect.name == "sqlite":
            for sync_engine in (self.engine.sync_engine, self._sync_writer):
                sqlite_pragmas(sync_engine, sqlite_synchronous)

            # The writer takes the write lock when its transaction begins, not
            # at its first INSERT: what it reads (existing orders, the last
            # ids) cannot change before it writes. SQLAlchemy's documented
            # recipe for the sqlite drivers' own BEGIN handling.
            @sa.event.listens_for(self._sync_writer, "connect")
            def _no_driver_begin(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None

            @sa.event.listens_for(self._sync_writer, "begin")
            def _begin_immediate(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    async def start(self, create: bool = True) -> None:
        """Open the database and start the writer.

        ``create`` (``edx-hooks serve``): create a new database, upgrade an
        older schema in place. Without it (every other command) a database
        that does not exist, or is not at the current schema, raises
        :class:`SchemaError` and is left as it was.
        """
        path = sqlite_path(self.engine.url)
        if path is not None and not os.path.exists(path):
            if not create:
                raise SchemaError(f"database {path} does not exist: check database.url "
                                  "(only `edx-hooks serve` creates it)")
            create_private(path)
        if self._sync_writer is not None:
            self.upgrade = await asyncio.get_running_loop().run_in_executor(
                self._executor, prepare_sqlite, self._sync_writer, create)
        else:
            async with self._write_engine.begin() as conn:
                self.upgrade = await conn.run_sync(prepare, create, "the database")
        self._restrict_files()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        await self.count_rejected_bytes()
        await self.written_elsewhere()  # from here on, another process's write is seen

    def _restrict_files(self) -> None:
        """Make an SQLite database created by an older version, or by hand,
        readable by this user only, as a new one is."""
        path = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not path or path == ":memory:":
            return
        for name in (path, path + "-wal", path + "-shm"):
            try:
                mode = os.stat(name).st_mode & 0o777
                if mode & 0o077:
                    os.chmod(name, mode & 0o700)
                    logs.event(log, logs.WARNING, "file.permissions_fixed", path=name,
                               was=oct(mode), now=oct(mode & 0o700))
            except FileNotFoundError:
                continue
            except OSError:
                logs.event(log, logs.WARNING, "file.permissions", path=name,
                           fix=f"chmod 600 {name}: it holds orders and learner emails")

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close the connections.
        From the moment this is called, a new write fails at once with
        :class:`StoreClosed`."""
        self._closing = True
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
            self._writer = None
        if self._write_engine is not None:
            await self._write_engine.dispose()
        await self.engine.dispose()
        if self._sync_writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor,
                                                             self._sync_writer.dispose)
            self._executor.shutdown(wait=True)

    # -- the writer

    async def _submit(self, op: Callable[[Connection, list[tuple]], list[Any]],
                      *args: Any) -> Any:
        if self._closing or self._writer is None or self._writer.done():
            raise StoreClosed("the database is closed: edx-hooks is stopping")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(op, args, fut))
        return await fut

    async def _write_loop(self) -> None:
        """Commit what is queued, batch after batch, until close() says stop
        (nothing can be queued after that). Should the loop itself fail, every
        write still queued is failed rather than left waiting forever."""
        try:
            stopping = False
            while not stopping:
                batch = [await self._queue.get()]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                stopping = None in batch
                writes = [w for w in batch if w is not None]
                if writes:
                    await self._commit(writes)
        finally:
            while not self._queue.empty():
                left = self._queue.get_nowait()
                if left is not None and not left.future.done():
                    left.future.set_exception(StoreClosed("the database was closed"))

    def _in_writer_thread(self, run: Callable[[Connection], Any]) -> Any:
        with self._sync_writer.begin() as conn:
            return run(conn)

    async def _commit(self, writes: list[_Write]) -> None:
        """Commit a batch in one transaction; then resolve each write's future."""
        groups: dict[Callable, list[_Write]] = {}
        for w in writes:
            groups.setdefault(w.op, []).append(w)

        def run(conn: Connection) -> list[tuple[_Write, Any]]:
            done = []
            for op, group in groups.items():
                done += zip(group, op(conn, [w.args for w in group]), strict=True)
            return done

        try:
            if self._sync_writer is not None:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._in_writer_thread, run)
            else:
                async with self._write_engine.begin() as conn:
                    results = await conn.run_sync(run)
        except Exception:
            if len(writes) == 1:
                logs.event(log, logs.ERROR, "store.write_failed", op=writes[0].op.__name__,
                           exc_info=True)
                if not writes[0].future.done():
                    writes[0].future.set_exception(RuntimeError("database write failed"))
                return
            # One bad write must not sink its neighbours: commit each alone.
            for w in writes:
                await self._commit([w])
            return
        pending = [i for _, r in results if isinstance(r, Recorded)
                   for i in r.new_pending + r.unenroll_now]
        if pending and self.after_commit is not None:
            try:
                self.after_commit(pending)
            except Exception:
                # Committed all the same: the scheduler's sweep gives these
                # items their job.
                logs.event(log, logs.ERROR, "schedule.failed", items=len(pending), exc_info=True)
        for w, result in results:
            if not w.future.done():
                w.future.set_result(result)

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
        :data:`REJECTED_HEAD` bytes only. Warned once an hour, not per request."""
        if len(delivery.body) > REJECTED_HEAD \
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
        committed to the database since the last call. SQLite only: PRAGMA
        data_version on the writer's own connection, which changes with every
        commit but that connection's own; False elsewhere."""
        if self._sync_writer is None or self._closing:
            return False

        def read() -> int:
            raw = self._sync_writer.raw_connection()
            try:
                return raw.cursor().execute("PRAGMA data_version").fetchone()[0]
            finally:
                raw.close()

        version = await asyncio.get_running_loop().run_in_executor(self._executor, read)
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed

    async def record_enrolled(self, item_id: int, attempts: int) -> str | None:
        """Record a pending item's confirmed enrollment: ``enrolled``, or
        ``unenroll-pending`` if a refund asked for it meanwhile (atomic)."""
        return await self._submit(record_enrolled, item_id, attempts)

    async def update(self, item_id: int, expected: str, **values: Any) -> bool:
        """Change a line item still in the ``expected`` state; False if it is not."""
        return await self._submit(update_item, item_id, values, expected)

    async def retry_failed(self, item_ids: list[int] | None = None,
                           order_ids: list[int] | None = None) -> list[int]:
        """Set failed line items pending again, attempts from zero; return their ids.

        ``None`` for both: every failed item.
        """
        return await self._submit(retry_failed, item_ids, order_ids)

    async def prune(self, before: dt.datetime) -> int:
        """Remove the raw body and headers of finished deliveries; return how many."""
        return await self._submit(prune, before)

    async def delete_rejected(self, before: dt.datetime) -> int:
        """Delete rejected deliveries received before ``before``; return how many."""
        deleted, kept = await self._submit(delete_rejected, before)
        self.rejected_bytes = max(0, self.rejected_bytes - kept)
        return deleted

    async def check_writable(self) -> None:
        """Commit a write through the writer; raises if the database refuses it."""
        await self._submit(beat)

    # -- reads

    async def item_for_job(self, item_id: int) -> dict[str, Any] | None:
        """The line item with what the enrollment job needs of its order."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(ITEMS_FOR_JOB, {"item_id": item_id})).mappings().first()
        return dict(row) if row else None

    async def items_by_id(self, item_ids: list[int]) -> list[dict[str, Any]]:
        """These line items' state and reason, with their order's provider and id."""
        return await self._all(
            sa.select(items.c.id, items.c.state, items.c.reason, items.c.attempts,
                      orders.c.provider, orders.c.external_id.label("order_external_id"))
            .join(orders, items.c.order_id == orders.c.id)
            .where(items.c.id.in_(item_ids)).order_by(items.c.id))

    async def pending_items(self) -> list[tuple[int, dt.datetime | None]]:
        """Every line item not yet enrolled or failed, with when it is due."""
        query = (sa.select(items.c.id, items.c.next_attempt_at)
                 .where(items.c.state.in_(ACTIVE)).order_by(items.c.id))
        async with self.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(query)).all()]

    async def _all(self, query: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def orders(self, state: str | None = None, since: dt.datetime | None = None,
                     limit: int = 1000) -> list[dict[str, Any]]:
        """Orders, newest first, with their items counted by state, the
        order's state and its latest error."""
        counts = (sa.select(
            items.c.order_id, sa.func.count().label("items"),
            sa.func.sum(sa.case((items.c.state.in_(ACTIVE), 1), else_=0)).label("pending"),
            sa.func.sum(sa.case((items.c.state.in_((FAILED, UNENROLL_FAILED)), 1),
                                else_=0)).label("failed"),
            sa.func.sum(sa.case((items.c.state == ENROLLED, 1), else_=0)).label("enrolled"),
            sa.func.sum(sa.case((items.c.state == UNENROLLED, 1), else_=0))
            .label("unenrolled"),
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
                           last_error.label("last_error"))
                 .outerjoin(counts, counts.c.order_id == orders.c.id)
                 .order_by(orders.c.created_at.desc(), orders.c.id.desc()))
        if since is not None:
            query = query.where(orders.c.created_at >= since)
        found = []
        for row in await self._all(query):
            row["state"] = order_state(row)
            if state is None or row["state"] == state:
                found.append(row)
            if len(found) >= limit:
                break
        return found

    async def order_story(self, provider: str, external_id: str) -> list[dict[str, Any]]:
        """Everything about the orders with this provider and id (one per shop):
        the order, its deliveries and its line items."""
        found = await self._all(sa.select(orders).where(orders.c.provider == provider,
                                                        orders.c.external_id == external_id))
        for order in found:
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

    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        rows = await self._all(sa.select(deliveries).where(deliveries.c.id == delivery_id))
        return rows[0] if rows else None

    async def health(self) -> dict[str, Any]:
        """How many items are pending and failed, and the oldest pending one's age."""
        query = sa.select(
            sa.func.sum(sa.case((items.c.state.in_(ACTIVE), 1), else_=0)),
            sa.func.sum(sa.case((items.c.state.in_((FAILED, UNENROLL_FAILED)), 1), else_=0)),
            sa.func.min(sa.case((items.c.state.in_(ACTIVE),
                                 sa.func.coalesce(items.c.pending_since, items.c.created_at)))))
        async with self.engine.connect() as conn:
            pending, failed, oldest = (await conn.execute(query)).one()
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        return {"pending": pending or 0, "failed": failed or 0,
                "oldest_pending_seconds": round(age, 1)}
