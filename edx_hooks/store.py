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
from collections.abc import Callable
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


# --- write operations: plain functions on a sync connection, run by the writer.

def _insert_delivery(conn: Connection, d: NewDelivery, order_id: int | None) -> int:
    body = d.body if d.status < 300 else d.body[:REJECTED_BODY_KEEP]
    return conn.execute(deliveries.insert().values(
        provider=d.provider, endpoint=d.endpoint, received_at=d.received_at,
        client_ip=d.client_ip, headers=json.dumps(d.headers, ensure_ascii=False),
        body=body, body_size=len(d.body), status=d.status, reason=d.reason[:200],
        shop=d.shop, order_id=order_id,
    )).inserted_primary_key[0]


def _record(conn: Connection, d: NewDelivery, order: NewOrder | None) -> Recorded:
    if order is None:
        return Recorded(delivery_id=_insert_delivery(conn, d, None))
    now = d.received_at
    key = (orders.c.provider == order.provider) & (orders.c.shop == order.shop) \
        & (orders.c.external_id == order.external_id)
    order_id = conn.execute(sa.select(orders.c.id).where(key)).scalar()
    existed = order_id is not None
    if existed:
        conn.execute(orders.update().where(orders.c.id == order_id).values(updated_at=now))
    else:
        order_id = conn.execute(orders.insert().values(
            provider=order.provider, shop=order.shop, external_id=order.external_id,
            name=order.name[:255], created_at=now, updated_at=now,
        )).inserted_primary_key[0]
    known = set(conn.execute(
        sa.select(items.c.external_id).where(items.c.order_id == order_id)).scalars())
    rec = Recorded(delivery_id=_insert_delivery(conn, d, order_id), order_id=order_id,
                   order_existed=existed)
    for item in order.items:
        if item.external_id in known:
            continue
        known.add(item.external_id)
        item_id = conn.execute(items.insert().values(
            order_id=order_id, external_id=item.external_id, sku=item.sku, email=item.email,
            course_id=item.course_id, state=FAILED if item.failure else PENDING,
            reason=item.failure, attempts=0, created_at=now, updated_at=now,
            next_attempt_at=None if item.failure else now,
        )).inserted_primary_key[0]
        if item.failure:
            rec.new_failed.append((item_id, item.failure))
        else:
            rec.new_pending.append(item_id)
    return rec


def _update_item(conn: Connection, item_id: int, only_if_pending: bool, **values: Any) -> bool:
    stmt = items.update().where(items.c.id == item_id)
    if only_if_pending:
        stmt = stmt.where(items.c.state == PENDING)
    return conn.execute(stmt.values(updated_at=utcnow(), **values)).rowcount == 1


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
    op: Callable[..., Any]  # op(connection, *args, **kwargs)
    args: tuple
    kwargs: dict
    future: asyncio.Future


class Store:
    """Owns the engine and the writer task; every query is a method here."""

    def __init__(self, url: str, sqlite_synchronous: str = "full"):
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url)
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        if self.engine.dialect.name == "sqlite":
            level = sqlite_synchronous.upper()

            @sa.event.listens_for(self.engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={level}")
                cur.execute("PRAGMA busy_timeout=10000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close the connections."""
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        await self.engine.dispose()

    # -- the writer

    async def _submit(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._writer is None or self._writer.done():
            raise RuntimeError("store is not running")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(op, args, kwargs, fut))
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
        try:
            async with self.engine.begin() as conn:
                results = await conn.run_sync(
                    lambda c: [w.op(c, *w.args, **w.kwargs) for w in writes])
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
        for w, result in zip(writes, results, strict=True):
            if not w.future.done():
                w.future.set_result(result)

    # -- writes

    async def record(self, delivery: NewDelivery, order: NewOrder | None = None) -> Recorded:
        """Store a delivery and, when it was accepted, its order and new line items."""
        return await self._submit(_record, delivery, order)

    async def set_course(self, item_id: int, course_id: str) -> bool:
        return await self._submit(_update_item, item_id, True, course_id=course_id)

    async def mark_enrolled(self, item_id: int, attempts: int) -> bool:
        return await self._submit(_update_item, item_id, True, state=ENROLLED, attempts=attempts,
                                  reason=None, next_attempt_at=None)

    async def mark_failed(self, item_id: int, attempts: int, reason: str) -> bool:
        return await self._submit(_update_item, item_id, True, state=FAILED, attempts=attempts,
                                  reason=reason, next_attempt_at=None)

    async def mark_retry(self, item_id: int, attempts: int, reason: str,
                         next_attempt_at: dt.datetime) -> bool:
        return await self._submit(_update_item, item_id, True, attempts=attempts, reason=reason,
                                  next_attempt_at=next_attempt_at)

    async def retry_failed(self, item_ids: list[int] | None = None,
                           order_ids: list[int] | None = None) -> list[int]:
        """Set failed line items pending again, attempts from zero; return their ids.

        ``None`` for both: every failed item.
        """
        return await self._submit(_retry_failed, item_ids, order_ids)

    # -- reads

    async def item_for_job(self, item_id: int) -> dict[str, Any] | None:
        """The line item with what the enrollment job needs of its order."""
        query = (sa.select(items, orders.c.name.label("order_name"),
                           orders.c.external_id.label("order_external_id"),
                           orders.c.provider, orders.c.shop)
                 .join(orders, items.c.order_id == orders.c.id)
                 .where(items.c.id == item_id))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
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
