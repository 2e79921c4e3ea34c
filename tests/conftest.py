"""Fixtures: a stand-in LMS on a free port, the real service on another, a
temporary SQLite file, and helpers to send deliveries signed as shops sign them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.testing import bind_unused_port

from edx_hooks import config
from edx_hooks.app import Service
from edx_hooks.store import SCHEDULED, metadata

from .standin_lms import StandinLMS

SHOP = "school.myshopify.com"
SHOPIFY_SECRET = "shopify-signing-secret-7f3a"
WOO_SOURCE = "https://shop.example/"
WOO_SECRET = "wc-webhook-secret-91c2"
COURSE = "course-v1:Demo+PY101+2026"


def toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    """A TOML file; a list of tables is written as [[section]] tables."""
    lines = []
    for section, values in sections.items():
        if values is None:
            continue
        for table in values if isinstance(values, list) else [values]:
            lines.append(f"[[{section}]]" if isinstance(values, list) else f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def base_sections(tmp_path: Path, lms_url: str) -> dict[str, dict[str, Any] | None]:
    return {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'edx-hooks.db'}"},
        "lms": {"base_url": lms_url, "client_id": "edx-hooks",
                "client_secret": "lms-client-secret", "timeout_seconds": 2,
                "connect_timeout_seconds": 1,
                "sku_prefix": "sku/", "max_calls_per_minute": 0},
        "retry": {"attempts": 3, "delay_seconds": 0.2},
        "shopify": {"shop_domain": SHOP, "secret": SHOPIFY_SECRET},
        "woocommerce": {"source": WOO_SOURCE, "secret": WOO_SECRET},
    }


class Harness:
    """The real service on a real socket, plus what tests need around it."""

    def __init__(self, tmp_path: Path, lms: StandinLMS):
        self.tmp_path = tmp_path
        self.lms = lms
        self.service: Service | None = None
        self.url = ""
        self.db_path = tmp_path / "edx-hooks.db"
        self.http = AsyncHTTPClient(force_instance=True)

    async def start(self, **overrides: dict[str, Any] | None) -> Service:
        sections = base_sections(self.tmp_path, self.lms.url)
        for section, values in overrides.items():
            if values is None or isinstance(values, list):
                sections[section] = values
            else:
                sections[section] = {**(sections.get(section) or {}), **values}
        self.config_path = write_config(self.tmp_path / "edx-hooks.toml", sections)
        cfg = config.load(str(self.config_path), {})
        self.service = Service(cfg)
        sock, port = bind_unused_port()
        await self.service.start(sock)
        self.url = f"http://127.0.0.1:{port}"
        return self.service

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def request(self, path: str, method: str = "POST", body: bytes | None = None,
                      headers: dict[str, str] | None = None, **kw: Any) -> HTTPResponse:
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        return await self.http.fetch(HTTPRequest(self.url + path, method=method, body=body,
                                                 headers=headers, **kw), raise_error=False)

    async def shopify(self, order: dict | bytes, *, secret: str = SHOPIFY_SECRET,
                      shop: str = SHOP, headers: dict[str, str] | None = None,
                      path: str = "/webhooks/shopify/order/create") -> HTTPResponse:
        body = order if isinstance(order, bytes) else json.dumps(order).encode()
        sent = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                "X-Shopify-Shop-Domain": shop, "X-Shopify-API-Version": "2026-10",
                "X-Shopify-Hmac-Sha256": shopify_signature(body, secret),
                "X-Shopify-Webhook-Id": f"wh-{time.monotonic_ns()}"}
        sent.update(headers or {})
        return await self.request(path, body=body, headers={k: v for k, v in sent.items()
                                                             if v is not None})

    async def raw(self, request: bytes, timeout: float = 5.0) -> bytes:
        """Send bytes as they are (no header added) and read until the server closes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", int(self.url.rsplit(":")[-1]))
        try:
            writer.write(request)
            return await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()

    async def woocommerce(self, order: dict | bytes, *, secret: str = WOO_SECRET,
                          source: str | None = WOO_SOURCE, topic: str = "order.created",
                          headers: dict[str, str | None] | None = None,
                          path: str = "/webhooks/woocommerce/order/create") -> HTTPResponse:
        """A delivery signed as WooCommerce signs it."""
        body = order if isinstance(order, bytes) else json.dumps(order).encode()
        resource, _, event = topic.partition(".")
        sent = {"Content-Type": "application/json", "User-Agent": WOO_AGENT,
                "X-WC-Webhook-Source": source, "X-WC-Webhook-Topic": topic,
                "X-WC-Webhook-Resource": resource, "X-WC-Webhook-Event": event,
                "X-WC-Webhook-Signature": shopify_signature(body, secret),
                "X-WC-Webhook-ID": "12", "X-WC-Webhook-Delivery-ID": str(time.monotonic_ns())}
        sent.update(headers or {})
        return await self.request(path, body=body, headers={k: v for k, v in sent.items()
                                                             if v is not None})

    async def cli(self, *args: str, config: bool = True) -> tuple[int, str, str]:
        """Run ``edx-hooks ARGS --config <this config>`` as an operator would,
        without blocking the service running in this process."""
        extra = ["--config", str(self.config_path)] if config else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edx_hooks", *args, *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    def db(self, query: str, *args: Any) -> list[tuple]:
        """Read the service's SQLite file directly, as an operator would."""
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(query, args).fetchall()

    def jobs(self) -> list[str]:
        """The ids of the jobs in the SQLAlchemy job store."""
        with sqlite3.connect(str(self.db_path) + ".jobs.db") as conn:
            return [r[0] for r in conn.execute("SELECT id FROM apscheduler_jobs ORDER BY id")]

    async def quiet(self, timeout: float = 10.0) -> None:
        """Wait until nothing more will happen by itself: no line item with
        work left (whenever its next attempt is due), no enrollment job
        running, the stand-in LMS answering nothing. Every LMS call is made
        for an item with work left, so from then on none comes without a new
        delivery: a test can assert that something did *not* happen without
        betting on a sleep being long enough."""
        await until(self._idle, timeout)

    def _idle(self) -> bool:
        if self.lms.in_flight or active_items(self.db_path):
            return False
        runtime = self.service.runtime if self.service is not None else None
        return runtime is None or not (runtime.running or runtime.calling)

    def items(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db_path) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM items ORDER BY id")]

    def deliveries(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db_path) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM deliveries ORDER BY id")]


