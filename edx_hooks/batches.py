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

The batcher only makes calls; what an outcome means for an item (recording
it, a retry, a failure) is the job's (``jobs``), which awaits it here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .lms import LMSClient

log = logging.getLogger("edx_hooks.batches")

#: (course id, action, auto_enroll)
Key = tuple[str, str, bool]
#: calls under way at once at most (the LMS client's own connection limit)
CONCURRENT_CALLS = 10
#: the LMS audit log's reason field
REASON_CHARS = 255


class Withdrawn(Exception):
    """The item's refund or cancellation came while it waited: not sent."""


@dataclass
class Entry:
    item_id: int
    email: str
    #: how the LMS's audit log names the item's order: "shopify #1001 (shop)"
    order: str
    future: asyncio.Future
    #: the task of the item waiting for this
    task: asyncio.Task | None = field(default=None)


class Batcher:
    def __init__(self, lms: LMSClient, batch_size: int,
                 withdrawn: Callable[[list[int]], Awaitable[set[int]]],
                 picked: Callable[[list[Entry]], None]):
        """``withdrawn``: which of these items have had a refund or
        cancellation (asked just before their enrollment call goes out);
        ``picked``: told of the entries a call takes, as it takes them."""
        self.lms = lms
        self.batch_size = batch_size
        self.withdrawn = withdrawn
        self.picked = picked
        self.queues: dict[Key, list[Entry]] = {}
        self._wakeup = asyncio.Event()
        self._loop: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(CONCURRENT_CALLS)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop().create_task(self._run())

    def halt(self) -> None:
        """No new call from now on; calls under way go on."""
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None

    async def submit(self, key: Key, item_id: int, email: str, order: str) -> str:
        """Wait for the call that takes this learner; its outcome for them
        (``enrolled``, ``allowed``, ``unenrolled``), or the LMSError of the
        learner or of the whole call, or :class:`Withdrawn`."""
        entry = Entry(item_id, email, order, asyncio.get_running_loop().create_future(),
                      asyncio.current_task())
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
            while not any(self.queues.values()):
                self._wakeup.clear()
                await self._wakeup.wait()
            await self.lms.pacer.wait()  # one turn per call, however many learners
            await self._slots.acquire()
            key = min((k for k, q in self.queues.items() if q), key=self._first_seen,
                      default=None)
            if key is None:
                self._slots.release()
                continue
            queue = self.queues[key]
            entries = [e for e in queue[:self.batch_size] if not e.future.done()]
            del queue[:self.batch_size]
            if not queue:
                del self.queues[key]
            if not entries:
                self._slots.release()
                continue
            self.picked(entries)
            call = asyncio.get_running_loop().create_task(self._call(key, entries))
            self._calls.add(call)
            call.add_done_callback(self._done)

    def _first_seen(self, key: Key) -> int:
        """Queues are served oldest first: by the id of their first item,
        which grows with arrival."""
        return self.queues[key][0].item_id

    def _done(self, call: asyncio.Task) -> None:
        self._calls.discard(call)
        self._slots.release()

    async def _call(self, key: Key, entries: list[Entry]) -> None:
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
            results = await self.lms.bulk(action, course, [e.email for e in entries],
                                          reason=reason([e.order for e in entries]),
                                          slot_taken=True, auto_enroll=auto_enroll)
        except BaseException as error:  # the whole call's: every learner's in it
            for entry in entries:
                if not entry.future.done():
                    if isinstance(error, asyncio.CancelledError):
                        entry.future.cancel()
                    else:
                        entry.future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for entry in entries:
            if not entry.future.done():
                result = results[entry.email.lower()]
                if isinstance(result, Exception):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)


def reason(orders: list[str]) -> str:
    """What the LMS's audit log records for a call: the orders in it, as many
    as its field holds, and how many more."""
    unique = list(dict.fromkeys(orders))
    text = "edx-hooks " + ", ".join(unique)
    if len(text) <= REASON_CHARS:
        return text
    shown: list[str] = []
    for n, order in enumerate(unique):
        more = f" and {len(unique) - n} more"
        candidate = "edx-hooks " + ", ".join([*shown, order])
        if len(candidate) + len(f" and {len(unique) - n - 1} more") > REASON_CHARS:
            return "edx-hooks " + ", ".join(shown) + more
        shown.append(order)
    return text[:REASON_CHARS]
