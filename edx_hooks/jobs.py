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
from .store import PENDING, Store, utcnow

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
    # Wait for this attempt's turn at the LMS first: during a burst most
    # items wait here, and they need not hold a row read from the database.
    await rt.lms.pacer.wait()
    item = await rt.store.item_for_job(item_id)
    if item is None or item["state"] != PENDING:
        return
    ids = {"provider": item["provider"], "order": item["order_external_id"], "item": item_id}
    logs.event(log, logs.DEBUG, "item.attempt", **ids, attempt=item["attempts"] + 1,
               email=item["email"], sku=item["sku"])
    attempt = item["attempts"] + 1
    course = item["course_id"]
    try:
        if course is None:
            course = await rt.lms.resolve_sku(item["sku"])
            await rt.store.set_course(item_id, course)
        result = await rt.lms.enroll(course, item["email"], reason=_reason(item),
                                     slot_taken=True)
    except Throttled as e:
        # Throttling is the LMS pacing us, not a failed attempt.
        when = utcnow() + dt.timedelta(seconds=e.retry_after)
        await rt.store.mark_retry(item_id, item["attempts"], str(e), when)
        sched.schedule_retry(rt.scheduler, item_id, when)
        logs.event(log, logs.WARNING, "item.throttled", **ids, retry_after=round(e.retry_after))
    except PermanentError as e:
        await _fail(rt, item_id, ids, attempt, str(e))
    except TransientError as e:
        await _transient(rt, item_id, ids, attempt, str(e))
    except Exception as e:  # a bug must leave a visible trace, not a stuck item
        logs.event(log, logs.ERROR, "item.error", **ids, attempt=attempt, exc_info=True)
        await _transient(rt, item_id, ids, attempt, f"internal error: {type(e).__name__}")
    else:
        await rt.store.mark_enrolled(item_id, attempt)
        logs.event(log, logs.INFO, "item.enrolled", **ids, course=course, attempt=attempt,
                   result=result)


async def _transient(rt: Runtime, item_id: int, ids: dict, attempt: int, reason: str) -> None:
    if attempt >= rt.attempts:
        await _fail(rt, item_id, ids, attempt, f"{reason} (after {attempt} attempts)")
        return
    when = utcnow() + dt.timedelta(seconds=rt.delay_seconds)
    await rt.store.mark_retry(item_id, attempt, reason, when)
    sched.schedule_retry(rt.scheduler, item_id, when)
    logs.event(log, logs.WARNING, "item.retry", **ids, attempt=attempt,
               next_in=round(rt.delay_seconds), reason=reason)


async def _fail(rt: Runtime, item_id: int, ids: dict, attempt: int, reason: str) -> None:
    await rt.store.mark_failed(item_id, attempt, reason)
    logs.event(log, logs.ERROR, "item.failed", **ids, attempt=attempt, reason=reason)


def _reason(item: dict) -> str:
    """What the LMS audit log records: the order, findable from either side."""
    return f"edx-hooks {item['provider']} order {item['order_name']} ({item['shop']})"[:255]

