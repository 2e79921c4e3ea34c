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
import collections
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from . import logs
from . import scheduler as sched
from .batches import Batcher, Entry, unsendable
from .errors import (
    Halted,
    OutcomeUnknown,
    PermanentError,
    Throttled,
    TransientError,
    Withdrawn,
)
from .lms import LMSClient
from .store import (
    AWAITING_ACCOUNT,
    ENROLLED,
    NOT_A_COURSE,
    NOT_ENROLLED,
    PENDING,
    SCHEDULED,
    UNENROLL_FAILED,
    UNENROLL_PENDING,
    UNENROLLED,
    UNKNOWN,
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
#: the modes a learner may have for free: selling one never downgrades an
#: enrollment in a paid mode
FREE_MODES = ("audit", "honor")


#: items in progress at once at most (see Runtime.admission)
ITEMS_AT_ONCE = 200


class Admission:
    """A cap on items in progress, taken a job's block at once, first come
    first served: a job never holds part of its block while waiting for the
    rest (which would let jobs deadlock, each holding a part)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.free = capacity
        self._waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    async def take(self, n: int) -> None:
        n = min(n, self.capacity)
        if not self._waiting and self.free >= n:
            self.free -= n
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((n, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():
                if (n, future) in self._waiting:  # give() may have dropped it already
                    self._waiting.remove((n, future))
                self.give(0)  # those behind it may fit now
            else:
                self.give(n)  # granted as it was cancelled
            raise

    def give(self, n: int) -> None:
        self.free += n
        while self._waiting and self._waiting[0][0] <= self.free:
            k, future = self._waiting.popleft()
            if not future.done():
                self.free -= k
                future.set_result(None)


@dataclass
class Runtime:
    store: Store
    lms: LMSClient
    scheduler: AsyncIOScheduler
    attempts: int
    delay_seconds: float
    #: how often a learner without an account is looked for, and how long
    account_check: dt.timedelta = dt.timedelta(minutes=60)
    account_wait: dt.timedelta = dt.timedelta(days=60)
    #: bulk enrollment calls, many learners each (see batches)
    batcher: Batcher | None = None
    #: items in progress at once at most (read, waiting for a call or in one):
    #: enough to fill batches for several courses, while a backlog of
    #: thousands waits here without a row read or a call queued
    admission: Admission = field(default_factory=lambda: Admission(ITEMS_AT_ONCE))
    #: items a job holds (waiting its turn, or at the LMS)
    running: set[int] = field(default_factory=set)
    tasks: set[asyncio.Task] = field(default_factory=set)
    #: the items' tasks waiting for their turn at the LMS (the pacer, a batch)
    waiting: set[asyncio.Task] = field(default_factory=set)
    #: the items' tasks whose LMS call is under way, or whose outcome is being
    #: recorded (by task: the item)
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
    if rt.batcher is not None:
        rt.batcher.halt()
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
    interrupted = sorted(rt.calling.values()) if late else []
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late, timeout=1.0)
    if rt.batcher is not None:
        await rt.batcher.close()
    return interrupted


async def enroll_items(item_ids: list[int]) -> None:
    """Make one attempt at each of these line items, one after the other;
    schedule the next attempt where one is needed. A failure around one item
    (say, the database refusing to record its outcome) stays with that item:
    the others go on."""
    await _run(item_ids, _attempt)


async def check_accounts(item_ids: list[int]) -> None:
    """Look for the accounts of these items' learners (awaiting-account), and
    set the paid mode of those who have an active one now. A turn at the LMS
    is taken only for that call: a check that finds no account costs none."""
    await _run(item_ids, _check)


async def _run(item_ids: list[int],
               step: Callable[[Runtime, int, dict | None], Awaitable[None]]) -> None:
    """A job: its items admitted (the runtime's cap on items in progress),
    read in one query, then each worked on in a task of its own, all at once
    (the LMS sees them one turn, or one batch, at a time: read together, they
    are queued together). A failure around one item stays with that item."""
    rt = _runtime
    if rt is None:
        raise RuntimeError("edx_hooks.jobs.bind() was not called")
    if rt.stopping:
        return
    # An item in flight in another job is left to it; should this job have
    # been made for a change that came meanwhile (a refund after its
    # enrollment), it looks again once that job is done.
    mine = [i for i in dict.fromkeys(item_ids) if i not in rt.running]
    for item_id in item_ids:
        if item_id in rt.running:
            _schedule_next_attempt(rt, item_id, BUSY_RECHECK_SECONDS)
    rt.running.update(mine)
    task = asyncio.current_task()
    if task is not None:
        rt.tasks.add(task)
    admitted = 0
    try:
        for start in range(0, len(mine), rt.admission.capacity):
            chunk = mine[start:start + rt.admission.capacity]
            await rt.admission.take(len(chunk))  # given back item by item
            admitted = len(chunk)
            try:
                rows = {row["id"]: row for row in await rt.store.items_for_jobs(chunk)}
            except StoreClosed:
                raise
            except Exception:  # the database busy, say: these items and the rest, later
                logs.event(log, logs.ERROR, "items.unread", items=len(mine) - start,
                           exc_info=True)
                for item_id in mine[start:]:
                    _schedule_next_attempt(rt, item_id, rt.delay_seconds)
                break
            admitted = 0
            # return_exceptions: the job ends only when every item's task has
            # (stopping waits for the job, so for a call under way in any)
            await asyncio.gather(*(_one(rt, item_id, rows.get(item_id), step)
                                   for item_id in chunk), return_exceptions=True)
    except (asyncio.CancelledError, StoreClosed):
        pass  # stopping: the items stay pending, the next start resumes them
    finally:
        rt.admission.give(admitted)  # taken, but its items never started
        rt.running.difference_update(mine)
        if task is not None:
            rt.tasks.discard(task)


async def _one(rt: Runtime, item_id: int, item: dict | None,
               step: Callable[[Runtime, int, dict | None], Awaitable[None]]) -> None:
    try:
        if item is not None and not rt.stopping:
            await step(rt, item_id, item)
    except (asyncio.CancelledError, StoreClosed):
        raise
    except Exception:
        logs.event(log, logs.ERROR, "item.error", item=item_id, exc_info=True)
        _schedule_next_attempt(rt, item_id, rt.delay_seconds)
    finally:
        rt.running.discard(item_id)
        rt.admission.give(1)


def mark_calls_under_way(entries: list[Entry]) -> None:
    """A batch call takes these items: their tasks' calls are under way now
    (stopping lets them finish)."""
    rt = _runtime
    if rt is None:
        return
    for entry in entries:
        if entry.task is not None:
            rt.waiting.discard(entry.task)
            rt.calling[entry.task] = entry.item_id


async def _wait_for_pacer(rt: Runtime) -> bool:
    """Wait for this call's turn at the LMS (the pacer); False if stopping
    came first. Stopping cuts the wait short: nothing has reached the LMS."""
    task = asyncio.current_task()
    item_id = rt.calling.pop(task, None)
    rt.waiting.add(task)
    try:
        await rt.lms.pacer.wait()
    finally:
        rt.waiting.discard(task)
    if item_id is not None:
        rt.calling[task] = item_id
    return not rt.stopping


def _schedule_next_attempt(rt: Runtime, item_id: int, seconds: float) -> None:
    """Give an item its next attempt in ``seconds``; should even that fail,
    the sweep gives it one."""
    try:
        sched.schedule_retry(rt.scheduler, item_id, utcnow() + dt.timedelta(seconds=seconds))
    except Exception:
        logs.event(log, logs.ERROR, "schedule.failed", items=1, exc_info=True)


async def _attempt(rt: Runtime, item_id: int, item: dict | None = None) -> None:
    """One step of an item's work: enroll it (pending), or unenroll it
    (unenroll-pending, after a refund); ``item`` as its job read it. An
    unenroll requested while the enrollment was under way follows it here,
    in the same job: never a race. A pending item whose refund or
    cancellation has come is not enrolled (and its batch asks again just
    before its call goes out)."""
    if item is None:
        item = await rt.store.item_for_job(item_id)
    if item is None or item["state"] not in SCHEDULED:
        rt.unrecorded.pop(item_id, None)
        return
    if rt.stopping:
        return
    ids = {"provider": item["provider"], "order": item["order_external_id"], "item": item_id}
    if item_id in rt.unrecorded:
        state = await _record_again(rt, item, ids)
    elif item["state"] == AWAITING_ACCOUNT:  # its account check's (check_accounts)
        sched.schedule_check(rt.scheduler, item_id, item["next_attempt_at"] or utcnow())
        return
    elif item["state"] == PENDING and item["withdrawn"]:
        state = await _withdraw(rt, item, ids)
    else:
        action = "unenroll" if item["state"] == UNENROLL_PENDING else "enroll"
        wait = _until_confirmable(item, action)
        if wait > 0:  # its last call may still be at the LMS: ask once it is due
            logs.event(log, logs.DEBUG, "item.awaits_call", **ids, seconds=round(wait, 1))
            _schedule_next_attempt(rt, item_id, wait)
            return
        attempt = item["attempts"] + (item["state"] != AWAITING_ACCOUNT)
        logs.event(log, logs.DEBUG, "item.attempt", **ids, action=action, attempt=attempt,
                   email=item["email"], sku=item["sku"], mode=item["mode"])
        state = await _enroll_or_unenroll_counted(rt, item, ids, action, attempt)
    if state == UNENROLL_PENDING and not rt.stopping:
        await _attempt(rt, item_id)  # refunded meanwhile: unenroll now, in this job


def _until_confirmable(item: dict, action: str) -> float:
    """Seconds until the LMS can be asked about the item's last call (its
    deadline: before that, it may still be at work on it); 0 if it can be
    asked now, or if there is nothing to ask."""
    if item["unconfirmed"] != action or item["confirm_after"] is None:
        return 0.0
    return max(0.0, (item["confirm_after"] - utcnow()).total_seconds())


async def _check(rt: Runtime, item_id: int, item: dict | None = None) -> None:
    """An account check: see :func:`check_accounts`."""
    if item is None:
        item = await rt.store.item_for_job(item_id)
    if item is None or item["state"] != AWAITING_ACCOUNT or rt.stopping:
        return  # its other states have jobs of their own
    ids = {"provider": item["provider"], "order": item["order_external_id"], "item": item_id}
    if item["withdrawn"]:
        await _withdraw(rt, item, ids)
        return
    if await _enroll_or_unenroll_counted(rt, item, ids, "enroll",
                                         item["attempts"]) == UNENROLL_PENDING \
            and not rt.stopping:
        await _attempt(rt, item_id)  # refunded meanwhile: unenroll now, in this job


async def _enroll_or_unenroll_counted(rt: Runtime, item: dict, ids: dict, action: str,
                                      attempt: int) -> str | None:
    """:func:`_enroll_or_unenroll`, counted as a call under way (stopping lets
    it finish)."""
    task = asyncio.current_task()
    rt.calling[task] = item["id"]
    try:
        return await _enroll_or_unenroll(rt, item, ids, action, attempt)
    except asyncio.CancelledError:
        if task in rt.calling:  # cut off mid-call, past the stop's bound
            logs.event(log, logs.WARNING, "items.interrupted", items=item["id"])
        raise
    finally:
        rt.calling.pop(task, None)


async def _withdraw(rt: Runtime, item: dict, ids: dict) -> str | None:
    """An item not yet enrolled whose refund or cancellation has come: not
    enrolled. Unless an earlier attempt's outcome is unknown (its call timed
    out: the LMS may have enrolled it): then, with unenroll_on_refund, it is
    unenrolled (harmless if it was not enrolled). An item awaiting its
    learner's account stops waiting (with unenroll_on_refund it would have
    been unenrolled already: its allowance deleted).

    Each change holds only while the refund or cancellation is in force: one
    that a later delivery lifted meanwhile (WooCommerce: the order placed
    again) leaves the item to a fresh attempt, which enrolls it."""
    state = item["state"]
    unknown = item["unconfirmed"] == "enroll"
    if unknown and item["unenroll_requested_at"] is not None:
        now = utcnow()
        if await rt.store.withdraw(item["id"], state, state=UNENROLL_PENDING, attempts=0,
                                   reason=None, next_attempt_at=now, pending_since=now):
            return UNENROLL_PENDING
        _schedule_next_attempt(rt, item["id"], 0.0)
        return None
    if state == AWAITING_ACCOUNT:
        reason = (f"{item['withdrawn']} while the learner's account was awaited: the paid "
                  "mode is not set (unenroll_on_refund is off: the LMS's allowance stays)")
    else:
        reason = f"{item['withdrawn']} before it was enrolled: not enrolled" + (
            " (an earlier call's outcome is unknown: check the LMS)" if unknown else "")
    if not await rt.store.withdraw(item["id"], state, state=NOT_ENROLLED, reason=reason,
                                   next_attempt_at=None, wait_until=None):
        _schedule_next_attempt(rt, item["id"], 0.0)  # lifted, or moved on: look again
        return None
    logs.event(log, logs.INFO, "item.not_enrolled", **ids, reason=reason)
    return NOT_ENROLLED


async def _enroll_or_unenroll(rt: Runtime, item: dict, ids: dict, action: str,
                              attempt: int) -> str | None:
    """The LMS call(s) of one attempt, and the recording of their outcome;
    returns the state recorded when the LMS confirmed.

    Without a mode: one bulk enrollment call, as the LMS's default mode.
    With one: the learner's account is looked up; an active one is enrolled
    in the mode through the enrollment API; for a learner without one, bulk
    enrollment with auto_enroll (the LMS enrolls them, in its default mode,
    when they activate) and the item awaits the account, to set the mode then.
    """
    item_id, course, mode = item["id"], item["course_id"], item["mode"]
    following = item["state"] == AWAITING_ACCOUNT
    if not item["email"] and course is None and item["sku"] and action == "enroll":
        return await _course_or_merchandise(rt, item, ids, attempt)
    problem = unsendable(item["email"], course or item["sku"])
    if problem:  # never put in a call, no attempt used
        await _fail(rt, item, ids, item["attempts"], problem)
        return None
    try:
        if course is None:
            course = await rt.lms.resolve_sku(item["sku"])
            await rt.store.update(item_id, PENDING, course_id=course)
            if rt.stopping:
                return None
        if action == "unenroll" or mode is None:
            result = await _batched(rt, item, course, action,
                                    rt.lms.auto_enroll and action == "enroll")
            done = Done(UNENROLLED if action == "unenroll" else ENROLLED, attempt,
                        {"course": course, **({"result": result} if action == "enroll" else {})})
        else:
            account = await rt.lms.account(item["email"])
            if account is not None and account.get("is_active") is True:
                mode = await _mode(rt, str(account["username"]), course, mode)
                done = Done(ENROLLED, attempt, {"course": course, "mode": mode},
                            expected=item["state"],
                            event="item.mode_set" if following else "item.enrolled")
            elif following:
                return await _wait_more(rt, item, ids)
            else:
                now = utcnow()
                if item["wait_until"] is None:
                    result = await _batched(rt, item, course, "enroll", True)
                else:  # retried after a wait: the LMS's allowance is there already
                    result = "allowed before"
                done = Done(AWAITING_ACCOUNT, attempt,
                            {"course": course, "mode": mode, "result": result},
                            next_attempt_at=now + rt.account_check,
                            wait_until=now + rt.account_wait, event="item.awaiting_account")
    except Halted:
        return None  # stopping before the call went out: still pending, no attempt used
    except Withdrawn:  # refunded while it waited for its batch: as it is now
        fresh = await rt.store.item_for_job(item_id)
        if fresh is None or fresh["state"] != item["state"]:
            return None  # changed meanwhile (by `edx-hooks retry`, say): not ours now
        return await _withdraw(rt, fresh, ids)
    except Throttled as e:
        # Throttling is the LMS pacing us, not a failed attempt.
        when = utcnow() + dt.timedelta(seconds=e.retry_after)
        if await rt.store.update(item_id, item["state"], reason=str(e), next_attempt_at=when):
            _next(rt, item, when)
        logs.event(log, logs.WARNING, "item.throttled", **ids, retry_after=round(e.retry_after))
        return None
    except PermanentError as e:
        await _fail(rt, item, ids, attempt, str(e))
        return None
    except TransientError as e:
        if following:  # the next check comes anyway
            return await _wait_more(rt, item, ids, str(e))
        await _transient(rt, item, ids, attempt, str(e),
                         unconfirmed=action if isinstance(e, OutcomeUnknown) else None)
        return None
    except Exception as e:  # a bug must leave a visible trace, not a stuck item
        logs.event(log, logs.ERROR, "item.error", **ids, attempt=attempt, exc_info=True)
        if following:
            return await _wait_more(rt, item, ids, f"internal error: {type(e).__name__}")
        await _transient(rt, item, ids, attempt, f"internal error: {type(e).__name__}")
        return None
    return await _record(rt, item_id, ids, done)


async def _course_or_merchandise(rt: Runtime, item: dict, ids: dict, attempt: int) -> None:
    """A line item without a learner email whose SKU only the LMS can place
    (``Catalog.without_learner``). A SKU that redirects to a course: a
    course sold without its learner's email, a failure to fix in the shop.
    One that names no course: merchandise, not-a-course at info level, no
    part of its order's state."""
    try:
        course = await rt.lms.resolve_sku(item["sku"])
    except Halted:
        return None
    except PermanentError:
        reason = (f"not a course (SKU {item['sku']!r} names none) and no learner email: "
                  "nothing to enroll")
        if await rt.store.update(item["id"], item["state"], state=NOT_A_COURSE, reason=reason,
                                 next_attempt_at=None):
            logs.event(log, logs.INFO, "item.not_a_course", **ids, reason=reason)
        return None
    except TransientError as e:
        await _transient(rt, item, ids, attempt, str(e))
        return None
    await rt.store.update(item["id"], item["state"], course_id=course)
    await _fail(rt, item, ids, attempt, f"no learner email for course {course}: collect it "
                                        "in the shop (see learner_email_properties)")