WOO_AGENT = "WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)"


def active_items(db_path: Path) -> int:
    """Line items with LMS work left, now or at a later attempt (an account
    check included)."""
    if not db_path.exists():
        return 0
    with sqlite3.connect(db_path) as conn:
        return conn.execute(
            f"SELECT count(*) FROM items WHERE state IN ({','.join('?' * len(SCHEDULED))})",
            SCHEDULED).fetchone()[0]


class ServeProcess:
    """``edx-hooks serve`` as a real subprocess, on the harness's database and
    stand-in LMS; started, killed and restarted by the test."""

    def __init__(self, harness: Harness, **overrides: dict[str, Any] | None):
        sections = base_sections(harness.tmp_path, harness.lms.url)
        for section, values in overrides.items():
            if values is None or isinstance(values, list):
                sections[section] = values
            else:
                sections[section] = {**(sections.get(section) or {}), **values}
        sock, self.port = bind_unused_port()
        sock.close()
        sections["server"] = {**(sections.get("server") or {}), "port": self.port}
        self.config = write_config(harness.tmp_path / "serve.toml", sections)
        self.harness = harness
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._reader: asyncio.Task | None = None

    async def start(self, timeout: float = 20) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edx_hooks", "serve", "--config", str(self.config),
            stderr=asyncio.subprocess.PIPE)
        started = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read(self.proc, started))
        await asyncio.wait_for(started, timeout)
        self.harness.url = f"http://127.0.0.1:{self.port}"

    async def _read(self, proc: asyncio.subprocess.Process, started: asyncio.Future) -> None:
        # Drain stderr continuously: a full pipe would block the service.
        while line := await proc.stderr.readline():
            self.log.append(line.decode(errors="replace"))
            if "service.started" in self.log[-1] and not started.done():
                started.set_result(None)
        if not started.done():
            started.set_exception(AssertionError("serve ended:\n" + "".join(self.log)))

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        self.proc.kill()
        await self.proc.wait()
        await self._reader

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code

    def lines(self, event: str) -> list[str]:
        return [line for line in self.log if f"event={event}" in line]

    async def quiet(self, timeout: float = 15.0) -> None:
        """As :meth:`Harness.quiet`, seen from outside the process: no line
        item with work left, the stand-in LMS answering nothing."""
        await until(lambda: not self.harness.lms.in_flight
                    and not active_items(self.harness.db_path), timeout)


@pytest.fixture
def serve(io_loop, harness):
    """Make ``ServeProcess(harness, **overrides)``; any still running is killed."""
    made: list[ServeProcess] = []

    def make(**overrides: dict[str, Any] | None) -> ServeProcess:
        made.append(ServeProcess(harness, **overrides))
        return made[-1]

    yield make
    for process in made:
        if process.proc is not None and process.proc.returncode is None:
            io_loop.run_sync(process.kill)


