"""Outcomes: what an attempt came to, recorded, and the item's next job.

An outcome the LMS confirmed (:class:`Done`) is recorded conditionally on
the item's state (an operator's retry or a newer delivery may have moved it
meanwhile: then it is not ours to write). Losing it would mean calling the
LMS again, and the learner getting its email again: a write the database
refuses is tried again, then kept in memory and recorded at the item's next
attempt, or at stop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .. import logs
from .. import scheduler as sched
from ..store import (
    AWAITING_ACCOUNT,
    ENROLLED,
    PENDING,
    UNENROLL_FAILED,
    UNENROLL_PENDING,
    UNENROLLED,
    UNKNOWN,
    JobItem,
    Store,
    StoreClosed,
    utcnow,
)

log = logging.getLogger("edx_hooks.jobs")

#: pauses between the tries at recording an outcome the LMS has given, before
#: the item is left to its next attempt (which records it then)
RECORD_TRIES = (0.0, 0.5)


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


class Outcomes:
    """Records outcomes and schedules each item's next job.

    Arguments:

    * ``store`` -- the :class:`~edx_hooks.store.Store` they are written to.
    * ``attempts`` -- attempts an item gets (``retry.attempts``): after the
      last, a transient error is a failure (unknown if a call's outcome is).
    * ``delay_seconds`` -- between two attempts (``retry.delay_seconds``).
    * ``account_check`` -- how often a learner without an account is looked
      for (``lms.account_check_minutes``).

    ``scheduler`` is set when the runtime starts.
    """

    def __init__(self, store: Store, attempts: int, delay_seconds: float,
                 account_check: dt.timedelta):
        self.store = store
        self.attempts = attempts
        self.delay_seconds = delay_seconds
        self.account_check = account_check
        self.scheduler: AsyncIOScheduler | None = None
        #: outcomes the LMS gave that the database did not take, by item id:
        #: recorded at the item's next attempt, without a second call
        self.unrecorded: dict[int, Done] = {}

    # -- the next job

    def retry_in(self, item_id: int, seconds: float) -> None:
        """Give an item its next attempt in ``seconds``; should even that
        fail, the sweep gives it one."""
        try:
            sched.schedule_retry(self.scheduler, item_id,
                                 utcnow() + dt.timedelta(seconds=seconds))
        except Exception:
            logs.event(log, logs.ERROR, "schedule.failed", items=1, exc_info=True)

    def next_step(self, item: JobItem, when: dt.datetime) -> None:
        """The item's next step at ``when``: an account check, or an attempt."""
        if item.state == AWAITING_ACCOUNT:
            sched.schedule_check(self.scheduler, item.id, when)
        else:
            sched.schedule_retry(self.scheduler, item.id, when)

    # -- what the LMS confirmed

    async def record(self, item: JobItem, done: Done) -> str | None:
        """Record the outcome the LMS gave for ``item``; the state set (None
        if the item was no longer in the state expected, or if the database
        refused: then it is kept here, for the item's next attempt)."""
        error = ""
        for pause in RECORD_TRIES:
            await asyncio.sleep(pause)
            try:
                state = await self._write(item.id, done)
            except StoreClosed:
                raise
            except Exception as e:
                error = " ".join(f"{type(e).__name__}: {e}".split())[:200]
                continue
            self.unrecorded.pop(item.id, None)
            if state is None:  # changed meanwhile (an operator, a newer delivery): not ours
                logs.event(log, logs.DEBUG, "item.outcome_moot", **item.log_ids,
                           outcome=done.state)
            elif state == AWAITING_ACCOUNT:
                sched.schedule_check(self.scheduler, item.id, done.next_attempt_at)
                logs.event(log, logs.INFO, done.event, **item.log_ids, **done.fields,
                           check_in_minutes=round(self.account_check.total_seconds() / 60, 3),
                           until=f"{done.wait_until:%Y-%m-%dT%H:%M:%S}Z")
            else:
                logs.event(log, logs.INFO, done.event, **item.log_ids, attempt=done.attempt,
                           **done.fields)
            return state
        self.unrecorded[item.id] = done
        logs.event(log, logs.ERROR, "item.unrecorded", **item.log_ids, outcome=done.state,
                   next_in=round(self.delay_seconds), error=error)
        self.retry_in(item.id, self.delay_seconds)
        return None

    async def record_again(self, item: JobItem) -> str | None:
        """The next attempt of an item whose outcome the database did not
        take: record it now, with no LMS call."""
        done = self.unrecorded[item.id]
        if item.state != done.expected:
            self.unrecorded.pop(item.id, None)
            return None
        return await self.record(item, done)

    async def record_unrecorded(self) -> None:
        """At stop, after the drain: one more try at recording the outcomes
        the database did not take; what still fails is logged, and its call
        will be repeated at the next start."""
        for item_id in list(self.unrecorded):
            item = await self.store.item_for_job(item_id)
            if item is not None:
                await self.record_again(item)

    async def _write(self, item_id: int, done: Done) -> str | None:
        if done.state in (ENROLLED, AWAITING_ACCOUNT):
            # that, or unenroll-pending if refunded meanwhile: in one statement
            return await self.store.record_enrolled(item_id, done.expected, done.state,
                                                    done.attempt, done.next_attempt_at,
                                                    done.wait_until)
        changed = await self.store.update(item_id, UNENROLL_PENDING, state=UNENROLLED,
                                          attempts=done.attempt, reason=None,
                                          next_attempt_at=None, unconfirmed=None,
                                          confirm_after=None)
        return UNENROLLED if changed else None

    # -- what it did not

    async def transient(self, item: JobItem, attempt: int, reason: str,
                        unconfirmed: str | None = None) -> None:
        """An attempt that may succeed later: the next one after the retry
        delay, or, after the last, failed (unknown if the outcome of a call
        is). ``unconfirmed``: the action whose answer was lost (a bulk
        enrollment call's items were marked before it went out; this marks
        the others)."""
        if attempt >= self.attempts:
            await self.fail(item, attempt, f"{reason} (after {attempt} attempts)", unconfirmed)
            return
        when = utcnow() + dt.timedelta(seconds=self.delay_seconds)
        marked = {"unconfirmed": unconfirmed} if unconfirmed else {}
        if await self.store.update(item.id, item.state, attempts=attempt, reason=reason,
                                   next_attempt_at=when, **marked):
            sched.schedule_retry(self.scheduler, item.id, when)
        logs.event(log, logs.WARNING, "item.retry", **item.log_ids, attempt=attempt,
                   next_in=round(self.delay_seconds), reason=reason)

    async def throttled(self, item: JobItem, reason: str, retry_after: float) -> None:
        """The LMS paces us (429): the same step again after its Retry-After,
        no attempt used."""
        when = utcnow() + dt.timedelta(seconds=retry_after)
        if await self.store.update(item.id, item.state, reason=reason, next_attempt_at=when):
            self.next_step(item, when)
        logs.event(log, logs.WARNING, "item.throttled", **item.log_ids,
                   retry_after=round(retry_after))

    async def fail(self, item: JobItem, attempt: int, reason: str,
                   unconfirmed: str | None = None) -> None:
        """No attempt left: failed, or unknown where a call's outcome is (the
        database knows: see ``items.unconfirmed``)."""
        if unconfirmed:
            await self.store.update(item.id, item.state, unconfirmed=unconfirmed)
        state = await self.store.record_failed(item.id, item.state, attempt, reason)
        if state is None:
            return  # changed meanwhile: not ours
        event = {UNKNOWN: "item.unknown", UNENROLL_FAILED: "item.unenroll_failed"}.get(
            state, "item.failed")
        logs.event(log, logs.ERROR, event, **item.log_ids, attempt=attempt, reason=reason)

    async def wait_more(self, item: JobItem, error: str | None = None) -> None:
        """The learner has no active account yet: look again in
        ``lms.account_check_minutes``, or, past ``lms.account_wait_days``
        (the item's ``wait_until``), fail."""
        now = utcnow()
        if item.wait_until is not None and now >= item.wait_until:
            await self.fail(item, item.attempts,
                            "no active LMS account for the learner within "
                            "lms.account_wait_days: the paid mode is not set (the LMS still "
                            "enrolls them in its default mode at activation); `edx-hooks "
                            "retry` waits again"
                            + (f" (the last check: {error})" if error else ""))
            return
        when = now + self.account_check
        # Only if it still awaits: a refund may have made it unenroll-pending
        # meanwhile, and its unenrollment's job must not be pushed back.
        if await self.store.update(item.id, AWAITING_ACCOUNT, next_attempt_at=when,
                                   reason=error):
            sched.schedule_check(self.scheduler, item.id, when)
