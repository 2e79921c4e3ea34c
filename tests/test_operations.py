"""Running it for real: health, logs for monitoring, the systemd unit, and a
real nginx in front with the project's include file."""

from __future__ import annotations

import asyncio
import configparser
import json
import shlex
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest

from edx_hooks.cli import parser

from .conftest import (
    SHOPIFY_SECRET,
    WOO_SECRET,
    free_port,
    line_item,
    shopify_order,
    shopify_signature,
    until,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.gen_test
async def test_healthz_reports_counts_without_personal_data(harness, lms):
    await harness.start()
    await harness.shopify(shopify_order(line_item(email="ada@example.org"), line_item(email=None)))
    await until(lambda: all(i["state"] != "pending" for i in harness.items()))
    response = await harness.request("/healthz", method="GET")
    assert response.code == 200
    body = json.loads(response.body)
    assert body == {"status": "ok", "pending": 0, "failed": 1, "unknown": 0,
                    "oldest_pending_seconds": 0.0, "awaiting_account": 0,
                    "rejected_last_hour": 0}
    assert b"ada@example.org" not in response.body
    assert harness.deliveries()[-1]["endpoint"] != "GET /healthz"  # not a delivery


@pytest.mark.gen_test
async def test_healthz_is_503_when_the_database_cannot_be_written(harness):
    await harness.start()
    blocker = sqlite3.connect(harness.db_path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")  # someone else holds the write lock
    try:
        response = await harness.request("/healthz", method="GET")
        assert response.code == 503
        assert json.loads(response.body)["status"] == "database-unwritable"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    response = await harness.request("/healthz", method="GET")
    assert response.code == 200


@pytest.mark.gen_test
async def test_pending_age_is_reported(harness, lms):
    from .standin_lms import Forced
    lms.forced.append(Forced(status=200, hang=30, body="{}"))
    await harness.start()
    await harness.shopify(shopify_order(line_item()))
    await until(lambda: lms.calls)
    with sqlite3.connect(harness.db_path) as conn:  # it became pending 90 s ago
        conn.execute("UPDATE items SET pending_since = datetime('now', '-90 seconds')")
    body = json.loads((await harness.request("/healthz", method="GET")).body)
    assert body["pending"] == 1 and 90 <= body["oldest_pending_seconds"] < 3600


@pytest.mark.gen_test
async def test_json_logs_name_every_event_and_hide_secrets_and_emails(harness, lms, serve):
    service = serve(logging={"format": "json"})
    await service.start()
    order = shopify_order(line_item(email="ada@example.org"), line_item(email=None))
    assert (await harness.shopify(order)).code == 200
    assert (await harness.shopify(shopify_order(line_item()), secret="forged")).code == 403
    await until(lambda: all(i["state"] != "pending" for i in harness.items()))
    await service.stop()
    lines = [json.loads(line) for line in service.log]
    events = {line["event"]: line for line in lines if "event" in line}
    assert {"service.started", "delivery.accepted", "delivery.rejected", "item.enrolled",
            "item.failed", "service.stopped"} <= set(events)
    accepted = events["delivery.accepted"]
    assert accepted["provider"] == "shopify" and accepted["order"] == str(order["id"])
    assert accepted["level"] == "info" and accepted["time"].endswith("Z")
    assert events["delivery.rejected"]["reason"] == "bad-signature"
    assert events["item.enrolled"]["course"].startswith("course-v1:")
    text = "".join(service.log)
    for secret in (SHOPIFY_SECRET, WOO_SECRET, "lms-client-secret", "jwt-1"):
        assert secret not in text
    assert "ada@example.org" not in text  # learner emails only at debug


@pytest.mark.gen_test
async def test_debug_level_shows_learner_emails_and_still_no_secret(harness, lms, serve):
    service = serve(logging={"level": "debug"})
    await service.start()
    assert (await harness.shopify(shopify_order(line_item(email="ada@example.org")))).code == 200
    await until(lambda: harness.items()[0]["state"] == "enrolled")
    await service.stop()
    text = "".join(service.log)
    assert "event=item.attempt" in text and "email=ada@example.org" in text
    for secret in (SHOPIFY_SECRET, "lms-client-secret", "jwt-1"):
        assert secret not in text


@pytest.mark.gen_test
async def test_syslog_gets_local0_lines(harness, lms, serve):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    port = receiver.getsockname()[1]
    service = serve(logging={"syslog": True, "syslog_address": f"127.0.0.1:{port}"})
    loop = asyncio.get_running_loop()
    proc_start = asyncio.ensure_future(service.start())
    datagrams = []
    while not any("event=service.started" in d for d in datagrams):
        datagrams.append((await asyncio.wait_for(loop.sock_recv(receiver, 4096), 20)).decode())
    receiver.close()
    # local0 (16) * 8 + info (6) = 134; warnings (4) are 132
    assert datagrams[-1].startswith("<134>edx-hooks[")
    assert all(d.startswith(("<134>", "<132>")) for d in datagrams)
    proc_start.cancel()
    await service.kill()


def _exec_start() -> list[str]:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "systemd" / "edx-hooks.service")
    return shlex.split(unit["Service"]["ExecStart"])


def test_systemd_exec_start_is_a_command_the_cli_accepts():
    argv = _exec_start()
    assert argv[0].endswith("/edx-hooks")
    args = parser().parse_args(argv[1:])
    assert args.command == "serve" and args.config == "/etc/edx-hooks/edx-hooks.toml"


def test_systemd_unit_is_hardened():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "systemd" / "edx-hooks.service")
    service = unit["Service"]
    assert service["User"] == "edx-hooks" and service["StateDirectory"] == "edx-hooks"
    for key, value in [("NoNewPrivileges", "true"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "true"), ("PrivateTmp", "true"),
                       ("Restart", "on-failure"), ("Type", "simple")]:
        assert service[key] == value, key
    assert service["ReadWritePaths"] == "/var/lib/edx-hooks"
    assert "EnvironmentFile" in service