async def _wait_more(rt: Runtime, item: dict, ids: dict, error: str | None = None) -> None:
    """The learner has no active account yet: look again in
    ``lms.account_check_minutes``, or, past ``lms.account_wait_days``, fail."""
    now = utcnow()
    if item["wait_until"] is not None and now >= item["wait_until"]:
        await _fail(rt, item, ids, item["attempts"],
                    "no active LMS account for the learner within lms.account_wait_days: the "
                    "paid mode is not set (the LMS still enrolls them in its default mode at "
                    "activation); `edx-hooks retry` waits again"
                    + (f" (the last check: {error})" if error else ""))
        return None
    when = now + rt.account_check
    # Only if it still awaits: a refund may have made it unenroll-pending
    # meanwhile, and its unenrollment's job must not be pushed back.
    if await rt.store.update(item["id"], AWAITING_ACCOUNT, next_attempt_at=when, reason=error):
        sched.schedule_check(rt.scheduler, item["id"], when)
    return None


async def _mode(rt: Runtime, username: str, course: str, mode: str) -> str:
    """Enroll an account in ``mode`` (the enrollment API), unless the mode is
    a free one (audit, honor) and the learner is enrolled in a paid mode
    already: never a downgrade. Returns the mode they are in. Each of these
    calls takes its turn at the LMS (the throttle counts them)."""
    if mode in FREE_MODES:
        if not await _wait_for_pacer(rt):
            raise Halted("stopping: the call was not made")
        current = await rt.lms.enrollment_of(username, course, slot_taken=True)
        if current and current.get("is_active") and current.get("mode") not in FREE_MODES:
            return str(current["mode"])
    if not await _wait_for_pacer(rt):
        raise Halted("stopping: the call was not made")
    await rt.lms.enroll_in_mode(username, course, mode, slot_taken=True)
    return mode


