"""Scheduling: APScheduler jobs, kept in a SQLAlchemy job store, that enroll
line items.

A job is ``edx_hooks.jobs:enroll_items(item_ids)``; the executor
(:class:`JobExecutor`) hands it the service's enrollment runtime. Each committed batch of
orders gets one job, due at once, for all the line items it added
(``enroll-<first id>``, kept in memory: see :func:`schedule_new`); a line
item waiting for another attempt gets a job of its own (``retry-<item id>``)
in the SQLAlchemy job store. Explicit ids and ``replace_existing`` mean a job
is never duplicated.

The items table is the truth about what still has to happen: at start-up,
and every ``retry.sweep_seconds`` while running, every pending item that no
job covers (a crash between commit and scheduling, or while its job was
running; an operator's retry) gets a job.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Collection
from typing import Any

import sqlalchemy as sa
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from . import logs
from .store import AWAITING_ACCOUNT, Store, utcnow
from .store.sqlite import create_private, sqlite_pragmas

log = logging.getLogger("edx_hooks.scheduler")

JOB_FUNC = "edx_hooks.jobs:enroll_items"
#: the account checks of items awaiting their learner's account
CHECK_FUNC = "edx_hooks.jobs:check_accounts"
#: most line items in one job when resuming
RESUME_CHUNK = 500
#: instances of one item job (by id) that may run at once. APScheduler skips
#: a job that comes due while an instance with its id still runs, and drops
#: it: a job made for an item while the job with that id works on it (the
#: refund's, or a revival's, while its enrollment call is under way) would be
#: lost until the sweep. The jobs themselves never work on an item twice at
#: once (``enrollment.runtime``: an item in flight is looked at again when
#: it is free).
ITEM_JOB_INSTANCES = 1000


class CachedSQLAlchemyJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store, read from memory.

    Every write still goes to the database, so the jobs survive a restart
    exactly as with the plain store; but the questions the scheduler asks
    each time it wakes up (which jobs are due, when is the next one) are
    answered from a copy in memory instead of two SELECTs and unpickling
    every due job. edx-hooks is the only writer of its job store, so the
    copy cannot go stale. Under a burst of orders this was a quarter of the
    accept path's CPU.
    """

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._memory = MemoryJobStore()
        self._memory.start(scheduler, alias)
        for job in super().get_all_jobs():
            self._memory.add_job(job)

    def lookup_job(self, job_id: str) -> Any:
        return self._memory.lookup_job(job_id)

    def get_due_jobs(self, now: dt.datetime) -> list:
        return self._memory.get_due_jobs(now)

    def get_next_run_time(self) -> dt.datetime | None:
        return self._memory.get_next_run_time()

    def get_all_jobs(self) -> list:
        return self._memory.get_all_jobs()

    def add_job(self, job: Any) -> None:
        super().add_job(job)
        self._memory.add_job(job)

    def update_job(self, job: Any) -> None:
        super().update_job(job)
        self._memory.update_job(job)

    def remove_job(self, job_id: str) -> None:
        super().remove_job(job_id)
        self._memory.remove_job(job_id)

    def remove_all_jobs(self) -> None:
        super().remove_all_jobs()
        self._memory.remove_all_jobs()


def needs_runtime(fn: Callable) -> Callable:
    """Mark a job function that :class:`JobExecutor` calls with the runtime
    (``runtime=``; ``edx_hooks.jobs``)."""
    fn.needs_runtime = True  # type: ignore[attr-defined]
    return fn


class JobExecutor(AsyncIOExecutor):
    """APScheduler's asyncio executor, which gives the enrollment jobs (the
    functions marked :func:`needs_runtime`) the service's enrollment runtime
    as the argument ``runtime``.

    A stored job holds a function's name and plain arguments only (its item
    ids); the runtime is an object the service owns, not a module's global,
    and this is how it reaches the jobs. ``runtime`` is the service's from
    its creation; a job that runs without one fails loudly.
    """

    def __init__(self, runtime: Any = None):
        super().__init__()
        self.runtime = runtime

    def _do_submit_job(self, job: Any, run_times: list) -> None:
        if getattr(job.func, "needs_runtime", False):
            if self.runtime is None:
                raise RuntimeError(f"job {job.id}: no enrollment runtime to run it in")
            job = _GivenRuntime(job, self.runtime)
        super()._do_submit_job(job, run_times)


class _GivenRuntime:
    """A job as the executor runs it: its function given the runtime;
    everything else (id, arguments, job store) the job's own."""

    def __init__(self, job: Any, runtime: Any):
        self._job = job
        self.func = functools.partial(job.func, runtime=runtime)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


