"""The first hour of an admin: the shipped example config, copied and filled
in as the README says, switches on no shop left as shipped, and its public
placeholder secrets are refused by `serve` and `check-config`."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import signal
import subprocess
import sys

import pytest

from .conftest import (
    SHOP,
    SHOPIFY_SECRET,
    WOO_SOURCE,
    free_port,
    line_item,
    shopify_order,
    until,
    woo_line,
    woo_order,
)
from .test_serve import read_until, start_serve

EXAMPLE = pathlib.Path(__file__).parent.parent / "conf" / "edx-hooks.example.toml"
WOO_PLACEHOLDER = "set-me-in-EDX_HOOKS_WOOCOMMERCE_SECRET"


def from_example(tmp_path: pathlib.Path, lms_url: str, port: int,
                 switch_on: tuple[str, ...] = ("shopify",)) -> pathlib.Path:
    """The example config, copied; the LMS filled in; the shops in
    ``switch_on`` switched on as its comment says (the "# " removed in front of
    each line of the shop's block), their keys as shipped."""
    text = EXAMPLE.read_text()
    text = text.replace('base_url = "https://lms.example.org"', f'base_url = "{lms_url}"', 1)
    text = text.replace('url = "sqlite+aiosqlite:///edx-hooks.db"',
                        f'url = "sqlite+aiosqlite:///{tmp_path}/edx-hooks.db"', 1)
    text = text.replace("port = 8090", f"port = {port}", 1)
    for name in switch_on:
        text = re.sub(rf"^# \[{name}\]\n(#.*\n)*",
                      lambda m: re.sub(r"^# ?", "", m.group(0), flags=re.M), text, flags=re.M)
    path = tmp_path / "edx-hooks.toml"
    path.write_text(text)
    return path


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edx_hooks", *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.fixture
def admin_env(monkeypatch, lms):
    """The admin's shell: the LMS and Shopify secrets set as the README says."""
    env = {"EDX_HOOKS_LMS_CLIENT_SECRET": lms.client_secret,
           "EDX_HOOKS_SHOPIFY_SHOP_DOMAIN": SHOP, "EDX_HOOKS_SHOPIFY_SECRET": SHOPIFY_SECRET}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import os
    return dict(os.environ)


@pytest.mark.gen_test
async def test_the_shipped_woocommerce_placeholder_enrolls_no_one(harness, lms, admin_env):
    port = free_port()
    path = from_example(harness.tmp_path, lms.url, port)
    check = run("check-config", "--config", str(path), env=admin_env)
    assert check.returncode == 0, check.stderr
    assert "storefronts: shopify\n" in check.stdout  # woocommerce is not switched on

    proc = await start_serve(path)
    try:
        await read_until(proc.stderr, "event=service.started")
        harness.url = f"http://127.0.0.1:{port}"
        # anyone who reads the repository can sign with the placeholder
        forged = await harness.woocommerce(woo_order(woo_line(email="free@example.org")),
                                           secret=WOO_PLACEHOLDER, source=WOO_SOURCE)
        assert forged.code == 404
        assert (await harness.shopify(shopify_order(line_item(email="ada@example.org")))
                ).code == 200
        await until(lambda: lms.learners(), timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    assert [learner.email for learner in lms.learners()] == ["ada@example.org"]


def test_a_shop_switched_on_with_its_placeholder_is_refused(tmp_path, admin_env):
    path = from_example(tmp_path, "http://127.0.0.1:9", free_port(),
                        switch_on=("shopify", "woocommerce"))
    expected = ("edx-hooks: config: woocommerce.secret is a placeholder, public in the example "
                "config, so anyone could sign with it: set secret in [woocommerce] or "
                "EDX_HOOKS_WOOCOMMERCE_SECRET, or remove [woocommerce] to switch woocommerce "
                "off\n")
    for command in ("check-config", "serve"):
        proc = run(command, "--config", str(path), env=admin_env)
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", expected), command
    assert not (tmp_path / "edx-hooks.db").exists()  # serve stopped before anything

    # a forgotten EDX_HOOKS_SHOPIFY_SECRET (EnvironmentFile=- skips a missing file)
    env = {k: v for k, v in admin_env.items() if k != "EDX_HOOKS_SHOPIFY_SECRET"}
    env["EDX_HOOKS_WOOCOMMERCE_SECRET"] = "a-real-woocommerce-secret"
    proc = run("serve", "--config", str(path), env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("edx-hooks: config: shopify.secret is a placeholder")


def test_a_weak_secret_is_warned_about_not_refused(tmp_path, admin_env):
    path = from_example(tmp_path, "http://127.0.0.1:9", free_port())
    proc = run("check-config", "--config", str(path),
               env={**admin_env, "EDX_HOOKS_SHOPIFY_SECRET": "shortsecret"})
    assert proc.returncode == 0, proc.stderr
    assert ("warning: shopify.secret (from EDX_HOOKS_SHOPIFY_SECRET) is shorter than 16 "
            "characters, easy to guess") in proc.stdout
    assert "shortsecret" not in proc.stdout + proc.stderr


@pytest.mark.gen_test(timeout=90)
async def test_demo_enrolls_a_sample_order_and_its_curl_line_sends_another():
    """`edx-hooks demo`, as the README's first command: no config, nothing
    but loopback, an enrolled order shown, and a curl line that works."""
    import os
    import shlex
    import shutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("EDX_HOOKS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edx_hooks", "demo", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out = await read_until(proc.stdout, "Next: ", timeout=60)
        assert "answered 200" in out
        assert "ada@example.org in course-v1:Demo+PY101+2026" in out
        # what `orders` and `order` show: the order enrolled, its line item too
        assert re.search(r"^shopify +demo-school.myshopify.com +1001 +#1001 +1/1 +enrolled",
                         out, re.M)
        assert re.search(r"^1 +10011 +course-v1:Demo\+PY101\+2026 .* ada@example.org "
                         r"+enrolled +1 ", out, re.M)
        [curl] = [line for line in out.splitlines() if line.startswith("curl ")]
        urls = re.findall(r"http://([\d.]+):\d+", out)
        assert urls and set(urls) == {"127.0.0.1"}  # the service and the practice LMS
        assert "secret" not in curl.lower()
        if shutil.which("curl"):
            sent = await asyncio.create_subprocess_exec(*shlex.split(curl),
                                                        stdout=asyncio.subprocess.PIPE)
            answer, _ = await sent.communicate()
            assert json.loads(answer)["reason"] == "accepted"
            log = await read_until(proc.stderr, "event=item.enrolled", timeout=30)
            assert "order=1002" in log
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    directory = re.search(r"@(\S+)/order-1002.json", curl).group(1)
    assert not os.path.exists(directory)  # it leaves nothing behind