async def _batched(rt: Runtime, item: dict, course: str, action: str,
                   auto_enroll: bool) -> str:
    """The item's learner in the next bulk enrollment call for the course
    (see batches): its outcome for them. Waiting for the call can be cut
    short by stopping; once a call has taken the item, stopping lets it
    finish.

    An item whose last call's outcome is unknown (its answer was lost, or
    the service died while it was at the LMS) is not sent again before the
    LMS is asked what it did: what the LMS shows is its outcome, with no
    call (and no second email)."""
    if item["unconfirmed"] == action:
        shown = await rt.lms.shows(action, course, item["email"])
        logs.event(log, logs.INFO, "item.confirmed" if shown else "item.unconfirmed",
                   provider=item["provider"], order=item["order_external_id"],
                   item=item["id"], action=action, shown=shown or "nothing")
        if shown is not None:
            return shown
    task = asyncio.current_task()
    rt.calling.pop(task, None)
    rt.waiting.add(task)
    try:
        return await rt.batcher.submit((course, action, auto_enroll), item["id"],
                                       item["email"], f"{item['provider']} {item['order_name']}")
    finally:
        rt.waiting.discard(task)


def _next(rt: Runtime, item: dict, when: dt.datetime) -> None:
    """The item's next step at ``when``: an account check, or an attempt."""
    if item["state"] == AWAITING_ACCOUNT:
        sched.schedule_check(rt.scheduler, item["id"], when)
    else:
        sched.schedule_retry(rt.scheduler, item["id"], when)