def shopify_signature(body: bytes, secret: str) -> str:
    """base64 HMAC-SHA256 of the body: how Shopify and WooCommerce both sign."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


_order_ids = iter(range(5_000_000_001, 6_000_000_000))


def shopify_order(*lines: dict[str, Any], order_id: int | None = None) -> dict[str, Any]:
    """An orders/create payload shaped like Shopify's (the fields we read and
    a realistic share of the ones we do not)."""
    order_id = order_id or next(_order_ids)
    number = order_id % 100000
    return {
        "id": order_id, "name": f"#{number}", "order_number": number,
        "email": "buyer@example.org", "contact_email": "buyer@example.org",
        "created_at": "2026-11-28T10:00:00-05:00", "currency": "USD",
        "financial_status": "paid", "fulfillment_status": None, "test": False,
        "total_price": "49.00", "subtotal_price": "49.00", "total_tax": "0.00",
        "customer": {"id": 7001, "email": "buyer@example.org", "first_name": "Ada",
                     "last_name": "Lovelace"},
        "billing_address": {"first_name": "Ada", "last_name": "Lovelace",
                            "address1": "12 Analytical Row", "city": "London",
                            "country": "United Kingdom", "zip": "N1 9GU"},
        "line_items": list(lines),
    }


_line_ids = iter(range(9_000_000_001, 10_000_000_000))


#: where Shopify delivers refunds/create: ``harness.shopify(body, **SHOPIFY_REFUND)``
SHOPIFY_REFUND: dict[str, Any] = {"path": "/webhooks/shopify/refund/create",
                                  "headers": {"X-Shopify-Topic": "refunds/create"}}


def shopify_refund(order: dict[str, Any], *lines: dict[str, Any], refund_id: int = 9,
                   embed: bool = False) -> dict[str, Any]:
    """A refunds/create body: each of ``lines`` refunded whole (``embed``: with
    the line item itself inside, as Shopify sends it)."""
    refunded = []
    for n, line in enumerate(lines, 1):
        refunded.append({"id": n, "line_item_id": line["id"], "quantity": 1})
        if embed:
            refunded[-1]["line_item"] = line
    return {"id": refund_id, "order_id": order["id"], "refund_line_items": refunded}


def line_item(sku: Any = COURSE, email: Any = "learner@example.org",
              **extra: Any) -> dict[str, Any]:
    props = [] if email is None else [{"name": "email", "value": email}]
    item = {"id": next(_line_ids), "product_id": 632910392, "variant_id": 808950810,
            "title": "Python 101", "quantity": 1, "price": "49.00", "sku": sku,
            "requires_shipping": False, "taxable": True, "gift_card": False,
            "properties": [{"name": "First name", "value": "Ada"}] + props}
    item.update(extra)
    return item


_woo_ids = iter(range(1001, 100000))


def woo_line(sku: Any = COURSE, email: Any = "learner@example.org", *,
             meta: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    """A WooCommerce line item whose learner email sits in a Product Input
    Fields field in second place, among other plugins' meta_data."""
    fields = [{"type": "text", "title": "Learner name", "_value": "Ada Lovelace",
               "required": "yes"}]
    if email is not None:
        fields.append({"type": "email", "title": "Learner email", "_value": email,
                       "required": "yes"})
    fields.append({"type": "checkbox", "title": "Newsletter", "_value": "no"})
    meta_data = meta if meta is not None else [
        {"id": 901, "key": "_reduced_stock", "value": "1", "display_key": "_reduced_stock",
         "display_value": "1"},
        {"id": 902, "key": "gift_wrap", "value": {"enabled": False, "note": ""},
         "display_key": "Gift wrap", "display_value": {"enabled": False, "note": ""}},
        {"id": 903, "key": "_tags", "value": ["course", "online"], "display_key": "_tags",
         "display_value": ["course", "online"]},
        {"id": 904, "key": "seats", "value": 1, "display_key": "Seats", "display_value": 1},
        {"id": 905, "key": "_alg_wc_pif_local", "value": fields,
         "display_key": "_alg_wc_pif_local", "display_value": fields},
    ]
    item = {"id": next(_line_ids), "name": "Python 101", "product_id": 93, "variation_id": 0,
            "quantity": 1, "tax_class": "", "subtotal": "49.00", "subtotal_tax": "0.00",
            "total": "49.00", "total_tax": "0.00", "taxes": [], "meta_data": meta_data,
            "sku": sku, "price": 49, "image": {"id": "94", "src": "https://shop.example/py.jpg"},
            "parent_name": None}
    item.update(extra)
    return item


