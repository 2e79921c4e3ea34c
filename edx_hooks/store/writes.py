"""Write operations: each takes a sync connection and the arguments of every
write of one kind in the batch, and returns one result per write. The writer
(:mod:`edx_hooks.store.database`) runs them all in one transaction."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import (
    AWAITING_ACCOUNT,
    ENROLLED,
    FAILED,
    KNOWN_ITEMS,
    NOT_A_COURSE,
    NOT_ENROLLED,
    PENDING,
    RELEASE_ORDERS,
    SCHEDULED,
    TOUCH_ORDERS,
    UNENROLL_FAILED,
    UNENROLL_PENDING,
    UNENROLLED,
    UNKNOWN,
    UPDATE_ITEM,
    NewDelivery,
    NewOrder,
    Recorded,
    Unenroll,
    deliveries,
    heartbeat,
    items,
    orders,
    reconcile_marks,
    unenroll_requests,
    utcnow,
)


def chunks(values: list, size: int = 400) -> Iterator[list]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


#: (table name, columns) -> (the INSERT's SQL, each column's bind processor)
_INSERTS: dict[tuple[str, tuple[str, ...]], tuple[str, list[Callable[[Any], Any] | None]]] = {}


def insert_rows(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` (each naming the same columns) into ``table``; their
    ids, in order.

    Straight through the driver, one short INSERT per row (SQLite's
    ``lastrowid``), its values converted by the columns' own types (a
    datetime is stored as SQLAlchemy stores it). SQLAlchemy's multi-row
    INSERT ... RETURNING, with the sentinel column it sorts the ids by, spent
    more Python building and sorting parameters than SQLite spent on the
    rows: these INSERTs are every accepted order's, and the writer shares
    the service's one core (record_many: 180 us an order, 130 with this)."""
    columns = tuple(rows[0])
    key = (table.name, columns)
    if key not in _INSERTS:
        dialect = conn.dialect
        _INSERTS[key] = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns])
    sql, processors = _INSERTS[key]
    cursor = conn.connection.driver_connection.cursor()
    ids = []
    try:
        for row in rows:
            values = [row[c] for c in columns]
            cursor.execute(sql, [value if process is None or value is None else process(value)
                                 for process, value in zip(processors, values, strict=True)])
            ids.append(cursor.lastrowid)
    finally:
        cursor.close()
    return ids


def find_by_order(conn: Connection, table: sa.Table, columns: tuple[str, ...], order: str,
                  keys: list[tuple[str, str, str]], also: str = "") -> Iterator[tuple]:
    """The ``columns`` of the rows of ``table`` whose (provider, shop,
    ``order`` column) is one of ``keys``, and, if given, that match the SQL
    condition ``also``; values converted by the columns' types.

    One query per shop, ``provider = ? AND shop = ? AND <order> IN (...)``,
    an index search: the row-value ``IN (VALUES ...)`` that SQLAlchemy renders
    for a tuple made SQLite scan the whole table (or its index) as soon as a
    batch held two orders, which grew with every order stored. Straight
    through the driver, as :func:`insert_rows` (record_many: 130 us an
    order, 75 with this, on a fresh database)."""
    by_shop: dict[tuple[str, str], list[str]] = {}
    for provider, shop, external_id in keys:
        by_shop.setdefault((provider, shop), []).append(external_id)
    dialect = conn.dialect
    processors = [table.c[c].type.dialect_impl(dialect).result_processor(dialect, None)
                  for c in columns]
    cursor = conn.connection.driver_connection.cursor()
    try:
        for (provider, shop), external_ids in by_shop.items():
            for chunk in chunks(external_ids):
                sql = (f"SELECT {', '.join(columns)} FROM {table.name} "
                       f"WHERE provider = ? AND shop = ? AND {order} IN "
                       f"({', '.join('?' * len(chunk))})" + (f" AND {also}" if also else ""))
                for row in cursor.execute(sql, (provider, shop, *chunk)).fetchall():
                    yield tuple(value if process is None or value is None else process(value)
                                for process, value in zip(processors, row, strict=True))
    finally:
        cursor.close()


