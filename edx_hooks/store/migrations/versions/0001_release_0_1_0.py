"""The schema of release 0.1.0: deliveries, orders, items, heartbeat.

That release kept no schema version. A database holding its tables and no
``alembic_version`` table is stamped with this revision and upgraded from
here; this revision itself changes nothing.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