def test_systemd_restarts_only_what_a_restart_can_fix():
    """Config, schema and second-process errors are not restarted; a crash
    loop stops; stopping leaves the drain its time."""
    from edx_hooks import app, cli, config

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "systemd" / "edx-hooks.service")
    assert {int(c) for c in unit["Service"]["RestartPreventExitStatus"].split()} == {
        cli.EXIT_CONFIG, cli.EXIT_SCHEMA, cli.EXIT_LOCKED}
    assert cli.EXIT_FAILURE not in {cli.EXIT_CONFIG, cli.EXIT_SCHEMA, cli.EXIT_LOCKED}
    assert int(unit["Unit"]["StartLimitBurst"]) >= 1
    burst_window = int(unit["Service"]["RestartSec"]) * int(unit["Unit"]["StartLimitBurst"])
    assert int(unit["Unit"]["StartLimitIntervalSec"]) > burst_window  # the limit can be hit
    drain = (config.LMS.__dataclass_fields__["timeout_seconds"].default
             + app.DRAIN_MARGIN_SECONDS)
    assert int(unit["Service"]["TimeoutStopSec"]) >= 2 * drain
    text = (ROOT / "systemd" / "edx-hooks.service").read_text()
    for code in (cli.EXIT_CONFIG, cli.EXIT_SCHEMA, cli.EXIT_LOCKED):
        assert f"#   {code}  " in text  # each code explained beside the directive
    readme = (ROOT / "README.md").read_text()
    for code in (0, cli.EXIT_FAILURE, cli.EXIT_CONFIG, cli.EXIT_SCHEMA, cli.EXIT_LOCKED):
        assert f"\n| {code} | " in readme


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify(tmp_path):
    # verify needs the ExecStart binary to exist: point it at a stand-in
    unit = (ROOT / "systemd" / "edx-hooks.service").read_text()
    binary = tmp_path / "edx-hooks"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    copy = tmp_path / "edx-hooks.service"
    copy.write_text(unit.replace("/opt/edx-hooks/bin/edx-hooks", str(binary)))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    problems = [line for line in proc.stderr.splitlines()
                if "edx-hooks.service" in line and "Unknown user" not in line
                and "does not exist" not in line]
    assert proc.returncode == 0 or not problems, proc.stderr


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                   else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)")
@pytest.mark.gen_test
async def test_through_a_real_nginx_the_client_address_is_the_original_one(
        harness, lms, tmp_path):
    service = await harness.start(server={"xheaders": True})
    include = (ROOT / "conf" / "nginx" / "edx-hooks.conf").read_text()
    assert "proxy_pass http://127.0.0.1:8090;" in include
    (tmp_path / "edx-hooks.conf").write_text(
        include.replace("127.0.0.1:8090", f"127.0.0.1:{service.port}"))
    nginx_port = free_port()
    (tmp_path / "nginx.conf").write_text(f"""
        worker_processes 1;
        daemon off;
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/error.log;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {tmp_path}/body;
            proxy_temp_path {tmp_path}/proxy;
            fastcgi_temp_path {tmp_path}/fastcgi;
            uwsgi_temp_path {tmp_path}/uwsgi;
            scgi_temp_path {tmp_path}/scgi;
            server {{
                listen 127.0.0.1:{nginx_port};
                server_name lms.example.test;
                location / {{ return 404; }}
                include {tmp_path}/edx-hooks.conf;
            }}
        }}""")
    nginx = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
        stderr=asyncio.subprocess.PIPE)
    try:
        await wait_for_port(nginx_port)
        def post(body: bytes):
            # the shop connects from 127.0.0.2; nginx reaches edx-hooks from 127.0.0.1
            return harness.http.fetch(HTTPRequest(
                f"http://127.0.0.1:{nginx_port}/webhooks/shopify/order/create", method="POST",
                body=body, network_interface="127.0.0.2",
                headers={"Content-Type": "application/json", "Host": "lms.example.test",
                         "X-Shopify-Shop-Domain": "school.myshopify.com",
                         "X-Shopify-Hmac-Sha256": shopify_signature(body, SHOPIFY_SECRET)}),
                raise_error=False)

        response = await post(json.dumps(shopify_order(line_item(email="ada@example.org")))
                              .encode())
        assert response.code == 200, (response.code, response.body)
        [delivery] = harness.deliveries()
        assert delivery["client_ip"] == "127.0.0.2"
        headers = json.loads(delivery["headers"])
        assert headers["X-Forwarded-Proto"] == "http"
        assert headers["X-Forwarded-For"] == "127.0.0.2"
        await until(lambda: harness.items()[0]["state"] == "enrolled")
        # over edx-hooks' 2 MiB, under nginx's 3m: edx-hooks' 413 reaches the
        # shop (not a 502 from nginx finding the connection reset), each time
        big = b'{"id": 1, "pad": "' + b"x" * (2 * 1024 * 1024 + 10) + b'"}'
        for _ in range(5):
            response = await post(big)
            assert response.code == 413, response.code
        assert [(d["status"], d["reason"], d["body_size"]) for d in harness.deliveries()[1:]] \
            == [(413, "body-too-large", len(big))] * 5
        # the health check is not exposed through nginx
        response = await harness.http.fetch(HTTPRequest(
            f"http://127.0.0.1:{nginx_port}/healthz", headers={"Host": "lms.example.test"}),
            raise_error=False)
        assert response.code == 404 and b"pending" not in response.body
    finally:
        nginx.terminate()
        await nginx.wait()
