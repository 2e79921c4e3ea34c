"""One ``edx-hooks serve`` per database: the service holds an exclusive lock
on ``<database>.lock`` for as long as it runs, with its pid written inside.

Two services on one database would both run every job, and the guard
against a second LMS call for the same line item lives in each one's
memory. The lock is ``flock``: the kernel releases it when the process ends,
however it ends (``kill -9`` included), so a stale file never keeps the
service down. The commands (``orders``, ``retry``...) take no lock: they are
safe beside the service.
"""

from __future__ import annotations

import fcntl
import os

from .errors import Held  # re-exported: callers catch lock.Held


class ServiceLock:
    def __init__(self, database: str):
        self.path = f"{database}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`Held`; an ``OSError`` when the file
        cannot be opened (its directory missing or not writable)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise Held(self.path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go (the file stays: removing it would let a third process lock
        a new file while a second still waits on the old one)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
