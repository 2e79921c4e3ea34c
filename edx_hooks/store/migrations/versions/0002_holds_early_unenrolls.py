"""Held orders, refunds that come before their order, course modes and
bundles, pending-since.

- ``orders.hold`` replaces ``orders.awaiting_payment``: why an order was
  recorded without its line items, ``awaiting-payment`` (as before) or
  ``not-placed`` (a WooCommerce checkout draft, a failed or trashed order).
- ``unenroll_requests``: every refund or cancellation received, kept by the
  shop's ids, so one that arrives before its order still applies when the
  order does (a WooCommerce one until a later status places the order again).
- ``items.pending_since``: when the item last became pending (arrival, an
  unenroll request, an operator's retry), for the health check's age.
- ``items.mode``: the course mode sold (None: the LMS's default);
  ``items.part``: which course of a bundle (0 for a single course), part of
  the item's identity with its order and line item; ``items.wait_until``: how
  long a learner without an account is waited for.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("hold", sa.String(32)))
    op.execute("UPDATE orders SET hold = 'awaiting-payment' WHERE awaiting_payment")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("awaiting_payment")

    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("pending_since", sa.DateTime))
        batch.add_column(sa.Column("mode", sa.String(32)))
        batch.add_column(sa.Column("part", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("wait_until", sa.DateTime))
        batch.drop_constraint("uq_item", type_="unique")
        batch.create_unique_constraint("uq_item", ["order_id", "external_id", "part"])
    op.execute("UPDATE items SET pending_since = coalesce(unenroll_requested_at, created_at)")

    op.create_table(
        "unenroll_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("shop", sa.String(255), nullable=False),
        sa.Column("order_external_id", sa.String(64), nullable=False),
        sa.Column("line_item_id", sa.String(64)),
        sa.Column("why", sa.String(32), nullable=False),
        sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id")),
        sa.Column("requested_at", sa.DateTime, nullable=False),
        sa.Column("shop_modified_at", sa.DateTime),
        sa.Column("lifted_at", sa.DateTime),
    )
    op.create_index("ix_unenroll_requests_order", "unenroll_requests",
                    ["provider", "shop", "order_external_id"])


def downgrade() -> None:
    op.drop_index("ix_unenroll_requests_order", "unenroll_requests")
    op.drop_table("unenroll_requests")
    with op.batch_alter_table("items") as batch:
        batch.drop_constraint("uq_item", type_="unique")
        batch.create_unique_constraint("uq_item", ["order_id", "external_id"])
        for column in ("pending_since", "mode", "part", "wait_until"):
            batch.drop_column(column)
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("awaiting_payment", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.execute("UPDATE orders SET awaiting_payment = (hold IS NOT NULL)")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("hold")
