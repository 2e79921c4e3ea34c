"""The schema, the records handed to the store, and the statements the hot
path runs, built once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

PENDING, ENROLLED, FAILED = "pending", "enrolled", "failed"
#: after a refund or cancellation (with unenroll_on_refund)
UNENROLL_PENDING, UNENROLLED, UNENROLL_FAILED = "unenroll-pending", "unenrolled", "unenroll-failed"
#: refunded or cancelled before it was enrolled: never enrolled
NOT_ENROLLED = "not-enrolled"
#: neither a course nor a learner's (merchandise: a T-shirt): nothing to
#: enroll, and no part of its order's state
NOT_A_COURSE = "not-a-course"
#: sold in a mode to a learner without an LMS account yet: the LMS enrolls
#: them at activation, and the paid mode is set once their account is active
AWAITING_ACCOUNT = "awaiting-account"
#: the outcome of its last LMS call is unknown (the answer was lost: a
#: timeout, a cut connection, a 500/502/504) after its last attempt, and the
#: LMS could not be asked what it did: it may well be enrolled. Never called
#: failed; a refund still unenrolls it, and a retry asks the LMS first.
UNKNOWN = "unknown"
#: states in which a line item still has LMS work to do now
ACTIVE = (PENDING, UNENROLL_PENDING)
#: states with a job to come (ACTIVE, and the account checks)
SCHEDULED = (*ACTIVE, AWAITING_ACCOUNT)
#: why an order is recorded without its line items (``orders.hold``)
AWAITING_PAYMENT, NOT_PLACED = "awaiting-payment", "not-placed"
#: every state :func:`order_state` gives (what ``orders --state`` selects)
ORDER_STATES = (PENDING, ENROLLED, FAILED, UNKNOWN, AWAITING_ACCOUNT, UNENROLLED,
                NOT_ENROLLED, AWAITING_PAYMENT, NOT_PLACED, "empty")

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
    #: when ``edx-hooks prune`` removed its body and headers
    sa.Column("pruned_at", sa.DateTime),
    # Lets one multi-row INSERT ... RETURNING report the ids in the order of
    # the rows (SQLite alone does not promise that order): without it
    # SQLAlchemy falls back to one INSERT per row.
    sa.insert_sentinel("sentinel"),
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
    sa.insert_sentinel("sentinel"),
    #: recorded without its line items, and why: awaiting-payment (require_payment)
    #: or not-placed (a checkout draft...); they come with the delivery that
    #: shows it paid or placed, which clears this
    sa.Column("hold", sa.String(32)),
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
    #: a refund or cancellation asked for this item to be unenrolled: after
    #: its enrollment, if that is still under way
    sa.Column("unenroll_requested_at", sa.DateTime),
    sa.insert_sentinel("sentinel"),
    #: when it last became pending or unenroll-pending (the health check's age)
    sa.Column("pending_since", sa.DateTime),
    #: the course mode sold (None: the LMS's default, through bulk enrollment)
    sa.Column("mode", sa.String(32)),
    #: which course of a bundle (0: the first, or the only one)
    sa.Column("part", sa.Integer, nullable=False, server_default="0"),
    #: awaiting-account: the learner's account is waited for until then
    sa.Column("wait_until", sa.DateTime),
    sa.UniqueConstraint("order_id", "external_id", "part", name="uq_item"),
    #: the action (enroll, unenroll) of a bulk enrollment call that went out
    #: for this item and whose outcome is not recorded: set before the call
    #: leaves, cleared with the outcome. While set, the LMS is asked what it
    #: did before the item is sent again (after a lost answer, or a crash).
    sa.Column("unconfirmed", sa.String(16)),
    #: that call's deadline: the LMS is not asked before it (it may still be
    #: at work on the call)
    sa.Column("confirm_after", sa.DateTime),
)

#: every refund and cancellation received, by the shop's ids: one that comes
#: before its order (or before the line item) still applies when it arrives
unenroll_requests = sa.Table(
    "unenroll_requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("shop", sa.String(255), nullable=False),
    sa.Column("order_external_id", sa.String(64), nullable=False),
    #: None: the whole order
    sa.Column("line_item_id", sa.String(64)),
    sa.Column("why", sa.String(32), nullable=False),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id")),
    sa.Column("requested_at", sa.DateTime, nullable=False),
    #: when the shop says the order changed (WooCommerce's date_modified_gmt):
    #: a delivery showing the order placed again, modified later, lifts it.
    #: None (Shopify): final.
    sa.Column("shop_modified_at", sa.DateTime),
    #: when a later status lifted it
    sa.Column("lifted_at", sa.DateTime),
    sa.Index("ix_unenroll_requests_order", "provider", "shop", "order_external_id"),
)


#: per shop: its orders modified before ``watermark`` were read back from its
#: API (reconciliation); the next run lists those modified since, with an overlap
reconcile_marks = sa.Table(
    "reconcile_marks", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("shop", sa.String(255), nullable=False),
    sa.Column("watermark", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("provider", "shop", name="uq_reconcile_mark"),
)


#: one row: the last time the health check wrote to the database
heartbeat = sa.Table(
    "heartbeat", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False),
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
    #: the size of the body as received (``body`` may hold only its start)
    body_size: int
    status: int
    reason: str
    shop: str | None = None
    #: a rejected delivery a shop signed (we failed to read it): its body is
    #: kept whole, whatever the rejected-bytes budget
    verified: bool = False


@dataclass
class NewItem:
    external_id: str
    sku: str | None
    email: str | None
    course_id: str | None = None
    #: set when the storefront already knows the item cannot be enrolled:
    #: its learner (``failure``), its SKU (``sku_problem``, which the catalog
    #: can make moot)
    failure: str | None = None
    sku_problem: str | None = None
    #: not a course and no learner email (the catalog says so): recorded as
    #: not-a-course, with this reason
    not_a_course: str | None = None
    #: no learner email, and a SKU only the LMS can say is a course (a
    #: redirect): pending, for its job to ask; ``failure`` is its reason if so
    check_sku: bool = False
    #: the course mode sold (None: the LMS's default)
    mode: str | None = None
    #: which course of a bundle
    part: int = 0


@dataclass
class NewOrder:
    provider: str
    shop: str
    external_id: str
    name: str
    items: list[NewItem] = field(default_factory=list)
    #: recorded without acting on its items, and why (AWAITING_PAYMENT,
    #: NOT_PLACED); a later delivery without a hold releases it
    hold: str | None = None
    #: when the shop says the order last changed (WooCommerce), if it says
    modified_at: dt.datetime | None = None


@dataclass
class Unenroll:
    """A refund or cancellation of an order's line items: those named, or all
    of them (None). Recorded whatever ``act`` says, so that an item it names
    is never enrolled afterwards, even if it arrives later; with ``act``
    (unenroll_on_refund) an enrolled item is also unenrolled."""
    provider: str
    shop: str
    order_external_id: str
    line_item_ids: list[str] | None
    why: str
    act: bool = True
    #: when the shop says the order changed (WooCommerce: a later delivery
    #: showing the order placed again lifts the request); None: final
    modified_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class JobItem:
    """A line item as its enrollment job reads it (``ITEMS_FOR_JOBS``), with
    what the job needs of its order. A snapshot: the job writes through the
    store, conditionally on ``state`` (see ``UPDATE_ITEM``)."""
    id: int
    state: str
    email: str | None
    sku: str | None
    #: None until its SKU is resolved
    course_id: str | None
    #: the course mode sold (None: the LMS's default, through bulk enrollment)
    mode: str | None
    attempts: int
    next_attempt_at: dt.datetime | None
    #: a refund or cancellation asked for it to be unenrolled
    unenroll_requested_at: dt.datetime | None
    #: awaiting-account: the learner's account is waited for until then
    wait_until: dt.datetime | None
    #: the action of a call whose outcome is unknown, and that call's deadline
    unconfirmed: str | None
    confirm_after: dt.datetime | None
    provider: str
    order_external_id: str
    order_name: str
    #: why a refund or cancellation in force names it ("refunded", "cancelled"), or None
    withdrawn: str | None

    @property
    def log_ids(self) -> dict[str, Any]:
        """How its events name it."""
        return {"provider": self.provider, "order": self.order_external_id, "item": self.id}


@dataclass
class Recorded:
    delivery_id: int
    order_id: int | None = None
    #: ids of the line items this delivery added in state pending
    new_pending: list[int] = field(default_factory=list)
    #: (id, reason) of the line items this delivery added already failed
    new_failed: list[tuple[int, str]] = field(default_factory=list)
    #: (id, reason) of the line items this delivery added that a refund or
    #: cancellation received earlier keeps from being enrolled
    new_not_enrolled: list[tuple[int, str]] = field(default_factory=list)
    order_existed: bool = False
    #: ids of the line items this delivery set to be unenrolled, and of those
    #: that will be once their enrollment is done
    unenroll_now: list[int] = field(default_factory=list)
    unenroll_after: list[int] = field(default_factory=list)


# --- statements, built once: building and cache-keying a statement costs more
# CPU than SQLite takes to run it.

FIND_ORDERS = sa.select(orders.c.id, orders.c.provider, orders.c.shop, orders.c.external_id) \
    .where(sa.tuple_(orders.c.provider, orders.c.shop, orders.c.external_id)
           .in_(sa.bindparam("keys", expanding=True)))
INSERT_ORDERS = orders.insert().returning(orders.c.id, sort_by_parameter_order=True)
TOUCH_ORDERS = orders.update().where(orders.c.id.in_(sa.bindparam("ids", expanding=True))) \
    .values(updated_at=sa.bindparam("now"))
RELEASE_ORDERS = orders.update().where(orders.c.id.in_(sa.bindparam("ids", expanding=True)),
                                      orders.c.hold.is_not(None)).values(hold=None)
FIND_UNENROLLS = sa.select(unenroll_requests.c.id, unenroll_requests.c.provider,
                           unenroll_requests.c.shop, unenroll_requests.c.order_external_id,
                           unenroll_requests.c.line_item_id, unenroll_requests.c.why,
                           unenroll_requests.c.delivery_id,
                           unenroll_requests.c.shop_modified_at) \
    .where(sa.tuple_(unenroll_requests.c.provider, unenroll_requests.c.shop,
                     unenroll_requests.c.order_external_id)
           .in_(sa.bindparam("keys", expanding=True)),
           unenroll_requests.c.lifted_at.is_(None))
KNOWN_ITEMS = sa.select(items.c.order_id, items.c.external_id, items.c.part) \
    .where(items.c.order_id.in_(sa.bindparam("ids", expanding=True)))
INSERT_DELIVERIES = deliveries.insert().returning(deliveries.c.id,
                                                   sort_by_parameter_order=True)
INSERT_ITEMS = items.insert().returning(items.c.id, sort_by_parameter_order=True)
#: SET whatever columns the parameters name, on an item still in the expected state
UPDATE_ITEM = items.update().where(items.c.id == sa.bindparam("item_id"),
                                   items.c.state == sa.bindparam("expected"))
#: the refund or cancellation, if any, received for an item (or its whole order)
_WITHDRAWN = (sa.select(unenroll_requests.c.why)
              .where(unenroll_requests.c.provider == orders.c.provider,
                     unenroll_requests.c.shop == orders.c.shop,
                     unenroll_requests.c.order_external_id == orders.c.external_id,
                     unenroll_requests.c.lifted_at.is_(None),
                     sa.or_(unenroll_requests.c.line_item_id.is_(None),
                            unenroll_requests.c.line_item_id == items.c.external_id))
              .order_by(unenroll_requests.c.id).limit(1).scalar_subquery())
_FOR_JOB = sa.select(
    items.c.id, items.c.state, items.c.email, items.c.sku, items.c.course_id, items.c.mode,
    items.c.attempts, items.c.next_attempt_at, items.c.unenroll_requested_at,
    items.c.wait_until, items.c.unconfirmed, items.c.confirm_after, orders.c.provider,
    orders.c.external_id.label("order_external_id"), orders.c.name.label("order_name"),
    _WITHDRAWN.label("withdrawn"),
).join(orders, items.c.order_id == orders.c.id)
ITEMS_FOR_JOBS = _FOR_JOB.where(items.c.id.in_(sa.bindparam("item_ids", expanding=True)))
#: which of these items a refund or cancellation names
WITHDRAWN_AMONG = (sa.select(items.c.id).join(orders, items.c.order_id == orders.c.id)
                   .where(items.c.id.in_(sa.bindparam("item_ids", expanding=True)),
                          _WITHDRAWN.is_not(None)))


def order_state(counts: dict[str, int]) -> str:
    """An order's state follows from its items': pending while any has work
    to do, failed if any failed, unknown if the outcome of any is unknown,
    awaiting-account while a learner's account
    is waited for, enrolled if any is, unenrolled if any was,
    not-enrolled when all were withdrawn before enrollment. Without items:
    its hold (awaiting-payment, not-placed), or ``empty``."""
    if not counts["items"]:
        return counts.get("hold") or "empty"
    if counts["pending"]:
        return PENDING
    if counts["failed"]:
        return FAILED
    if counts.get("unknown"):
        return UNKNOWN
    if counts.get("awaiting_account"):
        return AWAITING_ACCOUNT
    if counts["enrolled"]:
        return ENROLLED
    if counts["unenrolled"]:
        return UNENROLLED
    return NOT_ENROLLED
