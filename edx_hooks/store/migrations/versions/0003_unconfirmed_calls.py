"""Calls whose outcome is unknown: asked about before anything is sent again.

- ``items.unconfirmed``: the action (enroll, unenroll) of a bulk enrollment
  call that went out for the item and whose outcome is not recorded; set
  before the call leaves, cleared with its outcome. While it is set, the LMS
  is asked what it did before the item is sent again.
- ``items.confirm_after``: that call's deadline; the LMS is not asked sooner.
- The new item state ``unknown`` replaces ``failed`` where the last attempt's
  answer was lost (the LMS may have enrolled the learner): items that 0.1.0 or
  0.2.0.dev0 called failed or unenroll-failed for a timeout during the
  request, a cut connection or a 500/502/504 are ``unknown`` now, and those
  still pending after such an answer are asked about before their next send.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: the reasons recorded for an answer lost after the request went out
LOST = " OR ".join(f"reason LIKE '{start}%'" for start in (
    "LMS unreachable: Timeout during request", "LMS unreachable: Stream closed",
    "LMS unreachable: the call was cut off", "bulk_enroll answered 500",
    "bulk_enroll answered 502", "bulk_enroll answered 504"))


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("unconfirmed", sa.String(16)))
        batch.add_column(sa.Column("confirm_after", sa.DateTime))
    for state, action in (("failed", "enroll"), ("pending", "enroll"),
                          ("unenroll-failed", "unenroll"), ("unenroll-pending", "unenroll")):
        final = state.endswith("failed")
        op.execute(f"UPDATE items SET unconfirmed = '{action}'"
                   + (", state = 'unknown'" if final else "")
                   + f" WHERE state = '{state}' AND attempts > 0 AND ({LOST})")


def downgrade() -> None:
    op.execute("UPDATE items SET state = CASE unconfirmed WHEN 'unenroll' "
               "THEN 'unenroll-failed' ELSE 'failed' END WHERE state = 'unknown'")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("confirm_after")
        batch.drop_column("unconfirmed")