def record_many(conn: Connection,
                requests: list[tuple[NewDelivery, NewOrder | None, Unenroll | None]]
                ) -> list[Recorded]:
    """Store a batch of deliveries with their orders, new line items and
    unenroll requests.

    A handful of statements for the whole batch, whatever its size: this is
    what lets one process accept more than a thousand orders a second.
    Deliveries of the same order in one batch are handled in arrival order.
    A new line item that a refund or cancellation received earlier (or in
    this batch) names is stored as not-enrolled: never enrolled.
    """
    def key(order: NewOrder) -> tuple[str, str, str]:
        return order.provider, order.shop, order.external_id

    def target(u: Unenroll) -> tuple[str, str, str]:
        return u.provider, u.shop, u.order_external_id

    unenrolls = [u for _, _, u in requests]
    requests = [(d, o) for d, o, _ in requests]
    wanted = list(dict.fromkeys(key(o) for _, o in requests if o is not None))
    targets = [target(u) for u in unenrolls if u is not None]
    order_ids: dict[tuple[str, str, str], int] = {}
    for row in find_by_order(conn, orders, ("id", "provider", "shop", "external_id"),
                             "external_id", list(dict.fromkeys(wanted + targets))):
        order_ids[tuple(row[1:])] = row[0]
    stored_before = set(order_ids)

    new_orders = {}
    for d, o in requests:
        if o is not None and key(o) not in order_ids and key(o) not in new_orders:
            new_orders[key(o)] = dict(provider=o.provider, shop=o.shop,
                                      external_id=o.external_id, name=o.name[:255],
                                      created_at=d.received_at, updated_at=d.received_at,
                                      hold=o.hold)
    if new_orders:
        inserted = insert_rows(conn, orders, list(new_orders.values()))
        order_ids.update(zip(new_orders, inserted, strict=True))
    if stored_before:
        conn.execute(TOUCH_ORDERS, {"ids": [order_ids[k] for k in stored_before],
                                    "now": max(d.received_at for d, _ in requests)})
    if stored_before or any(o.hold for _, o in requests if o is not None):
        released = {order_ids[key(o)] for _, o in requests if o is not None and not o.hold}
        if released:
            conn.execute(RELEASE_ORDERS, {"ids": list(released)})

    known: set[tuple[int, str, int]] = set()
    for chunk in chunks([order_ids[k] for k in stored_before]):
        known.update(tuple(r) for r in conn.execute(KNOWN_ITEMS, {"ids": chunk}))

    delivery_rows = []
    for (d, o), u in zip(requests, unenrolls, strict=True):
        about = key(o) if o is not None else (target(u) if u is not None else None)
        delivery_rows.append(dict(
            provider=d.provider, endpoint=d.endpoint, received_at=d.received_at,
            client_ip=d.client_ip, headers=json.dumps(d.headers, ensure_ascii=False),
            body=d.body, body_size=d.body_size, status=d.status, reason=d.reason[:200],
            shop=d.shop, order_id=order_ids.get(about) if about else None))
    delivery_ids = insert_rows(conn, deliveries, delivery_rows)
    records = [Recorded(delivery_id=i) for i in delivery_ids]

    # Refunds and cancellations: every one is kept, known order or not.
    request_rows = [
        dict(provider=u.provider, shop=u.shop, order_external_id=u.order_external_id,
             line_item_id=line, why=u.why[:32], delivery_id=rec.delivery_id,
             requested_at=utcnow(), shop_modified_at=u.modified_at)
        for rec, u in zip(records, unenrolls, strict=True) if u is not None
        for line in (u.line_item_ids if u.line_item_ids is not None else [None])]
    if request_rows:
        conn.execute(unenroll_requests.insert(), request_rows)
    # A delivery showing an order placed (acted on, no hold, not itself a
    # cancellation) lifts the shop's earlier whole-order cancellations that it
    # is newer than: a WooCommerce order can be cancelled unpaid and paid later.
    placed: dict[tuple[str, str, str], dt.datetime] = {}
    for (_, o), u in zip(requests, unenrolls, strict=True):
        if o is not None and u is None and not o.hold and o.modified_at is not None:
            placed[key(o)] = max(o.modified_at, placed.get(key(o), o.modified_at))
    withdrawn, revived = _withdrawn(
        conn, new_orders, order_ids, placed,
        [key(o) for _, o in requests if o is not None and o.items])

    item_rows, owners = [], []
    seen: set[tuple[str, str, str]] = set()
    for rec, (d, o) in zip(records, requests, strict=True):
        if o is None:
            continue
        rec.order_id = order_ids[key(o)]
        rec.order_existed = key(o) in stored_before or key(o) in seen
        seen.add(key(o))
        if o.hold:
            continue  # its items come with the delivery that releases it
        for item in o.items:
            if (rec.order_id, item.external_id, item.part) in known:
                continue
            known.add((rec.order_id, item.external_id, item.part))
            why = withdrawn.get((key(o), item.external_id)) or withdrawn.get((key(o), None))
            if why:
                state, reason = NOT_ENROLLED, f"{why} before it was enrolled: not enrolled"
            elif item.not_a_course:
                state, reason = NOT_A_COURSE, item.not_a_course
            elif item.check_sku:
                state, reason = PENDING, item.failure
            elif item.failure or item.sku_problem:
                state, reason = FAILED, item.failure or item.sku_problem
            else:
                state, reason = PENDING, None
            item_rows.append(dict(
                order_id=rec.order_id, external_id=item.external_id, sku=item.sku,
                email=item.email, course_id=item.course_id, mode=item.mode, part=item.part,
                state=state, reason=reason,
                attempts=0, created_at=d.received_at, updated_at=d.received_at,
                pending_since=d.received_at,
                next_attempt_at=d.received_at if state == PENDING else None))
            owners.append((rec, state, reason))
    if item_rows:
        item_ids = insert_rows(conn, items, item_rows)
        for item_id, (rec, state, reason) in zip(item_ids, owners, strict=True):
            if state == PENDING:
                rec.new_pending.append(item_id)
            elif state == FAILED:
                rec.new_failed.append((item_id, reason))
            else:
                rec.new_not_enrolled.append((item_id, reason))
    for order_key, item_ids in revived.items():  # to the last delivery that placed it
        last = [rec for rec, (_, o) in zip(records, requests, strict=True)
                if o is not None and key(o) == order_key][-1]
        last.new_pending.extend(item_ids)
    for rec, unenroll in zip(records, unenrolls, strict=True):
        order_id = unenroll and order_ids.get(target(unenroll))
        if order_id:
            request_unenroll(conn, rec, order_id, unenroll)
    return records