def create(jobs_url: str, runtime: Any = None) -> AsyncIOScheduler:
    """The scheduler, its jobs kept at ``jobs_url``, its enrollment jobs run
    with ``runtime`` (the service's ``enrollment.runtime.Runtime``)."""
    engine = sa.create_engine(jobs_url)
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        create_private(engine.url.database)
    if engine.dialect.name == "sqlite":
        # The job store only says *when* to run what the items table says must
        # run; start-up rebuilds any job it lost (see resume), so it need not
        # survive a power cut and its commits skip the fsync (WAL + NORMAL
        # still survives a crash of the process).
        sqlite_pragmas(engine, "normal")

    return AsyncIOScheduler(
        jobstores={"default": CachedSQLAlchemyJobStore(engine=engine),
                   "memory": MemoryJobStore()},
        executors={"default": JobExecutor(runtime)},
        job_defaults={
            # The default grace of 1 s silently skips jobs that come due while
            # the loop is busy with a burst of orders: run them however late.
            "misfire_grace_time": None,
            "coalesce": True,
            "max_instances": 1,
        },
        timezone=dt.UTC,
    )


def schedule_new(scheduler: AsyncIOScheduler, item_ids: list[int]) -> None:
    """Enroll these line items now, in one job.

    The job is due at once, so it is kept in memory: writing it to the job
    store and deleting it a millisecond later would add nothing, since the
    items table already holds these items durably as pending and start-up
    gives any pending item without a job its job back. What waits (the next
    attempt after a failure) is kept in the SQLAlchemy job store.
    """
    if item_ids:
        scheduler.add_job(JOB_FUNC, "date", args=[list(item_ids)], jobstore="memory",
                          id=f"enroll-{item_ids[0]}", replace_existing=True,
                          max_instances=ITEM_JOB_INSTANCES)


def schedule_retry(scheduler: AsyncIOScheduler, item_id: int, when: dt.datetime) -> None:
    """Make the next attempt for one line item at ``when`` (naive UTC)."""
    scheduler.add_job(JOB_FUNC, "date", run_date=when.replace(tzinfo=dt.UTC),
                      args=[[item_id]], id=f"retry-{item_id}", replace_existing=True,
                      max_instances=ITEM_JOB_INSTANCES)


def schedule_check(scheduler: AsyncIOScheduler, item_id: int, when: dt.datetime) -> None:
    """Look for the account of an item's learner at ``when`` (naive UTC)."""
    scheduler.add_job(CHECK_FUNC, "date", run_date=when.replace(tzinfo=dt.UTC),
                      args=[[item_id]], id=f"account-{item_id}", replace_existing=True,
                      max_instances=ITEM_JOB_INSTANCES)


def covered(scheduler: AsyncIOScheduler) -> set[int]:
    """The line items that some job, stored or in memory, will enroll."""
    items: set[int] = set()
    for job in scheduler.get_jobs():
        if job.args and isinstance(job.args[0], list):
            items.update(job.args[0])
    return items


async def resume(store: Store, scheduler: AsyncIOScheduler,
                 busy: Collection[int] = ()) -> int:
    """Give every pending item that no job covers a job; return how many.

    ``busy``: items whose job is running right now (a job leaves the job
    store when it starts), which must not get a second one.
    """
    have = covered(scheduler)
    now = utcnow()
    due_now: list[int] = []
    later = 0
    for item_id, due, state in await store.pending_items():
        if item_id in have or item_id in busy:
            continue
        if state == AWAITING_ACCOUNT:
            schedule_check(scheduler, item_id, due or now)
            later += 1
        elif due is None or due <= now:
            due_now.append(item_id)
        else:
            schedule_retry(scheduler, item_id, due)
            later += 1
    for i in range(0, len(due_now), RESUME_CHUNK):
        schedule_new(scheduler, due_now[i:i + RESUME_CHUNK])
    return len(due_now) + later


def start_sweep(store: Store, scheduler: AsyncIOScheduler, seconds: float,
                busy: Collection[int], watch_seconds: float = 1.0,
                track: Callable[[Callable], Callable] = lambda job: job) -> None:
    """Re-run :func:`resume` every ``seconds``, so an item whose job could not
    be written (say, the job store's disk was full for a moment) is picked up
    without a restart; and, within ``watch_seconds``, whenever another process
    wrote to the database (an operator's ``edx-hooks retry`` or ``replay``).
    Kept in memory: they are re-created at start. ``track`` wraps each, so
    that stopping lets one under way finish."""

    async def sweep() -> None:
        restored = await resume(store, scheduler, busy)
        if restored:
            logs.event(log, logs.WARNING, "scheduler.resumed", items=restored, cause="sweep")

    async def watch() -> None:
        if await store.written_elsewhere():
            await store.count_rejected_bytes()  # `edx-hooks prune` may have emptied some
            restored = await resume(store, scheduler, busy)
            if restored:
                logs.event(log, logs.INFO, "scheduler.resumed", items=restored,
                           cause="another-process")

    scheduler.add_job(track(sweep), "interval", seconds=seconds, id="sweep",
                      jobstore="memory", replace_existing=True)
    scheduler.add_job(track(watch), "interval", seconds=watch_seconds, id="watch",
                      jobstore="memory", replace_existing=True)