def woo_order(*lines: dict[str, Any], order_id: int | None = None, paid: bool = True,
              status: str | None = None) -> dict[str, Any]:
    """An order payload shaped like WooCommerce's REST v3 order (about 6 KB)."""
    order_id = order_id or next(_woo_ids)
    address = {"first_name": "Ada", "last_name": "Lovelace", "company": "",
               "address_1": "12 Analytical Row", "address_2": "", "city": "London",
               "state": "", "postcode": "N1 9GU", "country": "GB"}
    return {
        "id": order_id, "parent_id": 0, "number": str(order_id), "order_key": "wc_order_x1y2",
        "created_via": "checkout", "version": "9.4.2",
        "status": status or ("processing" if paid else "pending"), "currency": "EUR",
        "date_created": "2026-11-28T10:00:00", "date_created_gmt": "2026-11-28T09:00:00",
        "date_modified": "2026-11-28T10:00:05", "date_modified_gmt": "2026-11-28T09:00:05",
        "discount_total": "0.00", "discount_tax": "0.00", "shipping_total": "0.00",
        "shipping_tax": "0.00", "cart_tax": "0.00", "total": "49.00", "total_tax": "0.00",
        "prices_include_tax": False, "customer_id": 7, "customer_ip_address": "198.51.100.7",
        "customer_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        "customer_note": "", "billing": {**address, "email": "buyer@example.org",
                                         "phone": "+44 20 7946 0000"},
        "shipping": address, "payment_method": "stripe", "payment_method_title": "Card",
        "transaction_id": "pi_3Q" if paid else "",
        "date_paid": "2026-11-28T10:00:04" if paid else None,
        "date_paid_gmt": "2026-11-28T09:00:04" if paid else None,
        "date_completed": None, "date_completed_gmt": None, "cart_hash": "9f8e7d6c5b4a",
        "meta_data": [{"id": 801, "key": "_stripe_customer_id", "value": "cus_R2x"},
                      {"id": 802, "key": "is_vat_exempt", "value": "no"},
                      {"id": 803, "key": "_wc_order_attribution_source_type",
                       "value": "typein"}],
        "line_items": list(lines), "tax_lines": [], "shipping_lines": [], "fee_lines": [],
        "coupon_lines": [], "refunds": [], "payment_url": "https://shop.example/checkout/",
        "is_editable": False, "needs_payment": not paid, "needs_processing": True,
        "currency_symbol": "€",
        "_links": {"self": [{"href": f"https://shop.example/wp-json/wc/v3/orders/{order_id}"}],
                   "collection": [{"href": "https://shop.example/wp-json/wc/v3/orders"}],
                   "customer": [{"href": "https://shop.example/wp-json/wc/v3/customers/7"}]},
    }


def free_port() -> int:
    """A loopback port nothing listens on (for a server the test starts)."""
    sock, port = bind_unused_port()
    sock.close()
    return port


async def wait_for_port(port: int, timeout: float = 20,
                        process: asyncio.subprocess.Process | None = None,
                        log: Path | None = None) -> bool:
    """Wait until a server the test started listens on ``port``. With its
    ``process``: False at once if it exited because the port was taken (the
    caller starts it again on another), a failure with its ``log`` if it
    exited otherwise."""
    async def up() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
        except OSError:
            return False
    deadline = time.monotonic() + timeout
    while not await up():
        if process is not None and process.returncode is not None:
            output = log.read_text(errors="replace") if log else ""
            assert "address already in use" in output, output
            return False
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        await asyncio.sleep(0.05)
    return True


async def until(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Wait until ``check()`` is truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def harness(io_loop, tmp_path):
    """A stand-in LMS started; the service is started by the test with
    ``await harness.start(**overrides)`` so each test chooses its config."""
    lms = StandinLMS()
    io_loop.run_sync(lms.start)
    h = Harness(tmp_path, lms)
    yield h
    io_loop.run_sync(h.stop)
    io_loop.run_sync(lms.stop)
    h.http.close()


@pytest.fixture
def lms(harness) -> StandinLMS:
    return harness.lms



class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_tracebacks(request):
    """A test fails if anything logged a traceback, unless it is marked
    ``allow_tracebacks`` (it provokes one on purpose)."""
    catcher = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(catcher)
    yield catcher
    root.removeHandler(catcher)
    if request.node.get_closest_marker("allow_tracebacks") is None and catcher.records:
        first = catcher.records[0]
        pytest.fail(f"unexpected traceback logged by {first.name}: {first.getMessage()}\n"
                    + logging.Formatter().formatException(first.exc_info))


@pytest.fixture
def db(tmp_path):
    """A fresh SQLite file with the current schema, as a synchronous engine
    (for the store's batch writes, run as the writer runs them)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()
