"""What the store already knows of an order read back from its shop
(reconciliation): asked with reads only, so that an order known and
unchanged costs no write."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .schema import AWAITING_PAYMENT, NewOrder, Unenroll, items, orders, unenroll_requests


async def missed(conn: AsyncConnection, order: NewOrder | None,
                 unenroll: Unenroll | None) -> list[str]:
    """What recording this order (and its unenrollment) would add: ``order``
    (unknown), ``payment`` or ``placement`` (recorded held until now),
    ``items`` (line items not stored), ``placed-again`` (a cancellation that
    this later status lifts), the unenrollment's ``why`` (a refund or
    cancellation not recorded). The write, if any, decides again under the
    store's own rules: this only spares the write when nothing is new."""
    key = order or unenroll
    if key is None:
        return []
    provider, shop = key.provider, key.shop
    external = order.external_id if order else unenroll.order_external_id
    row = (await conn.execute(sa.select(orders.c.id, orders.c.hold).where(
        orders.c.provider == provider, orders.c.shop == shop,
        orders.c.external_id == external))).first()
    requests = (await conn.execute(sa.select(
        unenroll_requests.c.line_item_id, unenroll_requests.c.shop_modified_at)
        .where(unenroll_requests.c.provider == provider, unenroll_requests.c.shop == shop,
               unenroll_requests.c.order_external_id == external,
               unenroll_requests.c.lifted_at.is_(None)))).all()
    found: list[str] = []
    if order is not None:
        if row is None:
            found.append("order")
        else:
            if row.hold and not order.hold:
                found.append("payment" if row.hold == AWAITING_PAYMENT else "placement")
            if not order.hold and order.items:
                stored = {(e, p) for e, p in (await conn.execute(
                    sa.select(items.c.external_id, items.c.part)
                    .where(items.c.order_id == row.id))).all()}
                if any((i.external_id, i.part) not in stored for i in order.items):
                    found.append("items")
            if unenroll is None and not order.hold and order.modified_at is not None \
                    and any(line is None and modified is not None
                            and modified < order.modified_at for line, modified in requests):
                found.append("placed-again")
    if unenroll is not None:
        lines = {line for line, _ in requests}
        wanted = unenroll.line_item_ids if unenroll.line_item_ids is not None else [None]
        if None not in lines and any(line not in lines for line in wanted):
            found.append(unenroll.why)
    return found
