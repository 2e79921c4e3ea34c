"""Upgrades: a database written by release 0.1.0 (``fixtures/db-0.1.0``,
made by that release's code with ``make.py`` there) is upgraded in place at
start-up, keeps every row, and its unfinished work goes on; a database newer
than the code, or one that cannot be upgraded, is refused with one line and
left as it was."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from edx_hooks.cli import EXIT_SCHEMA
from edx_hooks.store import Store, metadata, migrate

from .conftest import SHOPIFY_REFUND, SHOPIFY_SECRET, until

FIXTURE = Path(__file__).parent / "fixtures" / "db-0.1.0"
OLD_TABLES = ("deliveries", "orders", "items")


def load_fixture(db: Path) -> None:
    """The 0.1.0 database and job store, as that release left them."""
    for name, target in (("edx-hooks.sql", db), ("edx-hooks.jobs.sql", Path(f"{db}.jobs.db"))):
        with sqlite3.connect(target) as conn:
            conn.executescript((FIXTURE / name).read_text())


def rows(db: Path, table: str, columns: list[str] | None = None) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        names = columns or [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        return conn.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY id").fetchall()


def dump(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return "\n".join(conn.iterdump())


def columns(db: Path, table: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def schema_diff(db: Path) -> list:
    """What differs between the database's schema and the code's (none: the
    upgraded database is what a new one would be)."""
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


@pytest.mark.gen_test
async def test_the_upgrade_keeps_every_row_and_matches_a_new_schema(tmp_path):
    db = tmp_path / "edx-hooks.db"
    load_fixture(db)
    before = {t: rows(db, t) for t in OLD_TABLES}
    old_columns = {t: columns(db, t) for t in OLD_TABLES}
    assert "awaiting_payment" in old_columns["orders"]

    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.start()  # what `edx-hooks serve` does first
    await store.close()
    assert (store.upgrade.before, store.upgrade.after) == ("0001", migrate.head())

    kept = {t: [c for c in old_columns[t] if c != "awaiting_payment"] for t in OLD_TABLES}
    for table in OLD_TABLES:
        index = [old_columns[table].index(c) for c in kept[table]]
        assert rows(db, table, kept[table]) == [tuple(r[i] for i in index)
                                                 for r in before[table]], table
    awaiting = {r[3]: r[old_columns["orders"].index("awaiting_payment")]
                for r in before["orders"]}
    assert {r[0]: r[1] for r in rows(db, "orders", ["external_id", "hold"])} == {
        order: "awaiting-payment" if flag else None for order, flag in awaiting.items()}
    for created, requested, since in rows(db, "items", ["created_at", "unenroll_requested_at",
                                                        "pending_since"]):
        assert since == (requested or created)
    assert [r[1] for r in rows(db, "items", ["id", "state"])] == [
        "enrolled", "enrolled", "failed", "failed", "unenrolled", "unenroll-failed",
        "unenroll-pending", "pending", "enrolled", "pending"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0004",)]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert schema_diff(db) == []

    # the copy taken before is the 0.1.0 database, untouched
    [backup] = tmp_path.glob("edx-hooks.db.schema-0001-*.bak")
    assert (backup.stat().st_mode & 0o077) == 0
    assert {t: rows(backup, t) for t in OLD_TABLES} == before
    assert "alembic_version" not in {r[0] for r in sqlite3.connect(backup).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}

    # a second start finds it current: nothing to do, no second copy
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.start()
    await store.close()
    assert (store.upgrade.before, store.upgrade.after) == ("0004", "0004")
    assert len(list(tmp_path.glob("*.bak"))) == 1


@pytest.mark.gen_test
async def test_a_new_database_is_the_same_schema(tmp_path):
    db = tmp_path / "new.db"
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.start()
    await store.close()
    assert (store.upgrade.before, store.upgrade.after) == (None, migrate.head())
    assert schema_diff(db) == []
    assert list(tmp_path.glob("*.bak")) == []


@pytest.mark.gen_test(timeout=90)
async def test_serve_upgrades_at_start_and_the_unfinished_work_goes_on(harness, lms, serve):
    load_fixture(harness.db_path)
    service = serve(shopify={"require_payment": True, "unenroll_on_refund": True},
                    retry={"delay_seconds": 0.5})
    code, out, _ = await _cli(harness, service, "check-config")
    assert code == 0 and "database: schema 0001; `edx-hooks serve` upgrades it to 0004" in out
    code, _, err = await _cli(harness, service, "orders")
    assert code == 1 and "has schema 0001 and this edx-hooks needs 0004" in err

    await service.start()
    [upgraded] = service.lines("database.upgraded")
    assert "from=0001" in upgraded and "schema=0004" in upgraded and ".bak" in upgraded
    # the retry waiting in the job store (gus), the unenrollment waiting for
    # its retry (fay) and the item whose call was cut off (jo) all go on
    await until(lambda: _state(harness, "gus@example.org") == "enrolled", timeout=20)
    await until(lambda: _state(harness, "fay@example.org") == "unenrolled", timeout=20)
    await until(lambda: _state(harness, "jo@example.org") == "enrolled", timeout=20)
    # the order that waited for payment is enrolled when its payment comes
    [unpaid] = [d for d in harness.deliveries() if b'"id": 1007' in d["body"]]
    order = json.loads(unpaid["body"])
    order["financial_status"] = "paid"
    response = await harness.shopify(order, headers={"X-Shopify-Topic": "orders/paid"})
    assert response.code == 200
    await until(lambda: _state(harness, "hal@example.org") == "enrolled")
    # an item failed under 0.1.0 is retried by the operator
    code, out, _ = await _cli(harness, service, "retry", "--item", "3", "--wait", "20")
    assert code == 0 and "item 3 (shopify order 1002): enrolled" in out
    # a refund of an order enrolled under 0.1.0 unenrolls it
    [ada] = [i for i in harness.items() if i["email"] == "ada@example.org"]
    await harness.shopify({"id": 1, "order_id": 1001, "refund_line_items": [
        {"id": 1, "line_item_id": int(ada["external_id"]), "quantity": 1}]}, **SHOPIFY_REFUND)
    await until(lambda: _state(harness, "ada@example.org") == "unenrolled")
    await service.quiet()
    assert sorted((x.action, x.email) for x in lms.learners()) == [
        ("enroll", "cy@example.org"), ("enroll", "gus@example.org"),
        ("enroll", "hal@example.org"), ("enroll", "jo@example.org"),
        ("unenroll", "ada@example.org"), ("unenroll", "fay@example.org")]
    assert harness.jobs() == []
    code, out, _ = await _cli(harness, service, "check-config")
    assert "database: schema 0004 (current)" in out


async def _cli(harness, service, *args: str) -> tuple[int, str, str]:
    harness.config_path = service.config
    return await harness.cli(*args)


def _state(harness, email: str) -> str | None:
    found = [i["state"] for i in harness.items() if i["email"] == email]
    return found[-1] if found else None


@pytest.mark.gen_test
async def test_a_database_newer_than_the_code_is_refused_untouched(harness, serve):
    load_fixture(harness.db_path)
    store = Store(f"sqlite+aiosqlite:///{harness.db_path}")
    await store.start()
    await store.close()
    with sqlite3.connect(harness.db_path) as conn:  # as a later release would leave it
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    before = dump(harness.db_path)
    service = serve()
    with pytest.raises(AssertionError, match="serve ended"):
        await service.start()
    assert await service.proc.wait() == EXIT_SCHEMA
    assert [line for line in service.log if line.startswith("edx-hooks:")] == [
        f"edx-hooks: database {harness.db_path} has schema 0099, newer than this edx-hooks "
        "knows (up to 0004): run the edx-hooks release that wrote it, or restore the copy "
        "taken before that upgrade\n"]
    assert dump(harness.db_path) == before
    code, out, _ = await _cli(harness, service, "check-config")
    assert code == 1 and "FAIL database: schema 0099 is newer than this edx-hooks" in out
    code, _, err = await _cli(harness, service, "orders")
    assert code == 1 and "newer than this edx-hooks" in err


@pytest.mark.gen_test
async def test_an_upgrade_that_fails_is_rolled_back_whole(harness, serve):
    load_fixture(harness.db_path)
    with sqlite3.connect(harness.db_path) as conn:  # a row edited by hand, pointing nowhere
        conn.execute("UPDATE items SET order_id = 999 WHERE id = 1")
    before = {t: rows(harness.db_path, t) for t in OLD_TABLES}
    service = serve()
    with pytest.raises(AssertionError, match="serve ended"):
        await service.start()
    assert await service.proc.wait() == EXIT_SCHEMA
    [line] = [line for line in service.log if line.startswith("edx-hooks:")]
    assert line.startswith(f"edx-hooks: upgrading database {harness.db_path} from schema 0001 "
                           "to 0004 failed (1 rows break a foreign key)")
    assert "it was rolled back and is unchanged (a copy is at " in line
    # unchanged: the 0.1.0 tables as they were, no version table
    assert {t: rows(harness.db_path, t) for t in OLD_TABLES} == before
    assert "awaiting_payment" in columns(harness.db_path, "orders")
    with sqlite3.connect(harness.db_path) as conn:
        assert "alembic_version" not in {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_the_fixture_is_what_0_1_0_wrote():
    """The fixture's own shape, so that a careless regeneration is noticed."""
    sql = (FIXTURE / "edx-hooks.sql").read_text()
    assert "awaiting_payment BOOLEAN NOT NULL" in sql and "alembic_version" not in sql
    jobs = (FIXTURE / "edx-hooks.jobs.sql").read_text()
    assert "'retry-7'" in jobs and "'retry-8'" in jobs
    assert SHOPIFY_SECRET not in sql  # signatures were stored, never the secret


