"""Steps: one attempt at a line item's work, the per-item state machine.

``pending`` → enrolled (bulk enrollment), or awaiting-account (a mode sold
to a learner without an account: the account check sets the mode later), or
not-enrolled (refunded or cancelled before its enrollment);
``unenroll-pending`` → unenrolled. A transient error leaves it for its next
attempt; the last one fails it (unknown, if a call's outcome is). See
``outcomes`` for how each is recorded.
"""

from __future__ import annotations

import logging

from .. import logs
from .. import scheduler as sched
from ..batches import unsendable
from ..errors import (
    Halted,
    OutcomeUnknown,
    PermanentError,
    Throttled,
    TransientError,
    Withdrawn,
)
from ..store import (
    AWAITING_ACCOUNT,
    ENROLLED,
    NOT_A_COURSE,
    NOT_ENROLLED,
    PENDING,
    SCHEDULED,
    UNENROLL_PENDING,
    UNENROLLED,
    JobItem,
    utcnow,
)
from .outcomes import Done
from .runtime import Runtime

log = logging.getLogger("edx_hooks.jobs")

#: the modes a learner may have for free: selling one never downgrades an
#: enrollment in a paid mode
FREE_MODES = ("audit", "honor")


async def attempt(rt: Runtime, item: JobItem) -> None:
    """One step of an item's work: enroll it (pending), or unenroll it
    (unenroll-pending, after a refund); ``item`` as its job read it. An
    unenroll requested while the enrollment was under way follows it here,
    in the same job: never a race. A pending item whose refund or
    cancellation has come is not enrolled (and its batch asks again just
    before its call goes out)."""
    if item.state not in SCHEDULED:
        rt.outcomes.unrecorded.pop(item.id, None)
        return
    if rt.stopping:
        return
    if item.id in rt.outcomes.unrecorded:
        state = await rt.outcomes.record_again(item)
    elif item.state == AWAITING_ACCOUNT:  # its account check's (check_accounts)
        sched.schedule_check(rt.scheduler, item.id, item.next_attempt_at or utcnow())
        return
    elif item.state == PENDING and item.withdrawn:
        state = await withdraw(rt, item)
    else:
        action = "unenroll" if item.state == UNENROLL_PENDING else "enroll"
        wait = until_confirmable(item, action)
        if wait > 0:  # its last call may still be at the LMS: ask once it is due
            logs.event(log, logs.DEBUG, "item.awaits_call", **item.log_ids,
                       seconds=round(wait, 1))
            rt.outcomes.retry_in(item.id, wait)
            return
        number = item.attempts + 1
        logs.event(log, logs.DEBUG, "item.attempt", **item.log_ids, action=action,
                   attempt=number, email=item.email, sku=item.sku, mode=item.mode)
        state = await rt.as_call(item, enroll_or_unenroll(rt, item, action, number))
    if state == UNENROLL_PENDING:
        await _then_unenroll(rt, item.id)


async def check(rt: Runtime, item: JobItem) -> None:
    """An account check (``check_accounts``): the learner's account looked
    for; an active one gets the mode sold."""
    if item.state != AWAITING_ACCOUNT or rt.stopping:
        return  # its other states have jobs of their own
    if item.withdrawn:
        await withdraw(rt, item)
        return
    if await rt.as_call(item, enroll_or_unenroll(rt, item, "enroll", item.attempts)) \
            == UNENROLL_PENDING:
        await _then_unenroll(rt, item.id)


async def _then_unenroll(rt: Runtime, item_id: int) -> None:
    """Refunded meanwhile: unenroll now, in this job."""
    if rt.stopping:
        return
    fresh = await rt.store.item_for_job(item_id)
    if fresh is None:
        rt.outcomes.unrecorded.pop(item_id, None)
    else:
        await attempt(rt, fresh)


def until_confirmable(item: JobItem, action: str) -> float:
    """Seconds until the LMS can be asked about the item's last call (its
    deadline: before that, it may still be at work on it); 0 if it can be
    asked now, or if there is nothing to ask."""
    if item.unconfirmed != action or item.confirm_after is None:
        return 0.0
    return max(0.0, (item.confirm_after - utcnow()).total_seconds())