def _withdrawn(conn: Connection, new_orders: dict, order_ids: dict,
               placed: dict[tuple[str, str, str], dt.datetime], with_items: list[tuple]
               ) -> tuple[dict[tuple[tuple[str, str, str], str | None], str],
                          dict[tuple[str, str, str], list[int]]]:
    """Refunds and cancellations in force for orders that get line items in
    this batch, by (order key, line item id or None for the whole order).

    On the way: a whole-order cancellation that a newer placed delivery
    lifts is marked lifted, and its order's not-enrolled items are pending
    again (returned by order key, to be scheduled); and a new order's early
    requests get its id on their delivery, so that `edx-hooks order` tells
    the whole story."""
    keys = list(dict.fromkeys(with_items + list(new_orders) + list(placed)))
    found: dict[tuple[tuple[str, str, str], str | None], str] = {}
    early: dict[int, list[int]] = {}
    lifted: list[int] = []
    lifted_orders: set[tuple[str, str, str]] = set()
    for (request_id, provider, shop, order, line, why, delivery,
         modified) in find_by_order(conn, unenroll_requests, (
            "id", "provider", "shop", "order_external_id", "line_item_id", "why",
            "delivery_id", "shop_modified_at"), "order_external_id", keys,
            also="lifted_at IS NULL"):
        order_key = (provider, shop, order)
        if line is None and modified is not None and order_key in placed \
                and placed[order_key] > modified:
            lifted.append(request_id)
            lifted_orders.add(order_key)
            continue
        found.setdefault((order_key, line), why)
        if order_key in new_orders and delivery is not None:
            early.setdefault(order_ids[order_key], []).append(delivery)
    for order_id, delivery_ids in early.items():
        conn.execute(deliveries.update().where(deliveries.c.id.in_(delivery_ids),
                                               deliveries.c.order_id.is_(None))
                     .values(order_id=order_id))
    revived: dict[tuple[str, str, str], list[int]] = {}
    if lifted:
        now = utcnow()
        conn.execute(unenroll_requests.update().where(unenroll_requests.c.id.in_(lifted))
                     .values(lifted_at=now))
        for order_key in lifted_orders:
            if (order_key, None) not in found and order_key not in new_orders:
                kept = [line for (key, line) in found if key == order_key]
                revived[order_key] = _revive(conn, order_ids[order_key], kept, now)
    return found, revived


