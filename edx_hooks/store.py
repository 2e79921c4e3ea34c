"""The database: schema, and every SQL statement edx-hooks runs.

Writes go through one writer task that commits everything queued so far in a
single transaction (group commit): a request hands its rows over and is
answered only after the transaction holding them is committed, so durability
is that of a per-request commit at a fraction of the cost. Reads use their
own connections; SQLite runs in WAL mode so they never wait for the writer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("edx_hooks.store")

PENDING, ENROLLED, FAILED = "pending", "enrolled", "failed"

#: What is kept of a rejected delivery's body: enough to diagnose it, not
#: enough for a flood of forgeries to fill the disk.
REJECTED_BODY_KEEP = 64 * 1024

metadata = sa.MetaData()

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("endpoint", sa.String(200), nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False, index=True),
    sa.Column("client_ip", sa.String(64)),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("body_size", sa.Integer, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("shop", sa.String(255)),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), index=True),
    # Lets one multi-row INSERT ... RETURNING report the ids in the order of
    # the rows (SQLite alone does not promise that order): without it
    # SQLAlchemy falls back to one INSERT per row.
    sa.insert_sentinel("sentinel"),
)

orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("shop", sa.String(255), nullable=False),
    sa.Column("external_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("provider", "shop", "external_id", name="uq_order"),
    sa.insert_sentinel("sentinel"),
)

items = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
    sa.Column("external_id", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(255)),
    sa.Column("email", sa.String(320)),
    sa.Column("course_id", sa.String(255)),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime),
    sa.UniqueConstraint("order_id", "external_id", name="uq_item"),
    sa.insert_sentinel("sentinel"),
)


def utcnow() -> dt.datetime:
    """Naive UTC: SQLite keeps no zone, and every timestamp here is UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class NewDelivery:
    provider: str
    endpoint: str
    received_at: dt.datetime
    client_ip: str | None
    headers: dict[str, str]
    body: bytes
    status: int
    reason: str
    shop: str | None = None


@dataclass
class NewItem:
    external_id: str
    sku: str | None
    email: str | None
    course_id: str | None = None
    #: set when the storefront already knows the item cannot be enrolled
    failure: str | None = None


@dataclass
class NewOrder:
    provider: str
    shop: str
    external_id: str
    name: str
    items: list[NewItem] = field(default_factory=list)


@dataclass
class Recorded:
    delivery_id: int
    order_id: int | None = None
    #: ids of the line items this delivery added in state pending
    new_pending: list[int] = field(default_factory=list)
    #: (id, reason) of the line items this delivery added already failed
    new_failed: list[tuple[int, str]] = field(default_factory=list)
    order_existed: bool = False


# --- statements, built once: building and cache-keying a statement costs more
# CPU than SQLite takes to run it.

_FIND_ORDERS = sa.select(orders.c.id, orders.c.provider, orders.c.shop, orders.c.external_id) \
    .where(sa.tuple_(orders.c.provider, orders.c.shop, orders.c.external_id)
           .in_(sa.bindparam("keys", expanding=True)))
_INSERT_ORDERS = orders.insert().returning(orders.c.id, sort_by_parameter_order=True)
_TOUCH_ORDERS = orders.update().where(orders.c.id.in_(sa.bindparam("ids", expanding=True))) \
    .values(updated_at=sa.bindparam("now"))
_KNOWN_ITEMS = sa.select(items.c.order_id, items.c.external_id) \
    .where(items.c.order_id.in_(sa.bindparam("ids", expanding=True)))
_INSERT_DELIVERIES = deliveries.insert().returning(deliveries.c.id,
                                                   sort_by_parameter_order=True)
_INSERT_ITEMS = items.insert().returning(items.c.id, sort_by_parameter_order=True)
#: SET whatever columns the parameters name, on an item that is still pending
_UPDATE_PENDING = items.update().where(items.c.id == sa.bindparam("item_id"),
                                       items.c.state == PENDING)
_ITEMS_FOR_JOB = (
    sa.select(items, orders.c.name.label("order_name"),
              orders.c.external_id.label("order_external_id"), orders.c.provider, orders.c.shop)
    .join(orders, items.c.order_id == orders.c.id)
    .where(items.c.id == sa.bindparam("item_id")))


# --- write operations: plain functions on a sync connection, run by the writer.

