"""The writer: every write of the service, group-committed.

Requests hand their writes to one writer, which commits everything queued
so far in a single transaction and only then resolves each write's future:
a request is answered after the commit that holds its rows, so durability
is that of a commit per request, at a fraction of the cost. The batch runs
in one hop in a thread of its own, through SQLAlchemy's synchronous engine
on the SQLite file (the async driver makes two or three thread hops per
statement). After :meth:`Writer.close` begins, a write fails at once with
:class:`StoreClosed`; one queued before is committed first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import logs
from ..errors import StoreClosed  # re-exported: store.StoreClosed
from .sqlite import begin_immediate, sqlite_pragmas

log = logging.getLogger("edx_hooks.store")

#: a batch operation: op(connection, [args, ...]) -> [result, ...]
Op = Callable[[Connection, list[tuple]], list[Any]]


@dataclass
class _Write:
    op: Op
    args: tuple
    future: asyncio.Future


class Writer:
    def __init__(self, url: sa.URL, synchronous: str = "full",
                 after_commit: Callable[[list[Any]], None] | None = None):
        """``url``: the SQLite file. ``after_commit`` is called with the
        results of each committed batch, before any write of it is resolved
        (the store schedules the batch's new line items there)."""
        self.engine = sa.create_engine(url.set(drivername="sqlite"), pool_size=1,
                                       max_overflow=0,
                                       connect_args={"check_same_thread": False})
        sqlite_pragmas(self.engine, synchronous)
        begin_immediate(self.engine)
        self.after_commit = after_commit
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="edx-hooks-writer")
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def closing(self) -> bool:
        """close() has begun: no write is taken any more."""
        return self._closing

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the writer's thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, op: Op, *args: Any) -> Any:
        """Queue a write; its result once the batch holding it is committed."""
        if self._closing or self._task is None or self._task.done():
            raise StoreClosed("the database is closed: edx-hooks is stopping")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(op, args, future))
        return await future

    async def close(self) -> None:
        """Commit what is queued, then stop; from the moment this is called,
        a new write fails at once."""
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        await self.run(self.engine.dispose)
        self._thread.shutdown(wait=True)

    async def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` on the writer's own connection: it
        changes with every commit of another connection (another process),
        never with the writer's own."""
        def read() -> int:
            raw = self.engine.raw_connection()  # the pool's one connection, no BEGIN
            try:
                return raw.cursor().execute("PRAGMA data_version").fetchone()[0]
            finally:
                raw.close()
        return await self.run(read)

    async def _loop(self) -> None:
        """Commit what is queued, batch after batch, until close() says stop
        (nothing can be queued after that). Should the loop itself fail, every
        write still queued is failed rather than left waiting forever."""
        try:
            stopping = False
            while not stopping:
                batch = [await self._queue.get()]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                stopping = None in batch
                writes = [w for w in batch if w is not None]
                if writes:
                    await self._commit(writes)
        finally:
            while not self._queue.empty():
                left = self._queue.get_nowait()
                if left is not None and not left.future.done():
                    left.future.set_exception(StoreClosed("the database was closed"))

    async def _commit(self, writes: list[_Write]) -> None:
        """Commit a batch in one transaction, the writes of each operation
        together; then resolve each write's future."""
        groups: dict[Op, list[_Write]] = {}
        for w in writes:
            groups.setdefault(w.op, []).append(w)

        def run() -> list[tuple[_Write, Any]]:
            with self.engine.begin() as conn:
                done = []
                for op, group in groups.items():
                    done += zip(group, op(conn, [w.args for w in group]), strict=True)
                return done

        try:
            results = await self.run(run)
        except Exception:
            if len(writes) == 1:
                logs.event(log, logs.ERROR, "store.write_failed", op=writes[0].op.__name__,
                           exc_info=True)
                if not writes[0].future.done():
                    writes[0].future.set_exception(RuntimeError("database write failed"))
                return
            # One bad write must not sink its neighbours: commit each alone.
            for w in writes:
                await self._commit([w])
            return
        if self.after_commit is not None:
            try:
                self.after_commit([result for _, result in results])
            except Exception:  # the callback's own failure: committed all the same
                logs.event(log, logs.ERROR, "store.after_commit_failed", exc_info=True)
        for w, result in results:
            if not w.future.done():
                w.future.set_result(result)
