"""Reconciliation: how far each shop's orders have been read back.

- ``reconcile_marks``: per shop (provider, shop), the time up to which its
  orders were read back from the shop's API (the next run lists the orders
  modified since then, with an overlap), so that a restart does not look
  back ``reconcile.first_lookback_hours`` again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_marks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("shop", sa.String(255), nullable=False),
        sa.Column("watermark", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("provider", "shop", name="uq_reconcile_mark"),
    )


def downgrade() -> None:
    op.drop_table("reconcile_marks")
