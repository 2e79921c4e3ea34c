"""The database: schema, and every SQL statement edx-hooks runs.

Writes go through one writer task that commits everything queued so far in a
single transaction (group commit): a request hands its rows over and is
answered only after the transaction holding them is committed, so durability
is that of a per-request commit at a fraction of the cost. Reads use their
own connections; SQLite runs in WAL mode so they never wait for the writer.

``schema`` holds the tables and statements, ``writes`` the batch write
operations, ``known`` what an order read back from its shop would add,
``writer`` the group-commit writer that runs them, ``database``
the :class:`Store` (the reads, and the writes by name), ``sqlite`` the
file's set-up, ``migrate`` the schema versions and their upgrades
(``migrations/versions``).
"""

from .database import Store
from .migrate import SchemaError
from .schema import (
    ACTIVE,
    AWAITING_ACCOUNT,
    AWAITING_PAYMENT,
    ENROLLED,
    FAILED,
    NOT_A_COURSE,
    NOT_ENROLLED,
    NOT_PLACED,
    ORDER_STATES,
    PENDING,
    SCHEDULED,
    UNENROLL_FAILED,
    UNENROLL_PENDING,
    UNENROLLED,
    UNKNOWN,
    JobItem,
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
from .writer import StoreClosed

__all__ = [
    "ACTIVE", "AWAITING_ACCOUNT", "AWAITING_PAYMENT", "ENROLLED", "FAILED", "NOT_A_COURSE",
    "NOT_ENROLLED", "NOT_PLACED", "ORDER_STATES", "PENDING", "SCHEDULED", "UNENROLL_FAILED",
    "UNENROLL_PENDING", "UNENROLLED", "UNKNOWN", "JobItem", "NewDelivery", "NewItem", "NewOrder",
    "Recorded", "SchemaError", "Store", "StoreClosed", "Unenroll", "deliveries", "items",
    "metadata", "order_state", "orders", "utcnow",
]