async def withdraw(rt: Runtime, item: JobItem) -> str | None:
    """An item not yet enrolled whose refund or cancellation has come: not
    enrolled. Unless an earlier attempt's outcome is unknown (its call timed
    out: the LMS may have enrolled it): then, with unenroll_on_refund, it is
    unenrolled (harmless if it was not enrolled). An item awaiting its
    learner's account stops waiting (with unenroll_on_refund it would have
    been unenrolled already: its allowance deleted).

    Each change holds only while the refund or cancellation is in force: one
    that a later delivery lifted meanwhile (WooCommerce: the order placed
    again) leaves the item to a fresh attempt, which enrolls it."""
    unknown = item.unconfirmed == "enroll"
    if unknown and item.unenroll_requested_at is not None:
        now = utcnow()
        if await rt.store.withdraw(item.id, item.state, state=UNENROLL_PENDING, attempts=0,
                                   reason=None, next_attempt_at=now, pending_since=now):
            return UNENROLL_PENDING
        rt.outcomes.retry_in(item.id, 0.0)
        return None
    if item.state == AWAITING_ACCOUNT:
        reason = (f"{item.withdrawn} while the learner's account was awaited: the paid "
                  "mode is not set (unenroll_on_refund is off: the LMS's allowance stays)")
    else:
        reason = f"{item.withdrawn} before it was enrolled: not enrolled" + (
            " (an earlier call's outcome is unknown: check the LMS)" if unknown else "")
    if not await rt.store.withdraw(item.id, item.state, state=NOT_ENROLLED, reason=reason,
                                   next_attempt_at=None, wait_until=None):
        rt.outcomes.retry_in(item.id, 0.0)  # lifted, or moved on: look again
        return None
    logs.event(log, logs.INFO, "item.not_enrolled", **item.log_ids, reason=reason)
    return NOT_ENROLLED


async def enroll_or_unenroll(rt: Runtime, item: JobItem, action: str,
                             attempt: int) -> str | None:
    """The LMS call(s) of one attempt, and the recording of their outcome;
    returns the state recorded when the LMS confirmed.

    Without a mode: one bulk enrollment call, as the LMS's default mode.
    With one: the learner's account is looked up; an active one is enrolled
    in the mode through the enrollment API; for a learner without one, bulk
    enrollment with auto_enroll (the LMS enrolls them, in its default mode,
    when they activate) and the item awaits the account, to set the mode then.
    """
    course, mode = item.course_id, item.mode
    following = item.state == AWAITING_ACCOUNT
    if not item.email and course is None and item.sku and action == "enroll":
        await _course_or_merchandise(rt, item, attempt)
        return None
    problem = unsendable(item.email, course or item.sku)
    if problem:  # never put in a call, no attempt used
        await rt.outcomes.fail(item, item.attempts, problem)
        return None
    try:
        if course is None:
            course = await rt.lms.resolve_sku(item.sku)
            await rt.store.update(item.id, PENDING, course_id=course)
            if rt.stopping:
                return None
        if action == "unenroll" or mode is None:
            result = await _batched(rt, item, course, action,
                                    rt.lms.auto_enroll and action == "enroll")
            done = Done(UNENROLLED if action == "unenroll" else ENROLLED, attempt,
                        {"course": course, **({"result": result} if action == "enroll" else {})})
        else:
            account = await rt.lms.account(item.email)
            if account is not None and account.get("is_active") is True:
                mode = await _mode(rt, str(account["username"]), course, mode)
                done = Done(ENROLLED, attempt, {"course": course, "mode": mode},
                            expected=item.state,
                            event="item.mode_set" if following else "item.enrolled")
            elif following:
                await rt.outcomes.wait_more(item)
                return None
            else:
                now = utcnow()
                if item.wait_until is None:
                    result = await _batched(rt, item, course, "enroll", True)
                else:  # retried after a wait: the LMS's allowance is there already
                    result = "allowed before"
                done = Done(AWAITING_ACCOUNT, attempt,
                            {"course": course, "mode": mode, "result": result},
                            next_attempt_at=now + rt.outcomes.account_check,
                            wait_until=now + rt.account_wait, event="item.awaiting_account")
    except Halted:
        return None  # stopping before the call went out: still pending, no attempt used
    except Withdrawn:  # refunded while it waited for its batch: as it is now
        fresh = await rt.store.item_for_job(item.id)
        if fresh is None or fresh.state != item.state:
            return None  # changed meanwhile (by `edx-hooks retry`, say): not ours now
        return await withdraw(rt, fresh)
    except Throttled as e:  # the LMS pacing us, not a failed attempt
        await rt.outcomes.throttled(item, str(e), e.retry_after)
        return None
    except PermanentError as e:
        await rt.outcomes.fail(item, attempt, str(e))
        return None
    except TransientError as e:
        if following:  # the next check comes anyway
            await rt.outcomes.wait_more(item, str(e))
            return None
        await rt.outcomes.transient(item, attempt, str(e),
                                    unconfirmed=action if isinstance(e, OutcomeUnknown) else None)
        return None
    except Exception as e:  # a bug must leave a visible trace, not a stuck item
        logs.event(log, logs.ERROR, "item.error", **item.log_ids, attempt=attempt,
                   exc_info=True)
        if following:
            await rt.outcomes.wait_more(item, f"internal error: {type(e).__name__}")
            return None
        await rt.outcomes.transient(item, attempt, f"internal error: {type(e).__name__}")
        return None
    return await rt.outcomes.record(item, done)