def _chunks(values: list, size: int = 400) -> Iterator[list]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _record_many(conn: Connection,
                 requests: list[tuple[NewDelivery, NewOrder | None]]) -> list[Recorded]:
    """Store a batch of deliveries with their orders and new line items.

    A handful of statements for the whole batch, whatever its size: this is
    what lets one process accept more than a thousand orders a second.
    Deliveries of the same order in one batch are handled in arrival order.
    """
    def key(order: NewOrder) -> tuple[str, str, str]:
        return order.provider, order.shop, order.external_id

    wanted = list(dict.fromkeys(key(o) for _, o in requests if o is not None))
    order_ids: dict[tuple[str, str, str], int] = {}
    for chunk in _chunks(wanted):
        for row in conn.execute(_FIND_ORDERS, {"keys": chunk}):
            order_ids[tuple(row[1:])] = row[0]
    stored_before = set(order_ids)

    new_orders = {}
    for d, o in requests:
        if o is not None and key(o) not in order_ids and key(o) not in new_orders:
            new_orders[key(o)] = dict(provider=o.provider, shop=o.shop,
                                      external_id=o.external_id, name=o.name[:255],
                                      created_at=d.received_at, updated_at=d.received_at)
    if new_orders:
        inserted = conn.execute(_INSERT_ORDERS, list(new_orders.values()))
        order_ids.update(zip(new_orders, inserted.scalars(), strict=True))
    if stored_before:
        conn.execute(_TOUCH_ORDERS, {"ids": [order_ids[k] for k in stored_before],
                                     "now": max(d.received_at for d, _ in requests)})

    known: set[tuple[int, str]] = set()
    for chunk in _chunks([order_ids[k] for k in stored_before]):
        known.update(tuple(r) for r in conn.execute(_KNOWN_ITEMS, {"ids": chunk}))

    delivery_rows = []
    for d, o in requests:
        body = d.body if d.status < 300 else d.body[:REJECTED_BODY_KEEP]
        delivery_rows.append(dict(
            provider=d.provider, endpoint=d.endpoint, received_at=d.received_at,
            client_ip=d.client_ip, headers=json.dumps(d.headers, ensure_ascii=False),
            body=body, body_size=len(d.body), status=d.status, reason=d.reason[:200],
            shop=d.shop, order_id=order_ids[key(o)] if o is not None else None))
    delivery_ids = conn.execute(_INSERT_DELIVERIES, delivery_rows).scalars().all()

    records = [Recorded(delivery_id=i) for i in delivery_ids]
    item_rows, owners = [], []
    seen: set[tuple[str, str, str]] = set()
    for rec, (d, o) in zip(records, requests, strict=True):
        if o is None:
            continue
        rec.order_id = order_ids[key(o)]
        rec.order_existed = key(o) in stored_before or key(o) in seen
        seen.add(key(o))
        for item in o.items:
            if (rec.order_id, item.external_id) in known:
                continue
            known.add((rec.order_id, item.external_id))
            item_rows.append(dict(
                order_id=rec.order_id, external_id=item.external_id, sku=item.sku,
                email=item.email, course_id=item.course_id,
                state=FAILED if item.failure else PENDING, reason=item.failure, attempts=0,
                created_at=d.received_at, updated_at=d.received_at,
                next_attempt_at=None if item.failure else d.received_at))
            owners.append((rec, item.failure))
    if item_rows:
        item_ids = conn.execute(_INSERT_ITEMS, item_rows).scalars().all()
        for item_id, (rec, failure) in zip(item_ids, owners, strict=True):
            if failure:
                rec.new_failed.append((item_id, failure))
            else:
                rec.new_pending.append(item_id)
    return records


def _each(op: Callable[..., Any]) -> Callable[[Connection, list[tuple]], list[Any]]:
    """A batch operation that applies ``op`` to each set of arguments in turn."""
    def batch(conn: Connection, calls: list[tuple]) -> list[Any]:
        return [op(conn, *args) for args in calls]
    batch.__name__ = op.__name__
    return batch


@_each
def _update_item(conn: Connection, item_id: int, values: dict[str, Any]) -> bool:
    """Change a line item that is still pending; False if it no longer is."""
    return conn.execute(_UPDATE_PENDING,
                        {"item_id": item_id, "updated_at": utcnow(), **values}).rowcount == 1


@_each
def _retry_failed(conn: Connection, item_ids: list[int] | None,
                  order_ids: list[int] | None) -> list[int]:
    query = sa.select(items.c.id).where(items.c.state == FAILED)
    if item_ids is not None:
        query = query.where(items.c.id.in_(item_ids))
    if order_ids is not None:
        query = query.where(items.c.order_id.in_(order_ids))
    ids = list(conn.execute(query.order_by(items.c.id)).scalars())
    if ids:
        now = utcnow()
        conn.execute(items.update().where(items.c.id.in_(ids)).values(
            state=PENDING, attempts=0, reason="retry requested by an operator",
            next_attempt_at=now, updated_at=now))
    return ids


@dataclass
class _Write:
    #: a batch operation: op(connection, [args, ...]) -> [result, ...]
    op: Callable[[Connection, list[tuple]], list[Any]]
    args: tuple
    future: asyncio.Future