@pytest.mark.gen_test
async def test_commands_beside_the_service_take_no_write_lock(harness):
    await harness.start()
    blocker = sqlite3.connect(harness.db_path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")  # someone holds the write lock, for long
    try:
        code, out, err = await harness.cli("orders")
        assert (code, out.strip(), err) == (0, "no orders", "")
        code, out, _ = await harness.cli("check-config")
        assert code == 0 and "schema 0004 (current)" in out
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


@pytest.mark.gen_test
async def test_a_copy_that_cannot_be_written_stops_the_upgrade_with_one_line(tmp_path,
                                                                              monkeypatch):
    import errno
    import os

    from edx_hooks.store import SchemaError

    db = tmp_path / "edx-hooks.db"
    load_fixture(db)
    real_open = os.open

    def full_disk(path, *args, **kwargs):
        if ".schema-" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(migrate.os, "open", full_disk)
    store = Store(f"sqlite+aiosqlite:///{db}")
    with pytest.raises(SchemaError) as e:
        await store.start()
    await store.close()
    assert str(e.value) == (f"cannot copy {db} before upgrading it from schema 0001 (No space "
                            "left on device): free space or fix the directory's permissions; "
                            "the database is unchanged")
    assert "awaiting_payment" in columns(db, "orders") and list(tmp_path.glob("*.bak")) == []
    assert list(tmp_path.glob("*.copying*")) == []


@pytest.mark.gen_test
async def test_an_upgrade_failing_at_every_restart_keeps_one_copy(tmp_path):
    """Under Restart=on-failure a failing upgrade is retried again and again:
    it takes one copy, the first time, and never another."""
    from edx_hooks.store import SchemaError

    db = tmp_path / "edx-hooks.db"
    load_fixture(db)
    [(_, order_id)] = rows(db, "items", ["id", "order_id"])[:1]
    with sqlite3.connect(db) as conn:  # a row edited by hand, pointing nowhere
        conn.execute("UPDATE items SET order_id = 999 WHERE id = 1")
    broken = {t: rows(db, t) for t in OLD_TABLES}
    # what a copy cut short by kill -9 leaves: never taken for a copy
    (tmp_path / "edx-hooks.db.schema-0001.copying").write_bytes(b"half a copy")
    errors = []
    for _ in range(3):
        store = Store(f"sqlite+aiosqlite:///{db}")
        with pytest.raises(SchemaError) as e:
            await store.start()
        await store.close()
        errors.append(str(e.value))
    [backup] = tmp_path.glob("edx-hooks.db.schema-0001-*.bak")
    assert list(tmp_path.glob("*.copying*")) == []
    assert len(set(errors)) == 1 and f"(a copy is at {backup})" in errors[0]

    with sqlite3.connect(db) as conn:  # the operator mends the row; the upgrade goes through
        conn.execute("UPDATE items SET order_id = ? WHERE id = 1", (order_id,))
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.start()
    await store.close()
    assert (store.upgrade.before, store.upgrade.after, store.upgrade.backup) == (
        "0001", migrate.head(), str(backup))
    assert list(tmp_path.glob("*.bak")) == [backup]
    # the copy is the database as the first failed start found it
    assert {t: rows(backup, t) for t in OLD_TABLES} == broken


def test_the_schema_constant_is_the_head_of_the_revisions():
    assert migrate.SCHEMA == migrate.scripts().get_current_head()


@pytest.mark.gen_test
async def test_0003_upgrades_to_0004_with_an_empty_watermark_table_that_then_persists(tmp_path):
    import datetime as dt

    db = tmp_path / "edx-hooks.db"
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.start()
    await store.close()
    with sqlite3.connect(db) as conn:  # what release 0003 left: no reconcile_marks
        conn.execute("DROP TABLE reconcile_marks")
        conn.execute("UPDATE alembic_version SET version_num = '0003'")
        conn.execute("INSERT INTO orders (provider, shop, external_id, name, created_at, "
                     "updated_at) VALUES ('woocommerce', 'https://shop.example', '59', '#59', "
                     "'2026-12-01 00:00:00', '2026-12-01 00:00:00')")
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.start()
    assert (store.upgrade.before, store.upgrade.after) == ("0003", "0004")
    assert await store.watermark("woocommerce", "https://shop.example") is None
    when = dt.datetime(2026, 12, 6, 3, 0, 0)
    await store.set_watermark("woocommerce", "https://shop.example", when)
    await store.set_watermark("woocommerce", "https://shop.example", when)  # one row a shop
    await store.close()
    assert schema_diff(db) == []
    assert rows(db, "orders", ["external_id"]) == [("59",)]
    assert len(list(tmp_path.glob("edx-hooks.db.schema-0003-*.bak"))) == 1
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.start()
    try:
        assert await store.watermark("woocommerce", "https://shop.example") == when
        assert await store.watermark("shopify", "https://shop.example") is None
    finally:
        await store.close()
    assert rows(db, "reconcile_marks", ["provider", "shop"]) == [
        ("woocommerce", "https://shop.example")]


@pytest.mark.gen_test
async def test_lost_answers_that_0_1_0_called_failed_are_unknown_after_the_upgrade(tmp_path):
    """0.1.0 (and 0.2.0.dev0) recorded an item whose every call timed out as
    failed, though the LMS may have enrolled it. The upgrade to 0003 makes it
    unknown (a refund then unenrolls it, a retry asks the LMS first), and marks
    a pending one whose last call timed out, so its next attempt asks before
    sending; an item failed for an answer the LMS gave stays failed."""
    db = tmp_path / "edx-hooks.db"
    load_fixture(db)
    lost = "LMS unreachable: Timeout during request"
    with sqlite3.connect(db) as conn:  # as 0.1.0 wrote them
        for item_id, state, reason in ((3, "failed", f"{lost} (after 3 attempts)"),
                                       (8, "pending", lost),
                                       (6, "unenroll-failed", "bulk_enroll answered 504 (after "
                                                              "3 attempts)")):
            conn.execute("UPDATE items SET state = ?, reason = ?, attempts = 3 WHERE id = ?",
                         (state, reason, item_id))
    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.start()
    await store.close()
    found = {r[0]: r[1:] for r in rows(db, "items", ["id", "state", "unconfirmed"])}
    assert found[3] == ("unknown", "enroll")
    assert found[8] == ("pending", "enroll")
    assert found[6] == ("unknown", "unenroll")
    assert found[4] == ("failed", None)  # no learner email: an answer we gave ourselves


@pytest.mark.gen_test(timeout=30)
async def test_the_jobs_0_1_0_stored_run_in_the_runtime_the_scheduler_is_given(tmp_path):
    """0.1.0's job store names ``edx_hooks.jobs:enroll_items`` with the item
    ids only; the scheduler's executor runs those jobs in the runtime it was
    created with (here one that records what it is asked to run)."""
    from edx_hooks import scheduler as sched

    class Recording:
        def __init__(self):
            self.runs: list[tuple[list[int], str]] = []

        async def run(self, item_ids, step):
            self.runs.append((item_ids, f"{step.__module__}.{step.__name__}"))

    db = tmp_path / "edx-hooks.db"
    load_fixture(db)
    runtime = Recording()
    scheduler = sched.create(f"sqlite:///{db}.jobs.db", runtime)
    scheduler.start(paused=True)
    try:
        stored = sorted((job.id, job.func_ref, job.args) for job in scheduler.get_jobs())
        assert stored == [("retry-7", "edx_hooks.jobs:enroll_items", ([7],)),
                          ("retry-8", "edx_hooks.jobs:enroll_items", ([8],))]
        scheduler.resume()  # both are overdue: they run now
        await until(lambda: len(runtime.runs) == 2)
    finally:
        scheduler.shutdown(wait=False)
    assert sorted(runtime.runs) == [([7], "edx_hooks.enrollment.steps.attempt"),
                                    ([8], "edx_hooks.enrollment.steps.attempt")]