#: what a cancellation that a later status lifts may have left an item in
_UNDONE = (NOT_ENROLLED, UNENROLL_PENDING, UNENROLLED, UNENROLL_FAILED)


def _revive(conn: Connection, order_id: int, refunded: list[str],
            now: dt.datetime) -> list[int]:
    """An order placed again after a cancellation (WooCommerce: a later
    ``date_modified_gmt`` wins): what the cancellation undid or was about to
    undo is enrolled again. Its items that were not enrolled, are being or
    were unenrolled become pending; a pending one forgets the unenrollment
    it was to get after its enrollment. Line items a refund of their own
    still names (``refunded``) stay as they are. Returns the ids that need a
    job."""
    revived = list(conn.execute(
        items.update().where(items.c.order_id == order_id, items.c.state.in_(_UNDONE),
                             items.c.external_id.not_in(refunded))
        .values(state=PENDING, reason=None, attempts=0, next_attempt_at=now,
                unenroll_requested_at=None, pending_since=now, updated_at=now)
        .returning(items.c.id)).scalars())
    conn.execute(items.update().where(items.c.order_id == order_id, items.c.state == PENDING,
                                      items.c.unenroll_requested_at.is_not(None),
                                      items.c.external_id.not_in(refunded))
                 .values(unenroll_requested_at=None, updated_at=now))
    return revived


def request_unenroll(conn: Connection, rec: Recorded, order_id: int,
                     unenroll: Unenroll) -> None:
    """Apply a refund or cancellation to an order's known line items: with
    ``act``, unenroll an enrolled one now and a pending one after its
    enrollment (never racing it; its job skips the enrollment if it has not
    started it). Each once."""
    rec.order_id = order_id
    if not unenroll.act:
        return
    query = sa.select(items.c.id, items.c.external_id, items.c.state,
                      items.c.unenroll_requested_at).where(items.c.order_id == order_id)
    now = utcnow()
    for item_id, external, state, requested in conn.execute(query).all():
        if unenroll.line_item_ids is not None and external not in unenroll.line_item_ids:
            continue
        if state in (ENROLLED, AWAITING_ACCOUNT, UNKNOWN):
            # awaiting-account too: the unenrollment deletes the LMS's
            # allowance, so the activation enrolls no one; unknown too: the
            # LMS may have enrolled it (unenrolling someone not enrolled is
            # a no-op)
            conn.execute(UPDATE_ITEM, {
                "item_id": item_id, "expected": state, "state": UNENROLL_PENDING,
                "attempts": 0, "reason": None, "next_attempt_at": now, "wait_until": None,
                "unenroll_requested_at": now, "pending_since": now, "updated_at": now})
            rec.unenroll_now.append(item_id)
        elif state == PENDING and requested is None:
            conn.execute(UPDATE_ITEM, {"item_id": item_id, "expected": PENDING,
                                       "unenroll_requested_at": now, "updated_at": now})
            rec.unenroll_after.append(item_id)


