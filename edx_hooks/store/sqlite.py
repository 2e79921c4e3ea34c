"""SQLite set-up: the pragmas every connection gets, and files readable by
the service's user only (they hold orders and learner emails)."""

from __future__ import annotations

import logging
import os
from typing import Any

import sqlalchemy as sa

from .. import logs

log = logging.getLogger("edx_hooks.store")


def sqlite_pragmas(engine: sa.Engine, synchronous: str) -> None:
    """WAL, the given ``synchronous`` level, a busy timeout and foreign keys
    on every new connection of ``engine`` (a synchronous engine, or an async
    one's ``sync_engine``)."""
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def begin_immediate(engine: sa.Engine) -> None:
    """Transactions of ``engine`` take the write lock when they begin, not at
    their first write: what a writer reads (existing orders, the last ids)
    cannot change before it writes. SQLAlchemy's documented recipe for the
    sqlite driver's own BEGIN handling (which is turned off)."""
    @sa.event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_private(path: str) -> None:
    """Create an SQLite file readable by this user only, if it does not exist
    yet; SQLite gives its WAL and shared-memory files the same permissions."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        pass  # it exists; or it cannot be created, which opening it will report


def restrict_files(path: str) -> None:
    """Make a database created by an older version, or by hand, readable by
    this user only, as a new one is (its WAL and shared memory too)."""
    for name in (path, path + "-wal", path + "-shm"):
        try:
            mode = os.stat(name).st_mode & 0o777
            if mode & 0o077:
                os.chmod(name, mode & 0o700)
                logs.event(log, logs.WARNING, "file.permissions_fixed", path=name,
                           was=oct(mode), now=oct(mode & 0o700))
        except FileNotFoundError:
            continue
        except OSError:
            logs.event(log, logs.WARNING, "file.permissions", path=name,
                       fix=f"chmod 600 {name}: it holds orders and learner emails")