@dataclass
class Done:
    """An outcome the LMS confirmed, to be recorded."""
    state: str  # ENROLLED, AWAITING_ACCOUNT or UNENROLLED
    attempt: int
    fields: dict[str, Any]  # for the event line
    #: the state the item is in until this is recorded (default: from ``state``)
    expected: str = ""
    event: str = ""
    next_attempt_at: dt.datetime | None = None
    wait_until: dt.datetime | None = None

    def __post_init__(self) -> None:
        self.expected = self.expected or (
            UNENROLL_PENDING if self.state == UNENROLLED else PENDING)
        self.event = self.event or (
            "item.unenrolled" if self.state == UNENROLLED else "item.enrolled")


async def _write(rt: Runtime, item_id: int, done: Done) -> str | None:
    """Record ``done``; the state set (None if the item was no longer in
    the state expected)."""
    if done.state in (ENROLLED, AWAITING_ACCOUNT):
        # that, or unenroll-pending if refunded meanwhile: in one statement
        return await rt.store.record_enrolled(item_id, done.expected, done.state, done.attempt,
                                              done.next_attempt_at, done.wait_until)
    changed = await rt.store.update(item_id, UNENROLL_PENDING, state=UNENROLLED,
                                    attempts=done.attempt, reason=None, next_attempt_at=None,
                                    unconfirmed=None, confirm_after=None)
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
        if state is None:  # changed meanwhile (an operator, a newer delivery): not ours
            logs.event(log, logs.DEBUG, "item.outcome_moot", **ids, outcome=done.state)
        elif state == AWAITING_ACCOUNT:
            sched.schedule_check(rt.scheduler, item_id, done.next_attempt_at)
            logs.event(log, logs.INFO, done.event, **ids, **done.fields,
                       check_in_minutes=round(rt.account_check.total_seconds() / 60, 3),
                       until=f"{done.wait_until:%Y-%m-%dT%H:%M:%S}Z")
        else:
            logs.event(log, logs.INFO, done.event, **ids, attempt=done.attempt, **done.fields)
        return state
    rt.unrecorded[item_id] = done
    logs.event(log, logs.ERROR, "item.unrecorded", **ids, outcome=done.state,
               next_in=round(rt.delay_seconds), error=error)
    _schedule_next_attempt(rt, item_id, rt.delay_seconds)
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


