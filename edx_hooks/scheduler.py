"""Scheduling: one APScheduler job per line item, kept in a SQLAlchemy job store.

Jobs are ``edx_hooks.jobs:enroll_item(item_id)`` with the explicit id
``enroll-<item id>``, so re-scheduling an item replaces its job instead of
adding a second one. The items table is the truth about what still has to
happen: on start-up every pending item whose job is missing (a crash between
commit and scheduling, or while its job was running) gets its job back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Iterable
from typing import Any

import sqlalchemy as sa
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .store import Store

log = logging.getLogger("edx_hooks.scheduler")

JOB_FUNC = "edx_hooks.jobs:enroll_item"


def job_id(item_id: int) -> str:
    return f"enroll-{item_id}"


def create(jobs_url: str) -> AsyncIOScheduler:
    engine = sa.create_engine(jobs_url)
    if engine.dialect.name == "sqlite":
        # The job store only says *when* to run what the items table says must
        # run; start-up rebuilds any job it lost (see resume), so it need not
        # survive a power cut and its commits skip the fsync (WAL + NORMAL
        # still survives a crash of the process).

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

    return AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine), "memory": MemoryJobStore()},
        job_defaults={
            # The default grace of 1 s silently skips jobs that come due while
            # the loop is busy with a burst of orders: run them however late.
            "misfire_grace_time": None,
            "coalesce": True,
            "max_instances": 1,
        },
        timezone=dt.UTC,
    )


def schedule(scheduler: AsyncIOScheduler, item_ids: Iterable[int],
             when: dt.datetime | None = None) -> None:
    """Run the enrollment of these items at ``when`` (naive UTC), or now."""
    run_date = when.replace(tzinfo=dt.UTC) if when else None
    for item_id in item_ids:
        scheduler.add_job(JOB_FUNC, "date", run_date=run_date, args=[item_id],
                          id=job_id(item_id), replace_existing=True)


async def resume(store: Store, scheduler: AsyncIOScheduler,
                 busy: Collection[int] = ()) -> int:
    """Give every pending item without a job its job back; return how many.

    ``busy``: items whose job is running right now (it left the job store
    when it started), which must not get a second one.
    """
    restored = 0
    for item_id, due in await store.pending_items():
        if item_id not in busy and scheduler.get_job(job_id(item_id)) is None:
            schedule(scheduler, [item_id], due)
            restored += 1
    return restored


def start_sweep(store: Store, scheduler: AsyncIOScheduler, seconds: float,
                busy: Collection[int]) -> None:
    """Re-run :func:`resume` every ``seconds``, so an item whose job could not
    be written (say, the job store's disk was full for a moment), or that an
    operator set pending again, is picked up without a restart. Kept in
    memory: it is re-created at start."""

    async def sweep() -> None:
        restored = await resume(store, scheduler, busy)
        if restored:
            log.warning("event=scheduler.resumed items=%d", restored)

    scheduler.add_job(sweep, "interval", seconds=seconds, id="sweep",
                      jobstore="memory", replace_existing=True)
