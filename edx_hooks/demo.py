"""``edx-hooks demo``: the whole path, order to enrollment, on this machine
alone.

It runs the real service, unchanged, on loopback, with a throw-away database
and a Shopify shop whose signing secret is made afresh for this run (never
shown), against the practice LMS (:mod:`edx_hooks.practice_lms`, the one
part that is pretend). It sends one signed sample order as Shopify would,
waits for its enrollment, prints what ``orders`` and ``order`` show, and a
curl line that sends another; it then serves until Ctrl-C and removes
everything it made.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.netutil import bind_sockets

from . import config as config_mod
from . import logs
from .app import Service
from .errors import Failure
from .practice_lms import LOOPBACK, PracticeLMS
from .store import ACTIVE, Store
from .storefronts import STOREFRONTS

#: prints what the operator's commands (``orders``, ``order shopify 1001``)
#: show; the CLI hands its own, so that the demo shows the same code
Show = Callable[[Store, config_mod.Config], Awaitable[None]]

SHOP = "demo-school.myshopify.com"
COURSE = "course-v1:Demo+PY101+2026"


def sample_order(number: int, learner: str) -> bytes:
    """A Shopify orders/create body: one course, its learner's email as a
    line item property (how the README asks shops to collect it)."""
    return json.dumps({
        "id": number, "name": f"#{number}", "order_number": number,
        "email": "buyer@example.org", "financial_status": "paid", "test": False,
        "line_items": [{"id": number * 10 + 1, "title": "Python 101", "quantity": 1,
                        "sku": COURSE, "properties": [{"name": "email", "value": learner}]}],
    }, indent=1).encode()


def signature(body: bytes, secret: str) -> str:
    """How Shopify signs: base64 of the HMAC-SHA256 of the body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def demo_config(lms: PracticeLMS, directory: Path, port: int, shop_secret: str
                ) -> config_mod.Config:
    """The configuration, read by the real loader from variables that exist
    only in this process."""
    environ = {
        "EDX_HOOKS_SERVER_ADDRESS": LOOPBACK, "EDX_HOOKS_SERVER_PORT": str(port),
        "EDX_HOOKS_DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'demo.db'}",
        "EDX_HOOKS_LMS_BASE_URL": lms.url, "EDX_HOOKS_LMS_CLIENT_ID": lms.client_id,
        "EDX_HOOKS_LMS_CLIENT_SECRET": lms.client_secret,
        "EDX_HOOKS_LMS_MAX_CALLS_PER_MINUTE": "0",
        "EDX_HOOKS_LOGGING_LEVEL": "warning",
        "EDX_HOOKS_SHOPIFY_SHOP_DOMAIN": SHOP, "EDX_HOOKS_SHOPIFY_SECRET": shop_secret,
    }
    cfg = config_mod.load(None, environ, STOREFRONTS)
    config_mod.check_secrets(cfg)
    return cfg


async def run(args: argparse.Namespace, show: Show) -> int:
    """Run the demo until Ctrl-C; ``show`` prints the commands' views."""
    with tempfile.TemporaryDirectory(prefix="edx-hooks-demo-") as tmp:
        directory = Path(tmp)
        lms = await PracticeLMS().start()
        [sock] = bind_sockets(args.port, LOOPBACK)  # loopback alone, whatever is asked
        port = sock.getsockname()[1]
        shop_secret = secrets.token_urlsafe(24)
        cfg = demo_config(lms, directory, port, shop_secret)
        logs.setup(cfg.logging)
        service = Service(cfg)
        try:
            await service.start(sock)
            url = f"http://{LOOPBACK}:{port}"
            print(f"edx-hooks demo: the real service on {url}, a Shopify shop {SHOP} with a "
                  f"signing secret made for this run, and a practice LMS on {lms.url} (it "
                  "enrolls anyone; nothing leaves this machine)\n", flush=True)
            first = sample_order(1001, "ada@example.org")
            answer = await _send(url, first, shop_secret)
            print(f"1. the shop sent order #1001 (signed): answered {answer}")
            if not await _settled(service, "1001"):
                raise Failure("order 1001 was not settled within 30 s: the log above says why")
            print("2. the service enrolled its learner through the LMS:",
                  ", ".join(f"{email} in {course}" for email, course in lms.enrolled))
            await show(service.store, cfg)
            second = directory / "order-1002.json"
            second.write_bytes(sample_order(1002, "grace@example.org"))
            print("Send another order, as the shop would (the demo runs until Ctrl-C):\n")
            print(f"curl -s -X POST {url}/webhooks/shopify/order/create "
                  "-H 'Content-Type: application/json' -H 'X-Shopify-Topic: orders/create' "
                  f"-H 'X-Shopify-Shop-Domain: {SHOP}' "
                  f"-H 'X-Shopify-Hmac-Sha256: {signature(second.read_bytes(), shop_secret)}' "
                  f"--data-binary @{second}\n")
            print("Next: copy conf/edx-hooks.example.toml, fill in your LMS and shop, and "
                  "`edx-hooks check-config --online --config YOURS` (README: Setting up "
                  "Open edX).", flush=True)
            # from here on, the service's own log lines show what it does
            logs.logging.getLogger().setLevel(logs.INFO)
            await _until_stopped()
        finally:
            await service.stop()
            await lms.stop()
    return 0


async def _send(url: str, body: bytes, secret: str) -> str:
    client = AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(HTTPRequest(
            f"{url}/webhooks/shopify/order/create", method="POST", body=body, headers={
                "Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                "X-Shopify-Shop-Domain": SHOP,
                "X-Shopify-Hmac-Sha256": signature(body, secret)}), raise_error=False)
        return f"{response.code} {response.body.decode(errors='replace')}".strip()
    finally:
        client.close()


async def _settled(service: Any, order_id: str, timeout: float = 30.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await service.store.order_story("shopify", order_id)
        if found and found[0]["items"] and not any(i["state"] in ACTIVE
                                                   for i in found[0]["items"]):
            return True
        await asyncio.sleep(0.1)
    return False


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