class Store:
    """Owns the engine and the writer task; every query is a method here."""

    def __init__(self, url: str, sqlite_synchronous: str = "full",
                 after_commit: Callable[[list[int]], None] | None = None):
        """``after_commit`` is called with the ids of the line items each
        committed batch added in state pending, before any request waiting
        on that batch is answered."""
        self.url = url
        self.after_commit = after_commit
        #: for reads; writes go through the writer task and its own engine
        self.engine: AsyncEngine = create_async_engine(url)
        self._write_engine: AsyncEngine = create_async_engine(url, pool_size=1, max_overflow=0)
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        if self.engine.dialect.name == "sqlite":
            level = sqlite_synchronous.upper()
            for engine in (self.engine, self._write_engine):
                @sa.event.listens_for(engine.sync_engine, "connect")
                def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute(f"PRAGMA synchronous={level}")
                    cur.execute("PRAGMA busy_timeout=10000")
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.close()

            # The writer takes the write lock when its transaction begins, not
            # at its first INSERT: what it reads (existing orders, the last
            # ids) cannot change before it writes. SQLAlchemy's documented
            # recipe for the sqlite drivers' own BEGIN handling.
            @sa.event.listens_for(self._write_engine.sync_engine, "connect")
            def _no_driver_begin(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None

            @sa.event.listens_for(self._write_engine.sync_engine, "begin")
            def _begin_immediate(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    async def start(self) -> None:
        async with self._write_engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close the connections."""
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        await self._write_engine.dispose()
        await self.engine.dispose()

    # -- the writer

    async def _submit(self, op: Callable[[Connection, list[tuple]], list[Any]],
                      *args: Any) -> Any:
        if self._writer is None or self._writer.done():
            raise RuntimeError("store is not running")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(op, args, fut))
        return await fut

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            stopping = None in batch
            writes = [w for w in batch if w is not None]
            if writes:
                await self._commit(writes)

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
            async with self._write_engine.begin() as conn:
                results = await conn.run_sync(run)
        except Exception:
            if len(writes) == 1:
                log.exception("event=store.write_failed op=%s", writes[0].op.__name__)
                if not writes[0].future.done():
                    writes[0].future.set_exception(RuntimeError("database write failed"))
                return
            # One bad write must not sink its neighbours: commit each alone.
            for w in writes:
                await self._commit([w])
            return
        pending = [i for _, r in results if isinstance(r, Recorded) for i in r.new_pending]
        if pending and self.after_commit is not None:
            try:
                self.after_commit(pending)
            except Exception:
                # Committed all the same: the scheduler's sweep gives these
                # items their job.
                log.exception("event=schedule.failed items=%d", len(pending))
        for w, result in results:
            if not w.future.done():
                w.future.set_result(result)

    # -- writes

    async def record(self, delivery: NewDelivery, order: NewOrder | None = None) -> Recorded:
        """Store a delivery and, when it was accepted, its order and new line items."""
        return await self._submit(_record_many, delivery, order)

    async def set_course(self, item_id: int, course_id: str) -> bool:
        return await self._submit(_update_item, item_id, {"course_id": course_id})

    async def mark_enrolled(self, item_id: int, attempts: int) -> bool:
        return await self._submit(_update_item, item_id, dict(
            state=ENROLLED, attempts=attempts, reason=None, next_attempt_at=None))

    async def mark_failed(self, item_id: int, attempts: int, reason: str) -> bool:
        return await self._submit(_update_item, item_id, dict(
            state=FAILED, attempts=attempts, reason=reason, next_attempt_at=None))

    async def mark_retry(self, item_id: int, attempts: int, reason: str,
                         next_attempt_at: dt.datetime) -> bool:
        return await self._submit(_update_item, item_id, dict(
            attempts=attempts, reason=reason, next_attempt_at=next_attempt_at))

    async def retry_failed(self, item_ids: list[int] | None = None,
                           order_ids: list[int] | None = None) -> list[int]:
        """Set failed line items pending again, attempts from zero; return their ids.

        ``None`` for both: every failed item.
        """
        return await self._submit(_retry_failed, item_ids, order_ids)

    # -- reads

    async def item_for_job(self, item_id: int) -> dict[str, Any] | None:
        """The line item with what the enrollment job needs of its order."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_ITEMS_FOR_JOB, {"item_id": item_id})).mappings().first()
        return dict(row) if row else None

    async def pending_items(self) -> list[tuple[int, dt.datetime | None]]:
        """Every line item not yet enrolled or failed, with when it is due."""
        query = (sa.select(items.c.id, items.c.next_attempt_at)
                 .where(items.c.state == PENDING).order_by(items.c.id))
        async with self.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(query)).all()]

    async def order_items(self, provider: str, shop: str, external_id: str) -> list[dict]:
        query = (sa.select(items).join(orders, items.c.order_id == orders.c.id)
                 .where(orders.c.provider == provider, orders.c.shop == shop,
                        orders.c.external_id == external_id)
                 .order_by(items.c.id))
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def deliveries(self, limit: int = 100) -> list[dict]:
        query = sa.select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]


def order_state(item_states: list[str]) -> str:
    """An order's state follows from its items'."""
    if not item_states:
        return FAILED
    if any(s == PENDING for s in item_states):
        return PENDING
    if any(s == FAILED for s in item_states):
        return FAILED
    return ENROLLED