def each(op: Callable[..., Any]) -> Callable[[Connection, list[tuple]], list[Any]]:
    """A batch operation that applies ``op`` to each set of arguments in turn."""
    def batch(conn: Connection, calls: list[tuple]) -> list[Any]:
        return [op(conn, *args) for args in calls]
    batch.__name__ = op.__name__
    return batch


def record_enrolled(conn: Connection, calls: list[tuple]) -> list[str | None]:
    """Record enrollments the LMS confirmed, each call's arguments
    ``(item_id, expected, state, attempts, next_attempt_at, wait_until)``:
    ``state`` (enrolled, or awaiting-account with its next check and
    deadline), or ``unenroll-pending`` at once when a refund asked for it
    meanwhile: the state and the refund's check in the same statement, so
    that a refund can never be forgotten between the two. Returns, per call,
    the state set (None: the item was no longer ``expected``).

    The outcomes of one bulk call come together and are alike (the same
    expected state, state, attempt and times): they are written with one
    UPDATE for them all rather than one each, since under a burst of orders
    this was most of the writer's time spent on enrollments. An item named
    twice in the batch is written call after call, as each came."""
    ids = [call[0] for call in calls]
    if len(set(ids)) < len(ids):
        return [_record_enrolled(conn, *call) for call in calls]
    alike: dict[tuple, list[int]] = {}
    for item_id, *rest in calls:
        alike.setdefault(tuple(rest), []).append(item_id)
    now = utcnow()
    done: dict[int, str] = {}
    for (expected, state, attempts, next_attempt_at, wait_until), group in alike.items():
        for chunk in chunks(group):
            done.update(conn.execute(
                _enrolled_statement(items.c.id.in_(chunk), expected, state, attempts,
                                    next_attempt_at, wait_until, now)
                .returning(items.c.id, items.c.state)).all())
    return [done.get(item_id) for item_id in ids]


def _record_enrolled(conn: Connection, item_id: int, expected: str, state: str,
                     attempts: int, next_attempt_at: dt.datetime | None = None,
                     wait_until: dt.datetime | None = None) -> str | None:
    """:func:`record_enrolled` for one item."""
    return conn.execute(
        _enrolled_statement(items.c.id == item_id, expected, state, attempts, next_attempt_at,
                            wait_until, utcnow())
        .returning(items.c.state)).scalar()


def _enrolled_statement(which: Any, expected: str, state: str, attempts: int,
                        next_attempt_at: dt.datetime | None, wait_until: dt.datetime | None,
                        now: dt.datetime) -> sa.Update:
    """The UPDATE of :func:`record_enrolled`, for the items ``which`` selects
    that are still ``expected``: in one statement, the state confirmed, or
    unenroll-pending where a refund asked for it meanwhile."""
    refunded = items.c.unenroll_requested_at.is_not(None)
    return (items.update().where(which, items.c.state == expected)
            .values(state=sa.case((refunded, UNENROLL_PENDING), else_=state),
                    attempts=sa.case((refunded, 0), else_=attempts), reason=None,
                    unconfirmed=None, confirm_after=None,
                    next_attempt_at=sa.case((refunded, now), else_=next_attempt_at),
                    wait_until=sa.case((refunded, None), else_=wait_until),
                    pending_since=sa.case((refunded, now), else_=items.c.pending_since),
                    updated_at=now))


