"""Alembic's environment, for developers' ``alembic`` commands only (see
alembic.ini here). The service runs its migrations itself, on its own
connection: see :mod:`edx_hooks.store.migrate`."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from edx_hooks.store.schema import metadata

url = context.get_x_argument(as_dictionary=True).get("url")
if not url:
    raise SystemExit("say which database to compare with: -x url=sqlite:///path.db")
with sa.create_engine(url).connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