async def _transient(rt: Runtime, item: dict, ids: dict, attempt: int, reason: str,
                     unconfirmed: str | None = None) -> None:
    """An attempt that may succeed later: the next one after the retry
    delay, or, after the last, failed (unknown if the outcome of a call is).
    ``unconfirmed``: the action whose answer was lost (a bulk enrollment
    call's items were marked before it went out; this marks the others)."""
    if attempt >= rt.attempts:
        await _fail(rt, item, ids, attempt, f"{reason} (after {attempt} attempts)",
                    unconfirmed)
        return
    when = utcnow() + dt.timedelta(seconds=rt.delay_seconds)
    marked = {"unconfirmed": unconfirmed} if unconfirmed else {}
    if await rt.store.update(item["id"], item["state"], attempts=attempt, reason=reason,
                             next_attempt_at=when, **marked):
        sched.schedule_retry(rt.scheduler, item["id"], when)
    logs.event(log, logs.WARNING, "item.retry", **ids, attempt=attempt,
               next_in=round(rt.delay_seconds), reason=reason)


async def _fail(rt: Runtime, item: dict, ids: dict, attempt: int, reason: str,
                unconfirmed: str | None = None) -> None:
    """No attempt left: failed, or unknown where a call's outcome is (the
    database knows: see ``items.unconfirmed``)."""
    if unconfirmed:
        await rt.store.update(item["id"], item["state"], unconfirmed=unconfirmed)
    state = await rt.store.record_failed(item["id"], item["state"], attempt, reason)
    if state is None:
        return  # changed meanwhile: not ours
    event = {UNKNOWN: "item.unknown", UNENROLL_FAILED: "item.unenroll_failed"}.get(
        state, "item.failed")
    logs.event(log, logs.ERROR, event, **ids, attempt=attempt, reason=reason)