@each
def record_failed(conn: Connection, item_id: int, expected: str, attempts: int,
                  reason: str) -> str | None:
    """Record that an item's attempts are over: ``failed`` (or
    ``unenroll-failed``), unless a call for it went out whose outcome is
    still unknown: then ``unknown``, never failed, since the LMS may have
    done it. Returns the state set (None: the item was no longer ``expected``)."""
    failed = UNENROLL_FAILED if expected == UNENROLL_PENDING else FAILED
    return conn.execute(
        items.update().where(items.c.id == item_id, items.c.state == expected)
        .values(state=sa.case((items.c.unconfirmed.is_not(None), UNKNOWN), else_=failed),
                attempts=attempts, reason=reason, next_attempt_at=None, updated_at=utcnow())
        .returning(items.c.state)).scalar()


@each
def mark_unconfirmed(conn: Connection, item_ids: list[int], action: str,
                     deadline: dt.datetime) -> None:
    """A bulk enrollment call for these items is about to go out (see
    ``items.unconfirmed``); it is due to answer by ``deadline``."""
    for chunk in chunks(item_ids):
        conn.execute(items.update().where(items.c.id.in_(chunk))
                     .values(unconfirmed=action, confirm_after=deadline))


@each
def settle(conn: Connection, item_ids: list[int]) -> None:
    """The LMS has answered for these items, or was seen not to have done
    their call: nothing about them is unknown any more."""
    for chunk in chunks(item_ids):
        conn.execute(items.update().where(items.c.id.in_(chunk))
                     .values(unconfirmed=None, confirm_after=None))


#: a refund or cancellation not lifted is in force for the item being updated
_STILL_WITHDRAWN = sa.exists().where(
    orders.c.id == items.c.order_id,
    unenroll_requests.c.provider == orders.c.provider,
    unenroll_requests.c.shop == orders.c.shop,
    unenroll_requests.c.order_external_id == orders.c.external_id,
    unenroll_requests.c.lifted_at.is_(None),
    sa.or_(unenroll_requests.c.line_item_id.is_(None),
           unenroll_requests.c.line_item_id == items.c.external_id))


@each
def withdraw_item(conn: Connection, item_id: int, values: dict[str, Any],
                  expected: str) -> bool:
    """Change a line item still in the ``expected`` state because of its
    refund or cancellation, only while that is in force: a WooCommerce
    delivery modified later may have placed the order again meanwhile (then
    False, and the item is left to its next attempt)."""
    return conn.execute(
        items.update().where(items.c.id == item_id, items.c.state == expected,
                             _STILL_WITHDRAWN)
        .values(updated_at=utcnow(), **values)).rowcount == 1


@each
def update_item(conn: Connection, item_id: int, values: dict[str, Any],
                expected: str = PENDING) -> bool:
    """Change a line item still in the ``expected`` state; False if it no longer is."""
    return conn.execute(UPDATE_ITEM, {"item_id": item_id, "expected": expected,
                                      "updated_at": utcnow(), **values}).rowcount == 1


@each
def retry_failed(conn: Connection, item_ids: list[int] | None,
                  order_ids: list[int] | None) -> list[int]:
    query = sa.select(items.c.id, items.c.state, items.c.unconfirmed).where(
        items.c.state.in_((FAILED, UNENROLL_FAILED, UNKNOWN)))
    if item_ids is not None:
        query = query.where(items.c.id.in_(item_ids))
    if order_ids is not None:
        query = query.where(items.c.order_id.in_(order_ids))
    rows = conn.execute(query.order_by(items.c.id)).all()
    now = utcnow()
    # unknown goes back to the action whose outcome is unknown, which stays
    # marked so: the LMS is asked what it did before anything is sent again
    after = {FAILED: PENDING, UNENROLL_FAILED: UNENROLL_PENDING}
    for target in (PENDING, UNENROLL_PENDING):
        ids = [i for i, state, action in rows
               if (after.get(state) if state != UNKNOWN
                   else UNENROLL_PENDING if action == "unenroll" else PENDING) == target]
        if ids:
            conn.execute(items.update().where(items.c.id.in_(ids)).values(
                state=target, attempts=0, reason="retry requested by an operator",
                next_attempt_at=now, pending_since=now, updated_at=now))
    return [i for i, _, _ in rows]


