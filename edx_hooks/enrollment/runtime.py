"""The enrollment runtime: what the line items' jobs run in.

The service owns one :class:`Runtime` and hands it to whoever needs it: the
scheduler's executor passes it to every enrollment job
(``scheduler.JobExecutor``), the sweep learns from it which items are busy.
It holds the lifecycle (:meth:`~Runtime.start`, :meth:`~Runtime.halt`,
:meth:`~Runtime.drain`, :meth:`~Runtime.finish`), the admission of items
(:class:`Admission`), and the bookkeeping of which task holds which item,
which waits its turn at the LMS and whose call is under way.

Stopping starts no new call, lets a call under way finish and its outcome be
recorded, and leaves the rest pending for the next start.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .. import logs
from ..batches import Batcher, Entry, Key
from ..lms import LMSClient
from ..store import JobItem, Store, StoreClosed
from .outcomes import Outcomes

log = logging.getLogger("edx_hooks.jobs")

#: items in progress at once at most (see :class:`Admission`): enough to fill
#: batches for several courses, while a backlog of thousands waits without a
#: row read or a call queued
ITEMS_AT_ONCE = 200
#: when an item is due in a job while another job holds it, it is looked at
#: again this much later
BUSY_RECHECK_SECONDS = 1.0

T = TypeVar("T")
#: one item's step in a job (see ``steps``)
Step = Callable[["Runtime", JobItem], Awaitable[None]]


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


class Runtime:
    """The enrollment jobs' runtime, owned by the service.

    Arguments:

    * ``store`` -- the :class:`~edx_hooks.store.Store` the items are read
      from and their outcomes written to.
    * ``lms`` -- the :class:`~edx_hooks.lms.LMSClient`; it owns the pacer
      every call waits its turn with (``lms.pacer``).
    * ``batch_size`` -- learners in one bulk enrollment call at most.
    * ``attempts``, ``delay_seconds`` -- the retry policy (``retry.*``).
    * ``account_check``, ``account_wait`` -- how often, and how long, a
      learner without an account is looked for (``lms.account_*``).
    * ``items_at_once`` -- items in progress at once at most (default
      :data:`ITEMS_AT_ONCE`).
    """

    def __init__(self, store: Store, lms: LMSClient, *, batch_size: int, attempts: int,
                 delay_seconds: float, account_check: dt.timedelta = dt.timedelta(minutes=60),
                 account_wait: dt.timedelta = dt.timedelta(days=60),
                 items_at_once: int | None = None):
        self.store = store
        self.lms = lms
        self.account_wait = account_wait
        #: recording outcomes, and each item's next job
        self.outcomes = Outcomes(store, attempts, delay_seconds, account_check)
        #: bulk enrollment calls, many learners each (see batches)
        self.batcher = Batcher(lms, batch_size, withdrawn=store.withdrawn_among,
                               on_taken=self.mark_calls_under_way,
                               unconfirmed=store.mark_unconfirmed, settled=store.settle)
        #: items in progress at once at most (read, waiting for a call or in one)
        self.admission = Admission(items_at_once or ITEMS_AT_ONCE)
        self.scheduler: AsyncIOScheduler | None = None
        #: items a job holds (waiting its turn, or at the LMS)
        self.running: set[int] = set()
        #: the jobs (and housekeeping tasks) under way: stopping waits for them
        self.tasks: set[asyncio.Task] = set()
        #: the items' tasks waiting for their turn at the LMS (the pacer, a batch)
        self.waiting: set[asyncio.Task] = set()
        #: the items' tasks whose LMS call is under way, or whose outcome is
        #: being recorded (by task: the item)
        self.calling: dict[asyncio.Task, int] = {}
        #: set by halt(): no new LMS call starts
        self.stopping = False

    @property
    def delay_seconds(self) -> float:
        return self.outcomes.delay_seconds

    # -- lifecycle

    def start(self, scheduler: AsyncIOScheduler) -> None:
        """Take jobs from ``scheduler`` (whose executor hands them this
        runtime), and schedule their next ones there."""
        self.scheduler = self.outcomes.scheduler = scheduler
        self.batcher.start()

    def halt(self) -> None:
        """From now on no LMS call starts; jobs waiting their turn leave at
        once (nothing of theirs has reached the LMS; their items stay
        pending). The others finish the step they are in (a database read, a
        call under way) and leave before the next."""
        self.stopping = True
        self.lms.halt()
        self.batcher.halt()
        for task in list(self.waiting):
            task.cancel()

    async def drain(self, timeout: float) -> list[int]:
        """Halt, and give a call under way up to ``timeout`` seconds to
        finish and have its outcome recorded. Returns the items whose call
        was still under way then (interrupted: their call may be repeated at
        the next start)."""
        self.halt()
        if not self.tasks:
            return []
        _, late = await asyncio.wait(set(self.tasks), timeout=timeout)
        interrupted = sorted(self.calling.values()) if late else []
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)
        await self.batcher.close()
        return interrupted

    async def finish(self) -> None:
        """After the drain (and the requests under way): one more try at
        recording the outcomes the database did not take."""
        await self.outcomes.record_unrecorded()

    def tracked(self, fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        """A housekeeping job (sweep, retention) that stopping lets finish,
        as it lets a call under way finish, rather than cut off mid-query."""
        @functools.wraps(fn)
        async def run() -> None:
            task = asyncio.current_task()
            if self.stopping or task is None:
                return
            self.tasks.add(task)
            try:
                await fn()
            finally:
                self.tasks.discard(task)
        return run

    # -- a job

    async def run(self, item_ids: list[int], step: Step) -> None:
        """A job: its items admitted (the cap on items in progress), read in
        one query, then each worked on by ``step`` in a task of its own, all
        at once (the LMS sees them one turn, or one batch, at a time: read
        together, they are queued together). A failure around one item (say,
        the database refusing to record its outcome) stays with that item."""
        if self.stopping:
            return
        # An item in flight in another job is left to it; should this job have
        # been made for a change that came meanwhile (a refund after its
        # enrollment), it looks again once that job is done.
        mine = [i for i in dict.fromkeys(item_ids) if i not in self.running]
        for item_id in item_ids:
            if item_id in self.running:
                self.outcomes.retry_in(item_id, BUSY_RECHECK_SECONDS)
        self.running.update(mine)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        admitted = 0
        try:
            for start in range(0, len(mine), self.admission.capacity):
                chunk = mine[start:start + self.admission.capacity]
                await self.admission.take(len(chunk))  # given back item by item
                admitted = len(chunk)
                try:
                    rows = {item.id: item for item in await self.store.items_for_jobs(chunk)}
                except StoreClosed:
                    raise
                except Exception:  # the database busy, say: these items and the rest, later
                    logs.event(log, logs.ERROR, "items.unread", items=len(mine) - start,
                               exc_info=True)
                    for item_id in mine[start:]:
                        self.outcomes.retry_in(item_id, self.delay_seconds)
                    break
                admitted = 0
                # return_exceptions: the job ends only when every item's task
                # has (stopping waits for the job, so for a call under way in any)
                await asyncio.gather(*(self._one(item_id, rows.get(item_id), step)
                                       for item_id in chunk), return_exceptions=True)
        except (asyncio.CancelledError, StoreClosed):
            pass  # stopping: the items stay pending, the next start resumes them
        finally:
            self.admission.give(admitted)  # taken, but its items never started
            self.running.difference_update(mine)
            if task is not None:
                self.tasks.discard(task)

    async def _one(self, item_id: int, item: JobItem | None, step: Step) -> None:
        try:
            if item is not None and not self.stopping:
                await step(self, item)
        except (asyncio.CancelledError, StoreClosed):
            raise
        except Exception:
            logs.event(log, logs.ERROR, "item.error", item=item_id, exc_info=True)
            self.outcomes.retry_in(item_id, self.delay_seconds)
        finally:
            self.running.discard(item_id)
            self.admission.give(1)

    # -- the bookkeeping of calls

    async def as_call(self, item: JobItem, attempt: Awaitable[T]) -> T:
        """Await an attempt's LMS call(s) and the recording of their outcome,
        counted as a call under way: stopping lets it finish."""
        task = asyncio.current_task()
        self.calling[task] = item.id
        try:
            return await attempt
        except asyncio.CancelledError:
            if task in self.calling:  # cut off mid-call, past the stop's bound
                logs.event(log, logs.WARNING, "items.interrupted", items=item.id)
            raise
        finally:
            self.calling.pop(task, None)

    async def wait_for_pacer(self) -> bool:
        """Wait for this call's turn at the LMS (the pacer); False if stopping
        came first. Stopping cuts the wait short: nothing has reached the LMS."""
        task = asyncio.current_task()
        item_id = self.calling.pop(task, None)
        self.waiting.add(task)
        try:
            await self.lms.pacer.wait()
        finally:
            self.waiting.discard(task)
        if item_id is not None:
            self.calling[task] = item_id
        return not self.stopping

    async def wait_for_batch(self, key: Key, item: JobItem) -> str:
        """The item's learner in the next bulk enrollment call for ``key``:
        their outcome. Stopping cuts the wait short; once a call has taken the
        item, its task counts as calling again (:meth:`mark_calls_under_way`)."""
        task = asyncio.current_task()
        self.calling.pop(task, None)
        self.waiting.add(task)
        try:
            return await self.batcher.submit(key, item.id, item.email,
                                             f"{item.provider} {item.order_name}")
        finally:
            self.waiting.discard(task)

    def mark_calls_under_way(self, entries: list[Entry]) -> None:
        """A batch call takes these items: their tasks' calls are under way
        now (stopping lets them finish)."""
        for entry in entries:
            if entry.task is not None:
                self.waiting.discard(entry.task)
                self.calling[entry.task] = entry.item_id
