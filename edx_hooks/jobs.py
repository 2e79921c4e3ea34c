"""The enrollment job: its line items one after the other, one attempt and
one LMS call each.

APScheduler persists jobs by reference and with plain arguments, so the job
is a module-level coroutine taking item ids (``edx_hooks.jobs:enroll_items``:
a stored job names it, so the name stays); what it needs at run time (store,
LMS client, scheduler, retry policy) is bound once at start-up with
:func:`bind`.

Stopping (:func:`drain`) starts no new call, lets a call under way finish and
its outcome be recorded, and leaves the rest pending for the next start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from . import logs
from . import scheduler as sched
from .lms import Halted, LMSClient, PermanentError, Throttled, TransientError
from .store import (
    ACTIVE,
    ENROLLED,
    FAILED,
    NOT_ENROLLED,
    PENDING,
    UNENROLL_FAILED,
    UNENROLL_PENDING,
    UNENROLLED,
    Store,
    StoreClosed,
    utcnow,
)

log = logging.getLogger("edx_hooks.jobs")

#: pauses between the tries at recording an outcome the LMS has given, before
#: the item is left to its next attempt (which records it then)
RECORD_TRIES = (0.0, 0.5)
#: when an item is due in a job while another job holds it, it is looked at
#: again this much later
BUSY_RECHECK_SECONDS = 1.0


@dataclass
class Runtime:
    store: Store
    lms: LMSClient
    scheduler: AsyncIOScheduler
    attempts: int
    delay_seconds: float
    #: items a job holds (waiting its turn, or at the LMS)
    running: set[int] = field(default_factory=set)
    tasks: set[asyncio.Task] = field(default_factory=set)
    #: the jobs waiting for their turn at the LMS (the pacer)
    waiting: set[asyncio.Task] = field(default_factory=set)
    #: the jobs whose LMS call is under way, or whose outcome is being recorded
    calling: dict[asyncio.Task, int] = field(default_factory=dict)
    #: set by drain(): no new LMS call starts
    stopping: bool = False
    #: outcomes the LMS gave that the database did not take, by item id:
    #: recorded at the item's next attempt, without a second call
    unrecorded: dict[int, Done] = field(default_factory=dict)


_runtime: Runtime | None = None


def bind(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def halt() -> None:
    """From now on no LMS call starts; jobs waiting their turn leave at once
    (nothing of theirs has reached the LMS; their items stay pending). The
    others finish the step they are in (a database read, a call under way)
    and leave before the next."""
    rt = _runtime
    if rt is None:
        return
    rt.stopping = True
    rt.lms.halt()
    for task in list(rt.waiting):
        task.cancel()


def tracked(fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    """A housekeeping job (sweep, retention) that stopping lets finish, as it
    lets a call under way finish, rather than cut off mid-query."""
    @functools.wraps(fn)
    async def run() -> None:
        rt, task = _runtime, asyncio.current_task()
        if rt is None or rt.stopping or task is None:
            return
        rt.tasks.add(task)
        try:
            await fn()
        finally:
            rt.tasks.discard(task)
    return run


async def drain(timeout: float) -> list[int]:
    """Stop (:func:`halt`), and give a call under way up to ``timeout``
    seconds to finish and have its outcome recorded. Returns the items whose
    call was still under way then (interrupted: their call may be repeated at
    the next start)."""
    rt = _runtime
    halt()
    if rt is None or not rt.tasks:
        return []
    _, late = await asyncio.wait(set(rt.tasks), timeout=timeout)
    interrupted = [rt.calling[t] for t in late if t in rt.calling]
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late, timeout=1.0)
    return interrupted


async def enroll_items(item_ids: list[int]) -> None:
    """Make one attempt at each of these line items, one after the other;
    schedule the next attempt where one is needed. A failure around one item
    (say, the database refusing to record its outcome) stays with that item:
    the others go on."""
    rt = _runtime
    if rt is None:
        raise RuntimeError("edx_hooks.jobs.bind() was not called")
    if rt.stopping:
        return
    # An item in flight in another job is left to it; should this job have
    # been made for a change that came meanwhile (a refund after its
    # enrollment), it looks again once that job is done.
    mine = [i for i in item_ids if i not in rt.running]
    for item_id in item_ids:
        if item_id in rt.running:
            _again(rt, item_id, BUSY_RECHECK_SECONDS)
    rt.running.update(mine)
    task = asyncio.current_task()
    if task is not None:
        rt.tasks.add(task)
    left = list(mine)
    try:
        while left and not rt.stopping:
            item_id = left[0]
            try:
                await _attempt(rt, item_id)
            except (asyncio.CancelledError, StoreClosed):
                raise
            except Exception:
                logs.event(log, logs.ERROR, "item.error", item=item_id, exc_info=True)
                _again(rt, item_id, rt.delay_seconds)
            finally:
                rt.running.discard(item_id)
                left.pop(0)
    except (asyncio.CancelledError, StoreClosed):
        pass  # stopping: the items stay pending, the next start resumes them
    finally:
        rt.running.difference_update(left)
        if task is not None:
            rt.tasks.discard(task)


def _again(rt: Runtime, item_id: int, seconds: float) -> None:
    """Give an item its next attempt in ``seconds``; should even that fail,
    the sweep gives it one."""
    try:
        sched.schedule_retry(rt.scheduler, item_id, utcnow() + dt.timedelta(seconds=seconds))
    except Exception:
        logs.event(log, logs.ERROR, "schedule.failed", items=1, exc_info=True)


async def _attempt(rt: Runtime, item_id: int) -> None:
    """One step of an item's work: enroll it (pending), or unenroll it
    (unenroll-pending, after a refund). An unenroll requested while the
    enrollment was under way follows it here, in the same job: never a race.
    A pending item whose refund or cancellation has come is not enrolled."""
    # Wait for this attempt's turn at the LMS first: during a burst most
    # items wait here, and they need not hold a row read from the database.
    task = asyncio.current_task()
    rt.waiting.add(task)
    try:
        await rt.lms.pacer.wait()
    finally:
        rt.waiting.discard(task)
    if rt.stopping:
        return
    item = await rt.store.item_for_job(item_id)
    if item is None or item["state"] not in ACTIVE:
        rt.unrecorded.pop(item_id, None)
        return
    if rt.stopping:
        return
    ids = {"provider": item["provider"], "order": item["order_external_id"], "item": item_id}
    if item_id in rt.unrecorded:
        state = await _record_again(rt, item, ids)
    elif item["state"] == PENDING and item["withdrawn"]:
        state = await _withdraw(rt, item, ids)
    else:
        action = "unenroll" if item["state"] == UNENROLL_PENDING else "enroll"
        attempt = item["attempts"] + 1
        logs.event(log, logs.DEBUG, "item.attempt", **ids, action=action, attempt=attempt,
                   email=item["email"], sku=item["sku"])
        rt.calling[task] = item_id
        try:
            state = await _call(rt, item, ids, action, attempt)
        except asyncio.CancelledError:  # cut off mid-call, past the stop's bound
            logs.event(log, logs.WARNING, "items.interrupted", items=item_id)
            raise
        finally:
            rt.calling.pop(task, None)
    if state == UNENROLL_PENDING and not rt.stopping:
        await _attempt(rt, item_id)  # refunded meanwhile: unenroll now, in this job


async def _withdraw(rt: Runtime, item: dict, ids: dict) -> str | None:
    """A pending item whose refund or cancellation has come: not enrolled.
    Unless an earlier attempt's outcome is unknown (its call timed out or
    could not be made sure of: the LMS may have enrolled it): then, with
    unenroll_on_refund, it is unenrolled (harmless if it was not enrolled)."""
    unknown = item["attempts"] > 0 and (item["reason"] or "").startswith("LMS unreachable")
    if unknown and item["unenroll_requested_at"] is not None:
        now = utcnow()
        if await rt.store.update(item["id"], PENDING, state=UNENROLL_PENDING, attempts=0,
                                 reason=None, next_attempt_at=now, pending_since=now):
            return UNENROLL_PENDING
        return None
    reason = f"{item['withdrawn']} before it was enrolled: not enrolled" + (
        " (an earlier attempt's call timed out: check the LMS)" if unknown else "")
    await rt.store.update(item["id"], PENDING, state=NOT_ENROLLED, reason=reason,
                          next_attempt_at=None)
    logs.event(log, logs.INFO, "item.not_enrolled", **ids, reason=reason)
    return NOT_ENROLLED


async def _call(rt: Runtime, item: dict, ids: dict, action: str, attempt: int) -> str | None:
    """The LMS call(s) of one attempt, and the recording of their outcome;
    returns the state recorded when the LMS confirmed."""
    item_id, course = item["id"], item["course_id"]
    try:
        if course is None:
            course = await rt.lms.resolve_sku(item["sku"])
            await rt.store.update(item_id, PENDING, course_id=course)
            if rt.stopping:
                return None
        result = await rt.lms.bulk(action, course, item["email"], reason=_reason(item),
                                   slot_taken=True)
    except Halted:
        return None  # stopping before the call went out: still pending, no attempt used
    except Throttled as e:
        # Throttling is the LMS pacing us, not a failed attempt.
        when = utcnow() + dt.timedelta(seconds=e.retry_after)
        await rt.store.update(item_id, item["state"], reason=str(e), next_attempt_at=when)
        sched.schedule_retry(rt.scheduler, item_id, when)
        logs.event(log, logs.WARNING, "item.throttled", **ids, retry_after=round(e.retry_after))
        return None
    except PermanentError as e:
        await _fail(rt, item, ids, attempt, str(e))
        return None
    except TransientError as e:
        await _transient(rt, item, ids, attempt, str(e))
        return None
    except Exception as e:  # a bug must leave a visible trace, not a stuck item
        logs.event(log, logs.ERROR, "item.error", **ids, attempt=attempt, exc_info=True)
        await _transient(rt, item, ids, attempt, f"internal error: {type(e).__name__}")
        return None
    if action == "unenroll":
        done = Done(UNENROLLED, attempt, {"course": course})
    else:
        done = Done(ENROLLED, attempt, {"course": course, "result": result})
    return await _record(rt, item_id, ids, done)


@dataclass
class Done:
    """An outcome the LMS confirmed, to be recorded."""
    state: str  # ENROLLED or UNENROLLED
    attempt: int
    fields: dict[str, Any]  # for the event line

    @property
    def expected(self) -> str:
        """The state the item is in until this is recorded."""
        return PENDING if self.state == ENROLLED else UNENROLL_PENDING


async def _write(rt: Runtime, item_id: int, done: Done) -> str | None:
    """Record ``done``; the state set (None if the item was no longer in
    the state expected)."""
    if done.state == ENROLLED:
        # enrolled, or unenroll-pending if refunded meanwhile: in one statement
        return await rt.store.record_enrolled(item_id, done.attempt)
    changed = await rt.store.update(item_id, UNENROLL_PENDING, state=UNENROLLED,
                                    attempts=done.attempt, reason=None, next_attempt_at=None)
    return UNENROLLED if changed else None


async def _record(rt: Runtime, item_id: int, ids: dict, done: Done) -> str | None:
    """Record the outcome the LMS gave. Losing it would mean calling the LMS
    again (and the learner getting its email again), so it is tried twice,
    and if the database still refuses, kept in memory and recorded at the
    item's next attempt, without a second call."""
    error = ""
    for pause in RECORD_TRIES:
        await asyncio.sleep(pause)
        try:
            state = await _write(rt, item_id, done)
        except StoreClosed:
            raise
        except Exception as e:
            error = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            continue
        rt.unrecorded.pop(item_id, None)
        event = "item.enrolled" if done.state == ENROLLED else "item.unenrolled"
        logs.event(log, logs.INFO, event, **ids, attempt=done.attempt, **done.fields)
        return state
    rt.unrecorded[item_id] = done
    logs.event(log, logs.ERROR, "item.unrecorded", **ids, outcome=done.state,
               next_in=round(rt.delay_seconds), error=error)
    _again(rt, item_id, rt.delay_seconds)
    return None


async def _record_again(rt: Runtime, item: dict, ids: dict) -> str | None:
    """The next attempt of an item whose outcome the database did not take:
    record it now, with no LMS call."""
    done = rt.unrecorded[item["id"]]
    if item["state"] != done.expected:
        rt.unrecorded.pop(item["id"], None)
        return None
    return await _record(rt, item["id"], ids, done)


async def record_unrecorded() -> None:
    """At stop, after the drain: one more try at recording the outcomes the
    database did not take; what still fails is logged, and its call will be
    repeated at the next start."""
    rt = _runtime
    if rt is None:
        return
    for item_id in list(rt.unrecorded):
        item = await rt.store.item_for_job(item_id)
        if item is None:
            continue
        ids = {"provider": item["provider"], "order": item["order_external_id"],
               "item": item_id}
        await _record_again(rt, item, ids)


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
