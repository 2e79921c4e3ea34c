"""The enrollment job: one line item, one attempt, one LMS call.

APScheduler persists jobs by reference and with plain arguments, so the job
is a module-level coroutine taking an item id; what it needs at run time
(store, LMS client, scheduler, retry policy) is bound once at start-up with
:func:`bind`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from . import logs
from . import scheduler as sched
from .lms import LMSClient, PermanentError, Throttled, TransientError
from .store import (
    ACTIVE,
    ENROLLED,
    FAILED,
    PENDING,
    UNENROLL_FAILED,
    UNENROLL_PENDING,
    UNENROLLED,
    Store,
    utcnow,
)

log = logging.getLogger("edx_hooks.jobs")


@dataclass
class Runtime:
    store: Store
    lms: LMSClient
    scheduler: AsyncIOScheduler
    attempts: int
    delay_seconds: float
    running: set[int] = field(default_factory=set)
    tasks: set[asyncio.Task] = field(default_factory=set)


_runtime: Runtime | None = None


def bind(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


async def drain(timeout: float) -> int:
    """Wait up to ``timeout`` seconds for running jobs, then interrupt the
    rest; return how many were interrupted. Their items stay pending, so the
    next start resumes them (their LMS call may then be repeated: the LMS
    treats a repeated enroll as a no-op)."""
    rt = _runtime
    if rt is None or not rt.tasks:
        return 0
    _, pending = await asyncio.wait(set(rt.tasks), timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)
    return len(pending)


async def enroll_items(item_ids: list[int]) -> None:
    """Make one attempt at enrolling each of these line items, one after the
    other; schedule the next attempt where one is needed."""
    rt = _runtime
    if rt is None:
        raise RuntimeError("edx_hooks.jobs.bind() was not called")
    # an item already in flight in another job is left to that job
    mine = [i for i in item_ids if i not in rt.running]
    rt.running.update(mine)
    task = asyncio.current_task()
    if task is not None:
        rt.tasks.add(task)
    left = list(mine)
    try:
        while left:
            await _attempt(rt, left[0])
            rt.running.discard(left.pop(0))
    except asyncio.CancelledError:
        # Stopping: these items stay pending and are resumed at the next start.
        logs.event(log, logs.WARNING, "items.interrupted", items=",".join(map(str, left)))
    finally:
        rt.running.difference_update(left)
        if task is not None:
            rt.tasks.discard(task)


async def _attempt(rt: Runtime, item_id: int) -> None:
    """One step of an item's work: enroll it (pending), or unenroll it
    (unenroll-pending, after a refund). An unenroll requested while the
    enrollment was under way follows it here, in the same job: never a race."""
    # Wait for this attempt's turn at the LMS first: during a burst most
    # items wait here, and they need not hold a row read from the database.
    await rt.lms.pacer.wait()
    item = await rt.store.item_for_job(item_id)
    if item is None or item["state"] not in ACTIVE:
        return
    ids = {"provider": item["provider"], "order": item["order_external_id"], "item": item_id}
    action = "unenroll" if item["state"] == UNENROLL_PENDING else "enroll"
    attempt = item["attempts"] + 1
    logs.event(log, logs.DEBUG, "item.attempt", **ids, action=action, attempt=attempt,
               email=item["email"], sku=item["sku"])
    course = item["course_id"]
    try:
        if course is None:
            course = await rt.lms.resolve_sku(item["sku"])
            await rt.store.update(item_id, PENDING, course_id=course)
        call = rt.lms.enroll if action == "enroll" else rt.lms.unenroll
        result = await call(course, item["email"], reason=_reason(item), slot_taken=True)
    except Throttled as e:
        # Throttling is the LMS pacing us, not a failed attempt.
        when = utcnow() + dt.timedelta(seconds=e.retry_after)
        await rt.store.update(item_id, item["state"], reason=str(e), next_attempt_at=when)
        sched.schedule_retry(rt.scheduler, item_id, when)
        logs.event(log, logs.WARNING, "item.throttled", **ids, retry_after=round(e.retry_after))
    except PermanentError as e:
        await _fail(rt, item, ids, attempt, str(e))
    except TransientError as e:
        await _transient(rt, item, ids, attempt, str(e))
    except Exception as e:  # a bug must leave a visible trace, not a stuck item
        logs.event(log, logs.ERROR, "item.error", **ids, attempt=attempt, exc_info=True)
        await _transient(rt, item, ids, attempt, f"internal error: {type(e).__name__}")
    else:
        if action == "unenroll":
            await rt.store.update(item_id, UNENROLL_PENDING, state=UNENROLLED,
                                  attempts=attempt, reason=None, next_attempt_at=None)
            logs.event(log, logs.INFO, "item.unenrolled", **ids, course=course,
                       attempt=attempt)
            return
        await rt.store.update(item_id, PENDING, state=ENROLLED, attempts=attempt, reason=None,
                              next_attempt_at=None)
        logs.event(log, logs.INFO, "item.enrolled", **ids, course=course, attempt=attempt,
                   result=result)
        # a refund that came in meanwhile: unenroll now, in this job
        fresh = await rt.store.item_for_job(item_id)
        if fresh is not None and fresh["unenroll_requested_at"] is not None:
            await rt.store.update(item_id, ENROLLED, state=UNENROLL_PENDING, attempts=0,
                                  next_attempt_at=utcnow())
            await _attempt(rt, item_id)


async def _transient(rt: Runtime, item: dict, ids: dict, attempt: int, reason: str) -> None:
    if attempt >= rt.attempts:
        await _fail(rt, item, ids, attempt, f"{reason} (after {attempt} attempts)")
        return
    when = utcnow() + dt.timedelta(seconds=rt.delay_seconds)
    await rt.store.update(item["id"], item["state"], attempts=attempt, reason=reason,
                          next_attempt_at=when)
    sched.schedule_retry(rt.scheduler, item["id"], when)
    logs.event(log, logs.WARNING, "item.retry", **ids, attempt=attempt,
               next_in=round(rt.delay_seconds), reason=reason)


async def _fail(rt: Runtime, item: dict, ids: dict, attempt: int, reason: str) -> None:
    failed = UNENROLL_FAILED if item["state"] == UNENROLL_PENDING else FAILED
    await rt.store.update(item["id"], item["state"], state=failed, attempts=attempt,
                          reason=reason, next_attempt_at=None)
    event = "item.unenroll_failed" if failed == UNENROLL_FAILED else "item.failed"
    logs.event(log, logs.ERROR, event, **ids, attempt=attempt, reason=reason)


def _reason(item: dict) -> str:
    """What the LMS audit log records: the order, findable from either side."""
    return f"edx-hooks {item['provider']} order {item['order_name']} ({item['shop']})"[:255]