@each
def prune(conn: Connection, before: dt.datetime, after_id: int, limit: int,
          rejected_since: dt.datetime | None = None) -> tuple[int, int]:
    """Drop body and headers of up to ``limit`` deliveries, the first after
    ``after_id``, received before ``before`` whose order is finished (no
    pending item) and has no failed or unknown one, or that had no order.
    What ``replay`` may still need keeps them: the deliveries of an order
    with a failed item, and a rejected delivery received since
    ``rejected_since`` (retention deletes it later). Return how many (fewer
    than ``limit``: none is left) and the last id looked at."""
    unfinished = sa.select(items.c.order_id).where(
        items.c.state.in_((*SCHEDULED, FAILED, UNENROLL_FAILED, UNKNOWN)))
    no_order = deliveries.c.order_id.is_(None)
    if rejected_since is not None:
        no_order = sa.and_(no_order, sa.or_(deliveries.c.status < 300,
                                            deliveries.c.received_at < rejected_since))
    ids = conn.execute(
        sa.select(deliveries.c.id)
        .where(deliveries.c.id > after_id, deliveries.c.received_at < before,
               deliveries.c.pruned_at.is_(None),
               sa.or_(no_order, deliveries.c.order_id.not_in(unfinished)))
        .order_by(deliveries.c.id).limit(limit)).scalars().all()
    if ids:
        conn.execute(deliveries.update().where(deliveries.c.id.in_(ids))
                     .values(body=b"", headers="{}", pruned_at=utcnow()))
    return len(ids), ids[-1] if ids else after_id


@each
def delete_rejected(conn: Connection, before: dt.datetime, limit: int) -> tuple[int, int]:
    """Delete up to ``limit`` rejected deliveries (they have no order) and
    activation pings (unsigned by nature) received before ``before``; return
    how many (fewer than ``limit``: none is left), and the bytes of body they
    kept."""
    old = sa.and_(sa.or_(deliveries.c.status >= 300, deliveries.c.reason == "ping"),
                  deliveries.c.order_id.is_(None), deliveries.c.received_at < before)
    rows = conn.execute(sa.select(deliveries.c.id, sa.func.length(deliveries.c.body))
                        .where(old).order_by(deliveries.c.id).limit(limit)).all()
    if rows:
        conn.execute(deliveries.delete().where(deliveries.c.id.in_([i for i, _ in rows])))
    return len(rows), sum(size or 0 for _, size in rows)


@each
def beat(conn: Connection) -> None:
    if conn.execute(heartbeat.update().where(heartbeat.c.id == 1)
                    .values(at=utcnow())).rowcount == 0:
        conn.execute(heartbeat.insert().values(id=1, at=utcnow()))


@each
def set_mark(conn: Connection, provider: str, shop: str, watermark: dt.datetime) -> None:
    """Record that ``shop``'s orders modified before ``watermark`` were read back."""
    now = utcnow()
    if conn.execute(reconcile_marks.update().where(reconcile_marks.c.provider == provider,
                                                   reconcile_marks.c.shop == shop)
                    .values(watermark=watermark, updated_at=now)).rowcount == 0:
        conn.execute(reconcile_marks.insert().values(provider=provider, shop=shop,
                                                     watermark=watermark, updated_at=now))


@each
def record_action(conn: Connection, delivery: NewDelivery, order_id: int) -> int:
    """A staff member's action on an order, kept among its deliveries."""
    return conn.execute(deliveries.insert().values(
        provider=delivery.provider, endpoint=delivery.endpoint[:200],
        received_at=delivery.received_at, client_ip=delivery.client_ip,
        headers=json.dumps(delivery.headers), body=delivery.body,
        body_size=delivery.body_size, status=delivery.status, reason=delivery.reason[:200],
        shop=delivery.shop, order_id=order_id)).inserted_primary_key[0]
