"""`edx-hooks serve` as deployed: a real process, its start-up line, a signed
order reaching the LMS, a clean stop on SIGTERM, and config errors."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from tornado.testing import bind_unused_port

from edx_hooks.cli import EXIT_CONFIG

from .conftest import base_sections, line_item, shopify_order, until, write_config


def free_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


async def start_serve(config_path, env=None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edx_hooks", "serve", "--config", str(config_path),
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})


async def read_until(stream: asyncio.StreamReader, marker: str, timeout: float = 20) -> str:
    seen = ""
    async def read():
        nonlocal seen
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"process ended before {marker!r}:\n{seen}")
            seen += line.decode()
        return seen
    return await asyncio.wait_for(read(), timeout)


@pytest.mark.gen_test
async def test_serve_enrolls_a_signed_order_and_stops_cleanly(harness, lms):
    port = free_port()
    sections = base_sections(harness.tmp_path, lms.url)
    sections["server"] = {"port": port}
    sections["lms"].pop("client_secret")  # from the environment, as the README says
    config_path = write_config(harness.tmp_path / "serve.toml", sections)
    proc = await start_serve(config_path, {"EDX_HOOKS_LMS_CLIENT_SECRET": lms.client_secret})
    try:
        started = await read_until(proc.stderr, "event=service.started")
        assert f"port={port}" in started and "storefronts=shopify" in started
        assert "edx-hooks.db" in started
        harness.url = f"http://127.0.0.1:{port}"
        response = await harness.shopify(shopify_order(line_item(email="ada@example.org")))
        assert response.code == 200
        await until(lambda: lms.calls, timeout=5)
        assert lms.learners()[0].email == "ada@example.org"
        await until(lambda: harness.items()[0]["state"] == "enrolled")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    rest = (await asyncio.wait_for(proc.stderr.read(), 20)).decode()
    assert await proc.wait() == 0
    assert "event=service.stopped" in rest
    assert lms.client_secret not in started + rest


@pytest.mark.gen_test
async def test_sigint_stops_it_too_and_pending_work_survives(harness, lms):
    port = free_port()
    sections = base_sections(harness.tmp_path, lms.url)
    sections["server"] = {"port": port}
    sections["retry"] = {"delay_seconds": 3600}
    config_path = write_config(harness.tmp_path / "serve.toml", sections)
    await lms.stop()  # LMS down: the item stays pending, its retry an hour away
    proc = await start_serve(config_path)
    await read_until(proc.stderr, "event=service.started")
    harness.url = f"http://127.0.0.1:{port}"
    assert (await harness.shopify(shopify_order(line_item()))).code == 200
    await until(lambda: harness.items()[0]["attempts"] == 1)
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    [job] = harness.jobs()
    assert job == "retry-1"  # its next attempt, an hour away, is kept


@pytest.mark.parametrize("sections, env, expected", [
    ({"lms": {"base_url": "ftp://x", "client_id": "c", "client_secret": "s"}}, {},
     "edx-hooks: config: lms.base_url = 'ftp://x' must be an http(s) URL"),
    ({"lms": {"base_url": "http://x", "client_id": "c", "client_secret": "s"}},
     {"EDX_HOOKS_SERVER_PORT": "http"}, "edx-hooks: config: server.port = 'http'"),
    ({"lms": {"base_url": "http://x", "client_id": "c", "client_secret": "s"},
      "shopify": {"shop_domain": "a.myshopify.com"}}, {},
     "edx-hooks: config: shopify.secret is required"),
])
def test_bad_config_stops_start_up_with_one_line(tmp_path, sections, env, expected):
    import subprocess
    path = write_config(tmp_path / "bad.toml", sections)
    proc = subprocess.run([sys.executable, "-m", "edx_hooks", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, **env})
    assert proc.returncode == EXIT_CONFIG  # not restarted by the systemd unit
    assert proc.stderr.startswith(expected)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_unwritable_database_is_one_line(tmp_path):
    import subprocess
    path = write_config(tmp_path / "c.toml", {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db"},
        "lms": {"base_url": "http://x", "client_id": "c", "client_secret": "s"},
        "server": {"port": free_port()}})
    proc = subprocess.run([sys.executable, "-m", "edx_hooks", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "edx-hooks: cannot open the database" in proc.stderr


@pytest.mark.gen_test(timeout=120)
async def test_a_second_serve_on_the_same_database_refuses_and_the_commands_still_work(
        harness, lms, serve):
    from edx_hooks.cli import EXIT_LOCKED

    first = serve()
    await first.start()
    lms.erroring.add("bob@example.org")  # the LMS fails bob alone, inside its 200
    order = shopify_order(line_item(email="ada@example.org"), line_item(email="bob@example.org"))
    assert (await harness.shopify(order)).code == 200
    await until(lambda: sorted(i["state"] for i in harness.items()) == ["enrolled", "failed"])

    # the same config: the same database (and port, which it never reaches)
    second = await start_serve(first.config)
    _, err = await asyncio.wait_for(second.communicate(), 30)
    err = err.decode()
    assert second.returncode == EXIT_LOCKED
    assert err == (f"edx-hooks: process {first.proc.pid} already serves database "
                   f"{harness.db_path} (it holds {harness.db_path}.lock): stop it first, or "
                   "give this one another database.url\n")
    assert first.proc.returncode is None and not first.lines("service.stopping")

    # the commands beside the running service
    harness.config_path = first.config
    code, out, _ = await harness.cli("orders")
    assert code == 0 and str(order["id"]) in out
    code, out, _ = await harness.cli("order", "shopify", str(order["id"]))
    assert code == 0 and "ada@example.org" in out
    [failed] = [i for i in harness.items() if i["state"] == "failed"]
    lms.erroring.clear()
    code, out, _ = await harness.cli("retry", "--item", str(failed["id"]), "--wait", "20")
    assert code == 0 and f"item {failed['id']} (shopify order {order['id']}): enrolled" in out
    code, out, _ = await harness.cli("replay", "1")
    assert code == 0 and "delivery 1 replayed as delivery 2: 200 accepted" in out
    code, out, _ = await harness.cli("prune", "--older-than", "0")
    assert code == 0 and "removed body and headers of 2 finished deliveries" in out

    # killed, it leaves no lock behind: the next start takes it
    await first.kill()
    again = serve()
    await again.start()
    assert await again.stop() == 0


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_during_start_up_stops_it_cleanly(harness, lms, serve):
    """Start-up held in the schema upgrade (another connection holds the
    write lock) when SIGTERM comes: it stops, exit 0, never serving."""
    import sqlite3

    from .test_upgrade import load_fixture

    load_fixture(harness.db_path)
    with sqlite3.connect(harness.db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    blocker = sqlite3.connect(harness.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    proc = await start_serve(serve().config)
    try:
        try:
            seen = await read_until(proc.stderr, "event=service.starting")
            proc.send_signal(signal.SIGTERM)
            seen += await read_until(proc.stderr, "event=service.stopping")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        seen += (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "event=service.stopping during=start-up" in seen
    assert "event=service.stopped" in seen
    assert "event=service.started" not in seen and "Traceback" not in seen