async def _course_or_merchandise(rt: Runtime, item: JobItem, attempt: int) -> None:
    """A line item without a learner email whose SKU only the LMS can place
    (``Catalog.without_learner``). A SKU that redirects to a course: a
    course sold without its learner's email, a failure to fix in the shop.
    One that names no course: merchandise, not-a-course at info level, no
    part of its order's state."""
    try:
        course = await rt.lms.resolve_sku(item.sku)
    except Halted:
        return
    except PermanentError:
        reason = (f"not a course (SKU {item.sku!r} names none) and no learner email: "
                  "nothing to enroll")
        if await rt.store.update(item.id, item.state, state=NOT_A_COURSE, reason=reason,
                                 next_attempt_at=None):
            logs.event(log, logs.INFO, "item.not_a_course", **item.log_ids, reason=reason)
        return
    except TransientError as e:
        await rt.outcomes.transient(item, attempt, str(e))
        return
    await rt.store.update(item.id, item.state, course_id=course)
    await rt.outcomes.fail(item, attempt, f"no learner email for course {course}: collect it "
                                          "in the shop (see learner_email_properties)")


async def _mode(rt: Runtime, username: str, course: str, mode: str) -> str:
    """Enroll an account in ``mode`` (the enrollment API), unless the mode is
    a free one (audit, honor) and the learner is enrolled in a paid mode
    already: never a downgrade. Returns the mode they are in. Each of these
    calls takes its turn at the LMS (the throttle counts them)."""
    if mode in FREE_MODES:
        if not await rt.wait_for_pacer():
            raise Halted("stopping: the call was not made")
        current = await rt.lms.enrollment_of(username, course, slot_taken=True)
        if current and current.get("is_active") and current.get("mode") not in FREE_MODES:
            return str(current["mode"])
    if not await rt.wait_for_pacer():
        raise Halted("stopping: the call was not made")
    await rt.lms.enroll_in_mode(username, course, mode, slot_taken=True)
    return mode


async def _batched(rt: Runtime, item: JobItem, course: str, action: str,
                   auto_enroll: bool) -> str:
    """The item's learner in the next bulk enrollment call for the course
    (see batches): its outcome for them. Waiting for the call can be cut
    short by stopping; once a call has taken the item, stopping lets it
    finish.

    An item whose last call's outcome is unknown (its answer was lost, or
    the service died while it was at the LMS) is not sent again before the
    LMS is asked what it did: what the LMS shows is its outcome, with no
    call (and no second email)."""
    if item.unconfirmed == action:
        shown = await rt.lms.shows(action, course, item.email)
        logs.event(log, logs.INFO, "item.confirmed" if shown else "item.unconfirmed",
                   **item.log_ids, action=action, shown=shown or "nothing")
        if shown is not None:
            return shown
    return await rt.wait_for_batch((course, action, auto_enroll), item)
