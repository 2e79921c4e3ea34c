"""Batches: learners due for the same bulk enrollment call go to the LMS in
one call.

The bulk enrollment view takes a list of learners (``identifiers``) and
answers learner by learner. Line items due for the same course, action
(enroll, unenroll) and ``auto_enroll`` wait in one queue here; each call, in
its turn with the pacer (which counts calls, not learners), takes up to
``lms.batch_size`` learners from the queue whose first has waited longest.
The answer is read learner by learner and each item gets its own outcome: a
learner's failure is that item's alone, a failure of the whole call is every
item's. A flash sale of 500 orders for a handful of courses is a few dozen
calls rather than 500.

Before a call goes out, its items are marked in the database as having a
call whose outcome is unknown (``items.unconfirmed``), with the call's
deadline; the mark goes with the outcome's record, or here when the LMS
answered that it did nothing. An answer lost (a timeout, a cut connection, a
500/502/504) leaves the mark, and so does a crash: the item's next attempt
asks the LMS what it did before anything is sent again. A learner named
twice in the queue (two orders) is named once in the call: one email.

The batcher only makes calls; what an outcome means for an item (recording
it, a retry, a failure) is the job's (``enrollment``), which awaits it here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import logs
from .errors import (
    Halted,
    LMSError,
    OutcomeUnknown,
    PermanentError,
    TransientError,
    Withdrawn,
)
from .lms import LMSClient, is_email

log = logging.getLogger("edx_hooks.batches")

#: (course id, action, auto_enroll)
Key = tuple[str, str, bool]
#: calls under way at once at most (the LMS client's own connection limit)
CONCURRENT_CALLS = 10
#: the LMS audit log's reason field
REASON_CHARS = 255
#: while calls are going out (the last one began less than this ago), how
#: long the first learner queued for the next waits for others to join it,
#: unless the call is full (``lms.batch_size``) sooner: under a burst a call
#: then carries a full batch, rather than whoever came in the millisecond
#: since the last call (in a flash sale, about 6), and the learners cost
#: fewer calls, turns of the pacer and database writes. After a quiet spell
#: a learner's call goes at once, as before.
FILL_SECONDS = 0.05


def unsendable(email: str | None, course_or_sku: str | None) -> str | None:
    """Why a line item cannot go to the LMS, or None. Such an item never joins
    a call: one learner's gap must not fail the others in it (``enrollment`` and
    ``edx-hooks retry`` ask this too)."""
    if not email or not is_email(email):
        return "no valid learner email: not sent to the LMS"
    if not course_or_sku:
        return "no course and no SKU: not sent to the LMS"
    return None


@dataclass
class Entry:
    item_id: int
    email: str
    #: how the LMS's audit log names the item's order: "shopify #1001 (shop)"
    order: str
    future: asyncio.Future
    #: the task of the item waiting for this
    task: asyncio.Task | None = field(default=None)
    #: when it was queued (the event loop's clock)
    queued_at: float = 0.0


class Batcher:
    """Gathers the learners waiting for the same course and action into one
    bulk enrollment call: :meth:`submit` queues an item's learner and waits
    for their outcome; a loop sends the queues, oldest first, at most
    ``CONCURRENT_CALLS`` calls at once (see the module's text).

    Arguments:

    * ``lms`` -- the :class:`~edx_hooks.lms.LMSClient` the calls go through.
    * ``batch_size`` -- learners in one call at most (``lms.batch_size``).
    * ``withdrawn`` -- given item ids, which of them have had a refund or
      cancellation (asked just before their enrollment call goes out).
    * ``on_taken`` -- told of the entries a call takes, as it takes them
      (the enrollment runtime counts those calls as under way).
    * ``unconfirmed`` -- marks items (with the action and the call's
      deadline) before their call goes out.
    * ``settled`` -- unmarks the items the LMS answered it did nothing for.
    """

    def __init__(self, lms: LMSClient, batch_size: int,
                 withdrawn: Callable[[list[int]], Awaitable[set[int]]],
                 on_taken: Callable[[list[Entry]], None],
                 unconfirmed: Callable[[list[int], str, dt.datetime], Awaitable[None]],
                 settled: Callable[[list[int]], Awaitable[None]]):
        self.lms = lms
        self.batch_size = batch_size
        self.withdrawn = withdrawn
        self.on_taken = on_taken
        self.unconfirmed = unconfirmed
        self.settled = settled
        self.queues: dict[Key, list[Entry]] = {}
        self._wakeup = asyncio.Event()
        self._loop: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(CONCURRENT_CALLS)
        #: when the last call was taken (the event loop's clock)
        self._last_call = -math.inf
        self.halted = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop().create_task(self._run())
        self._loop.add_done_callback(self._loop_ended)

    def halt(self) -> None:
        """No new call from now on; calls under way go on. Learners still
        queued (and any submitted later) get :class:`Halted`: not sent."""
        self.halted = True
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        for queue in self.queues.values():
            for entry in queue:
                if not entry.future.done():
                    entry.future.set_exception(Halted("stopping: not sent"))
        self.queues.clear()

    async def close(self) -> None:
        """Cut off the calls still under way (stopping's bound has passed:
        their items' tasks were cancelled already) and wait for them to end."""
        self.halt()
        calls = list(self._calls)
        for call in calls:
            call.cancel()
        if calls:
            await asyncio.wait(calls, timeout=1.0)

    async def submit(self, key: Key, item_id: int, email: str, order: str) -> str:
        """Wait for the call that takes this learner; its outcome for them
        (``enrolled``, ``allowed``, ``unenrolled``), or the LMSError of the
        learner or of the whole call, or :class:`Withdrawn`; :class:`Halted`
        if the service stops before a call takes them."""
        if self.halted:
            raise Halted("stopping: not sent")
        problem = unsendable(email, key[0])
        if problem:
            raise PermanentError(problem)
        loop = asyncio.get_running_loop()
        entry = Entry(item_id, email, order, loop.create_future(), asyncio.current_task(),
                      loop.time())
        self.queues.setdefault(key, []).append(entry)
        self._wakeup.set()
        try:
            return await entry.future
        except asyncio.CancelledError:
            queue = self.queues.get(key, [])
            if entry in queue:  # not taken by a call yet: it simply leaves
                queue.remove(entry)
            raise

    async def _run(self) -> None:
        while True:
            taken: list[Entry] = []
            slot = False
            try:
                while (wait := self._until_ready()) > 0:
                    self._wakeup.clear()
                    if wait == math.inf:  # nothing queued
                        await self._wakeup.wait()
                        continue
                    try:  # until a learner comes (the queue may be full now), or that long
                        await asyncio.wait_for(self._wakeup.wait(), wait)
                    except TimeoutError:
                        pass
                await self.lms.pacer.wait()  # one turn per call, however many learners
                await self._slots.acquire()
                slot = True
                key = min((k for k, q in self.queues.items() if q), key=self._first_seen,
                          default=None)
                if key is None:
                    continue
                queue = self.queues[key]
                # in the order the items were received, whichever job came
                # first: the call's learners and its audit reason read in order
                taken = sorted((e for e in queue[:self.batch_size] if not e.future.done()),
                               key=lambda e: e.item_id)
                del queue[:self.batch_size]
                if not queue:
                    del self.queues[key]
                if not taken:
                    continue
                self._last_call = asyncio.get_running_loop().time()
                self.on_taken(taken)
                call = asyncio.get_running_loop().create_task(self._send_batch(key, taken))
                self._calls.add(call)
                call.add_done_callback(self._done)
                slot = False  # the call's now: released when it ends
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: its learners fail over to a retry, the loop goes on
                logs.event(log, logs.ERROR, "batches.error", exc_info=True)
                _fail_open(taken, TransientError("internal error in edx-hooks' batcher"))
            finally:
                if slot:
                    self._slots.release()

    def _loop_ended(self, loop: asyncio.Task) -> None:
        """The loop only ends when halted; should it end otherwise, the
        learners queued fail over to a retry rather than wait forever."""
        if loop.cancelled() or self.halted:
            return
        logs.event(log, logs.ERROR, "batches.stopped", error=repr(loop.exception()))
        self._loop = None
        self.start()

    def _until_ready(self) -> float:
        """Seconds until a queue is ready for its call: full, or its first
        learner has waited ``FILL_SECONDS``, or any queued after a quiet
        spell (see ``FILL_SECONDS``). 0: one is; infinite: none is queued."""
        now = asyncio.get_running_loop().time()
        wait = math.inf
        for queue in self.queues.values():
            if len(queue) >= self.batch_size:
                return 0.0
            if queue:
                wait = min(wait, queue[0].queued_at + FILL_SECONDS - now)
        if wait < math.inf and now - self._last_call >= FILL_SECONDS:
            return 0.0
        return max(wait, 0.0)

    def _first_seen(self, key: Key) -> int:
        """Queues are served oldest first: by the id of their first item,
        which grows with arrival."""
        return self.queues[key][0].item_id

    def _done(self, call: asyncio.Task) -> None:
        self._calls.discard(call)
        self._slots.release()

    async def _send_batch(self, key: Key, entries: list[Entry]) -> None:
        course, action, auto_enroll = key
        try:
            if action == "enroll":
                gone = await self.withdrawn([e.item_id for e in entries])
                for entry in entries:
                    if entry.item_id in gone:
                        entry.future.set_exception(Withdrawn())
                entries = [e for e in entries if e.item_id not in gone]
                if not entries:
                    return
            # one email per learner, however many of their orders are in it
            emails = list({e.email.lower(): e.email for e in entries}.values())
            deadline = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
                seconds=self.lms.deadline(len(emails)))
            await self.lms.token()  # before the mark: a call that could not start is no doubt
            try:
                await self.unconfirmed([e.item_id for e in entries], action, deadline)
            except Exception:
                logs.event(log, logs.ERROR, "batches.unmarked", items=len(entries),
                           exc_info=True)
                _fail_open(entries, TransientError(
                    "the database did not take the call's mark: not sent"))
                return
            try:
                results = await self.lms.bulk(action, course, emails,
                                              reason=reason([e.order for e in entries]),
                                              slot_taken=True, auto_enroll=auto_enroll)
            except (OutcomeUnknown, Halted):
                raise  # it may have been done (or was stopped): the marks stay
            except LMSError:  # the LMS answered that it did nothing
                await self._settle([e.item_id for e in entries])
                raise
            outcomes = {e.item_id: results.get(e.email.lower()) or PermanentError(
                f"{action} answered without a result for the learner") for e in entries}
            await self._settle([i for i, result in outcomes.items()
                                if isinstance(result, Exception)])
            for entry in entries:
                if not entry.future.done():
                    result = outcomes[entry.item_id]
                    if isinstance(result, Exception):
                        entry.future.set_exception(result)
                    else:
                        entry.future.set_result(result)
        except asyncio.CancelledError:  # cut off at stop, past its bound
            _fail_open(entries, OutcomeUnknown(
                "LMS unreachable: the call was cut off as the service stopped"))
            raise
        except Exception as error:  # the whole call's: every learner's in it
            _fail_open(entries, error)

    async def _settle(self, item_ids: list[int]) -> None:
        """Unmark items whose call the LMS refused: a mark left behind only
        costs a question to the LMS before their next call."""
        if not item_ids:
            return
        try:
            await self.settled(item_ids)
        except Exception:
            logs.event(log, logs.WARNING, "batches.unsettled", items=len(item_ids),
                       exc_info=True)


def _fail_open(entries: list[Entry], error: Exception) -> None:
    for entry in entries:
        if not entry.future.done():
            entry.future.set_exception(error)


def reason(orders: list[str]) -> str:
    """What the LMS's audit log records for a call: the orders in it, as many
    as its field holds, and how many more."""
    unique = list(dict.fromkeys(orders))
    text = "edx-hooks " + ", ".join(unique)
    if len(text) <= REASON_CHARS:
        return text

    def more(k: int) -> str:
        return f" and {k} more" if k else ""

    shown: list[str] = []
    for n, order in enumerate(unique):
        if len("edx-hooks " + ", ".join([*shown, order]) + more(len(unique) - n - 1)) \
                > REASON_CHARS:
            break
        shown.append(order)
    if not shown:  # the first order's name alone is too long: as much of it as fits
        tail = more(len(unique) - 1)
        return ("edx-hooks " + unique[0])[:REASON_CHARS - len(tail)] + tail
    return "edx-hooks " + ", ".join(shown) + more(len(unique) - len(shown))
