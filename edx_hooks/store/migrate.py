"""Schema versions: the database records which schema it has (Alembic's
``alembic_version`` table), ``edx-hooks serve`` creates a new database at
the current schema and upgrades an older one in place at start-up, and every
other command refuses a database that is missing or not at the current
schema rather than create or change it.

The revisions live in ``migrations/versions``. Release 0.1.0 kept no
version: a database holding its tables and no version table is at
:data:`BASELINE`. An upgrade of an SQLite file runs in one transaction (all
or nothing) after a copy of the file is taken with SQLite's backup API, and
is logged as ``database.upgraded`` (one copy per schema version: a failed
upgrade retried at each restart does not copy the file again); a database
newer than this code is refused with one line, never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import glob
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import logs
from ..errors import SchemaError  # re-exported: store.SchemaError
from .schema import metadata

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

log = logging.getLogger("edx_hooks.store")

MIGRATIONS = Path(__file__).with_name("migrations")
#: the schema this code reads and writes: the head of migrations/versions (a
#: test checks). Known without Alembic, which is loaded (about 10 MB) only to
#: upgrade.
SCHEMA = "0004"
#: the schema of release 0.1.0, which recorded no version
BASELINE = "0001"
#: tables every edx-hooks database has had since 0.1.0
OUR_TABLES = {"deliveries", "orders", "items"}
#: Alembic's version table, as Alembic defines it
VERSION = sa.Table("alembic_version", sa.MetaData(),
                   sa.Column("version_num", sa.String(32), nullable=False),
                   sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


@functools.cache
def scripts() -> ScriptDirectory:
    # alembic is heavy and needed only when the schema must change: imported then
    from alembic.script import ScriptDirectory
    return ScriptDirectory(str(MIGRATIONS))


def head() -> str:
    """The schema this code reads and writes."""
    return SCHEMA


def revision(conn: Connection) -> str | None:
    """The database's schema revision; None for a database without tables.

    Raises :class:`SchemaError` for a database of something else.
    """
    tables = set(sa.inspect(conn).get_table_names())
    versions = (conn.execute(sa.select(VERSION.c.version_num)).scalars().all()
                if "alembic_version" in tables else None)
    return _revision(tables, versions)


def _revision(tables: set[str], versions: list[str] | None) -> str | None:
    if versions is not None:
        if len(versions) == 1:
            return versions[0]
    elif OUR_TABLES <= tables:
        return BASELINE
    elif not tables:
        return None
    raise SchemaError("the database holds tables that are not edx-hooks' (or a broken "
                      "version table): check database.url")


def check_usable(found: str | None, create: bool, where: str) -> None:
    """Refuse a schema this code cannot use: a newer one always; without
    ``create`` (every command but serve), any but the current one."""
    check_known(found, where)
    if create or found == SCHEMA:
        return
    if found is None:
        raise SchemaError(f"{where} holds no edx-hooks tables: check database.url "
                          "(only `edx-hooks serve` creates the database)")
    raise SchemaError(f"{where} has schema {found} and this edx-hooks needs {SCHEMA}: "
                      "start `edx-hooks serve` once, which upgrades it (keeping a copy)")


def check_known(found: str | None, where: str) -> None:
    """Refuse a schema this code does not know: one written by a newer release."""
    if found is not None and not _known(found):
        raise SchemaError(
            f"{where} has schema {found}, newer than this edx-hooks knows (up to {head()}): "
            "run the edx-hooks release that wrote it, or restore the copy taken before "
            "that upgrade")


def _known(found: str) -> bool:
    return found == SCHEMA or found in {rev.revision for rev in scripts().walk_revisions()}


@dataclass
class Upgrade:
    before: str | None
    after: str
    backup: str | None = None


def prepare(conn: Connection, create: bool, where: str) -> Upgrade:
    """Bring the database on ``conn`` (in a transaction) to :func:`head`:
    create the tables of a new one (``create``), upgrade an older one, refuse
    a newer one. Nothing is committed here: the caller's transaction holds it
    all."""
    found = revision(conn)
    check_usable(found, create, where)
    target = head()
    if found is None:
        metadata.create_all(conn)
        VERSION.create(conn)
        conn.execute(VERSION.insert().values(version_num=target))
        return Upgrade(None, target)
    if found == target:
        return Upgrade(found, target)
    # alembic is heavy and needed only for an upgrade: imported here, not at start
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={
        "script": scripts(), "render_as_batch": True,
        "fn": lambda rev, _ctx: scripts()._upgrade_revs(target, rev)})
    if "alembic_version" not in sa.inspect(conn).get_table_names():
        ctx.stamp(scripts(), BASELINE)
    with Operations.context(ctx):
        ctx.run_migrations()
    return Upgrade(found, target)


def sqlite_path(url: sa.URL) -> str | None:
    """The file of an SQLite URL; None for other databases and memory."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def prepare_sqlite(engine: sa.Engine, create: bool) -> Upgrade:
    """:func:`prepare` on an SQLite file, the way SQLite wants it. The
    version is read without a transaction (no lock: a command run beside the
    service never holds it up); only when there is something to create or
    upgrade does it take the write lock, and for an upgrade, first a copy of
    the file, then foreign keys off while tables are rebuilt, checked after."""
    path = sqlite_path(engine.url)
    where = f"database {path}"
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection  # the driver's autocommit: no BEGIN
        tables = {r[0] for r in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = ([r[0] for r in raw.execute("SELECT version_num FROM alembic_version")]
                    if "alembic_version" in tables else None)
        found = _revision(tables, versions)
        check_usable(found, create, where)
        if found == head():
            return Upgrade(found, found)
        backup = _backup(path, found) if found is not None else None
        raw.execute("PRAGMA foreign_keys=OFF")  # takes effect outside a transaction only
        try:
            with conn.begin():  # BEGIN IMMEDIATE: the write lock, for all of it
                done = prepare(conn, create, where)
                if done.before not in (None, done.after):  # tables were rebuilt
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise ValueError(f"{len(broken)} rows break a foreign key")
        except SchemaError:
            raise
        except Exception as e:
            reason = str(getattr(e, "orig", None) or e).splitlines()[0][:200]
            raise SchemaError(
                f"upgrading {where} from schema {found} to {head()} failed ({reason}): "
                "it was rolled back and is unchanged"
                + (f" (a copy is at {backup})" if backup else "")) from e
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
    done.backup = backup
    if done.before != done.after:
        logs.event(log, logs.INFO, "database.created" if done.before is None
                   else "database.upgraded", path=path, schema=done.after,
                   **({"from": done.before, "backup": backup} if done.before else {}))
    return done


def _backup(path: str, found: str) -> str:
    """A consistent copy of the database (SQLite's online backup), readable
    by this user only, before it is upgraded from ``found``: one per schema
    version. A copy taken at an earlier start is kept and not taken again: an
    upgrade that fails is rolled back, so the database is still what that
    copy holds, and a restart loop must neither fill the disk with copies nor
    replace the good one. The copy is written under a temporary name and
    renamed when complete, so a copy cut short (kill -9, full disk) is never
    taken for one."""
    kept = sorted(glob.glob(f"{glob.escape(path)}.schema-{found}-*.bak"))
    if kept:
        logs.event(log, logs.INFO, "database.backup_kept", path=path, schema=found,
                   backup=kept[-1])
        return kept[-1]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = f"{path}.schema-{found}-{stamp}.bak"
    partial = f"{path}.schema-{found}.copying"
    try:
        for leftover in (partial, f"{partial}-journal"):  # of a copy cut short
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with _closing(sqlite3.connect(path)) as source, \
                _closing(sqlite3.connect(partial)) as copy:
            source.backup(copy)
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as e:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise SchemaError(f"cannot copy {path} before upgrading it from schema {found} "
                          f"({reason}): free space or fix the directory's permissions; the "
                          "database is unchanged") from None
    return target


@contextmanager
def _closing(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield conn
    finally:
        conn.close()


def status(url: str) -> tuple[str, bool]:
    """What ``check-config`` says of the database, without creating or
    changing it: (one line, whether it is usable)."""
    path = sqlite_path(sa.make_url(url))
    if path is None:
        return "database: database.url names no SQLite file", False
    if not os.path.exists(path):
        return (f"database {path}: does not exist yet; `edx-hooks serve` creates it "
                f"(schema {head()})"), True
    engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with engine.connect() as conn:
            found = revision(conn)
    except SchemaError as e:
        return f"database: {e}", False
    except sa.exc.SQLAlchemyError as e:
        return f"database: cannot be read ({str(getattr(e, 'orig', e)).splitlines()[0]})", False
    finally:
        engine.dispose()
    target = head()
    if found is None:
        return f"database: empty; `edx-hooks serve` creates the tables (schema {target})", True
    if found == target:
        return f"database: schema {found} (current)", True
    if not _known(found):
        return (f"database: schema {found} is newer than this edx-hooks knows (up to "
                f"{target}): run the release that wrote it"), False
    return (f"database: schema {found}; `edx-hooks serve` upgrades it to {target} at its next "
            "start, keeping a copy"), True
