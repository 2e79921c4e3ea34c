"""The shortcuts taken for speed (issue 19) give what the plain ways give:
a batch's confirmed enrollments written together, its orders found by index
search, the text log format's time stamp made once a second; and calls fill
up under a burst, without making a lone learner wait."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging

import pytest

from edx_hooks import batches
from edx_hooks.batches import Batcher
from edx_hooks.errors import Halted
from edx_hooks.lms import Pacer
from edx_hooks.logs import TextFormatter, _Text
from edx_hooks.store import utcnow
from edx_hooks.store.writes import record_enrolled, record_many

from .test_units import delivery, new_order


def rows(db) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT id, state, attempts, unconfirmed, next_attempt_at IS NULL FROM items "
            "ORDER BY id")]


def test_a_batch_of_confirmed_enrollments_is_written_as_each_would_be(db):
    with db.begin() as conn:
        record_many(conn, [(delivery(), new_order("a", "b", "c", "d"), None)])
        # b was refunded meanwhile, d is no longer pending; both marked unconfirmed
        conn.exec_driver_sql("UPDATE items SET unenroll_requested_at = '2026-11-28 10:00:00', "
                             "unconfirmed = 'enroll' WHERE id = 2")
        conn.exec_driver_sql("UPDATE items SET state = 'failed' WHERE id = 4")
    later = utcnow() + dt.timedelta(hours=1)
    with db.begin() as conn:
        done = record_enrolled(conn, [
            (1, "pending", "enrolled", 1, None, None),
            (2, "pending", "enrolled", 1, None, None),
            (3, "pending", "awaiting-account", 1, later, later),
            (4, "pending", "enrolled", 1, None, None)])
    assert done == ["enrolled", "unenroll-pending", "awaiting-account", None]
    assert rows(db) == [(1, "enrolled", 1, None, 1), (2, "unenroll-pending", 0, None, 0),
                        (3, "awaiting-account", 1, None, 0), (4, "failed", 0, None, 0)]


def test_an_item_named_twice_in_a_batch_is_written_call_after_call(db):
    with db.begin() as conn:
        record_many(conn, [(delivery(), new_order("a"), None)])
    with db.begin() as conn:
        done = record_enrolled(conn, [(1, "pending", "enrolled", 1, None, None),
                                      (1, "pending", "enrolled", 2, None, None)])
    assert done == ["enrolled", None]
    assert rows(db) == [(1, "enrolled", 1, None, 1)]


@pytest.mark.parametrize("created", [1764324000.0, 1764324000.999, 1764324001.25,
                                     1764324000.5])
def test_the_text_format_reads_as_logging_s_own(created):
    fields = {"delivery": 7, "shop": "a shop", "repeat": False, "order": None}
    fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    ours, plain = TextFormatter(fmt), logging.Formatter(fmt)
    for at in (created, created + 0.001, created + 1):  # one formatter, stamps in turn
        record = logging.LogRecord("edx_hooks.x", logging.INFO, "", 0,
                                   _Text("delivery.accepted", fields), (), None)
        record.created, record.msecs = at, int((at - int(at)) * 1000) + 0.0
        assert ours.format(record) == plain.format(record)
        assert "event=delivery.accepted delivery=7 shop=\"a shop\" repeat=false order=-" \
            in ours.format(record)


def test_a_batch_finds_its_orders_and_refunds_by_index_search_not_by_scanning(db):
    """With two orders in a batch, the row-value IN (VALUES ...) that
    SQLAlchemy renders made SQLite scan every order, and every refund, at
    each batch of deliveries."""
    with db.begin() as conn:
        record_many(conn, [(delivery(), new_order("a"), None)])
    selects: list[str] = []
    with db.begin() as conn:
        raw = conn.connection.driver_connection
        raw.set_trace_callback(lambda sql: selects.append(sql)
                               if sql.lstrip().upper().startswith("SELECT") else None)
        first = new_order("b")
        second = dataclasses.replace(new_order("c"), external_id="2", name="#2")
        other_shop = dataclasses.replace(new_order("d"), shop="other.myshopify.com")
        done = record_many(conn, [(delivery(), first, None), (delivery(), second, None),
                                  (delivery(), other_shop, None)])
        raw.set_trace_callback(None)
        assert [(r.order_existed, r.new_pending) for r in done] == [
            (True, [2]), (False, [3]), (False, [4])]
        assert selects
        for sql in selects:
            # the callback is given the statement with its values in place
            plan = " ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql))
            assert "SCAN orders" not in plan and "SCAN unenroll_requests" not in plan, \
                (sql, plan)


class _LMS:
    """As much of the LMS client as the batcher uses: unpaced, answers every
    learner enrolled, keeps the calls."""

    def __init__(self) -> None:
        self.pacer = Pacer(0)
        self.calls: list[list[str]] = []
        self.reasons: list[str] = []

    async def token(self) -> str:
        return "token"

    def deadline(self, learners: int) -> float:
        return 30.0

    async def bulk(self, action, course, emails, reason, slot_taken, auto_enroll):
        self.calls.append(list(emails))
        self.reasons.append(reason)
        return {e.lower(): "enrolled" for e in emails}


def _batcher(lms: _LMS, batch_size: int) -> Batcher:
    async def nothing(*_):
        return set()
    return Batcher(lms, batch_size, withdrawn=nothing, on_taken=lambda _: None,
                   unconfirmed=nothing, settled=nothing)


@pytest.mark.gen_test
async def test_a_lone_learner_goes_at_once_and_a_burst_fills_its_calls(monkeypatch):
    """After a quiet spell a call goes at once; while calls are going out,
    the learners queued meanwhile wait for a full call (here the wait is
    made longer than any test, so only a full call can go). Jobs reach the
    batcher in no set order: a call sends its learners, and names their
    orders, in the order their items were received (by item id)."""
    monkeypatch.setattr(batches, "FILL_SECONDS", 3600.0)
    lms = _LMS()
    batcher = _batcher(lms, batch_size=3)
    batcher.start()
    try:
        key = ("course-v1:X+Y+Z", "enroll", False)
        assert await batcher.submit(key, 1, "first@example.org", "#1") == "enrolled"
        burst = [asyncio.ensure_future(batcher.submit(key, n, f"l{n}@example.org", f"#{n}"))
                 for n in (4, 2, 3, 5)]
        await asyncio.wait(burst[:3])
        assert lms.calls == [["first@example.org"],
                             ["l2@example.org", "l3@example.org", "l4@example.org"]]
        assert lms.reasons == ["edx-hooks #1", "edx-hooks #2, #3, #4"]
        assert not burst[3].done() and batcher.queues  # the fifth waits for company
    finally:
        await batcher.close()
    with pytest.raises(Halted):  # stopping: not sent
        await burst[3]
