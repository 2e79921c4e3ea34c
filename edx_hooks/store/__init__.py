"""The database: schema, and every SQL statement edx-hooks runs.

Writes go through one writer task that commits everything queued so far in a
single transaction (group commit): a request hands its rows over and is
answered only after the transaction holding them is committed, so durability
is that of a per-request commit at a fraction of the cost. Reads use their
own connections; SQLite runs in WAL mode so they never wait for the writer.

``schema`` holds the tables and statements, ``writes`` the batch write
operations, ``database`` the :class:`Store` that runs them.
"""

from .database import Store
from .schema import (
    ACTIVE,
    ENROLLED,
    FAILED,
    PENDING,
    UNENROLL_FAILED,
    UNENROLL_PENDING,
    UNENROLLED,
    NewDelivery,
    NewItem,
    NewOrder,
    Recorded,
    Unenroll,
    deliveries,
    items,
    metadata,
    order_state,
    orders,
    utcnow,
)

__all__ = [
    "ACTIVE", "UNENROLL_FAILED", "UNENROLL_PENDING", "UNENROLLED", "Unenroll",
    "ENROLLED", "FAILED", "PENDING", "NewDelivery", "NewItem",
    "NewOrder", "Recorded", "Store", "deliveries", "items", "metadata", "order_state",
    "orders", "utcnow",
]
