"""Benchmark: the accept path of ``edx-hooks serve`` as deployed, and the
enrollments behind it.

Starts the real service (one process, pinned to one core with taskset when
available, SQLite with durable commits), a stand-in LMS with a configurable
answer latency, and sends N signed Shopify order webhooks (about 6 KB each,
distinct orders) with C requests in flight from the other core. Reports
accepted requests per second, answer latency p50/p90/p99/max, seconds from
the first delivery to the last enrollment, LMS calls per line item and the
service's peak RSS. ``--scenario bare`` measures the yardstick instead: a bare
Tornado handler that verifies the HMAC, parses the JSON and commits one row.

    python -m tests.benchmark.run --scenario all          # the README's figures
    python -m tests.benchmark.run --scenario accept --requests 20000
    python -m tests.benchmark.run --scenario e2e --requests 50 --json   # smoke test
    python -m tests.benchmark.run --scenario sustained    # 3,000 orders over 3 minutes
    python -m tests.benchmark.run --against f1a93c5 --rounds 4   # paired with 0.1.0

Every report has the service's CPU time per accepted order (utime + stime
while the orders are sent), the steadier figure on a shared machine.
``--against`` pairs this checkout with another version in alternating
rounds, each beside the bare yardstick, and prints medians and ranges.

Not collected as a test; the suite runs it once with a small N.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SHOP = "bench-school.myshopify.com"
SECRET = "bench-shopify-secret"
LMS_SECRET = "lms-client-secret"
PATH = "/webhooks/shopify/order/create"
SERVICE_CORE, LOAD_CORE = 0, 1

SCENARIOS = {
    # name: (requests, concurrency, LMS latency s, pacing per minute or None=default,
    #        LMS up, wait for every enrollment, courses the orders are spread over,
    #        the LMS's throttle as (calls, seconds) or None,
    #        seconds the orders are spread over, evenly: 0 = as fast as possible)
    "accept": (5000, 16, 0.0, None, True, False, 1, None, 0),
    "bare": (5000, 16, 0.0, None, True, False, 1, None, 0),
    "slow-lms": (3000, 16, 2.0, None, True, False, 1, None, 0),
    "lms-down": (3000, 16, 0.0, None, False, False, 1, None, 0),
    "e2e": (1000, 16, 0.03, 0, True, True, 1, None, 0),
    # a flash sale: 500 orders over 5 courses, the LMS throttling the staff
    # user at 120 calls a minute (Retry-After), edx-hooks on its defaults
    "flash": (500, 16, 0.03, None, True, True, 5, (120, 60.0), 0),
    # a long sale: 3,000 orders arriving evenly over 3 minutes, otherwise as
    # flash (not in "all": it takes 3 minutes)
    "sustained": (3000, 16, 0.03, None, True, True, 5, (120, 60.0), 180),
}
#: what --scenario all runs
ALL = ["accept", "bare", "slow-lms", "lms-down", "e2e", "flash"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def order_payload(n: int, items: int, courses: int = 1) -> dict:
    """A Shopify orders/create payload of about 6 KB (one line item), for one
    of ``courses`` courses."""
    address = {"first_name": "Ada", "last_name": f"Lovelace{n}", "company": None,
               "address1": "12 Analytical Row", "address2": "Flat 3", "city": "London",
               "province": None, "country": "United Kingdom", "zip": "N1 9GU",
               "phone": "+44 20 7946 0000", "name": f"Ada Lovelace{n}", "country_code": "GB",
               "province_code": None, "latitude": 51.53, "longitude": -0.1}
    money = {"shop_money": {"amount": "49.00", "currency_code": "GBP"},
             "presentment_money": {"amount": "49.00", "currency_code": "GBP"}}
    lines = [{
        "id": 90_000_000_000 + n * 10 + i, "admin_graphql_api_id": f"gid://shopify/LineItem/{n}{i}",
        "fulfillable_quantity": 1, "fulfillment_service": "manual", "fulfillment_status": None,
        "gift_card": False, "grams": 0, "name": "Python 101 - Online", "price": "49.00",
        "price_set": money, "product_exists": True, "product_id": 632910392,
        "properties": [{"name": "Learner name", "value": f"Ada {n}"},
                       {"name": "email", "value": f"learner{n}.{i}@example.org"}],
        "quantity": 1, "requires_shipping": False,
        "sku": f"course-v1:Bench+PY{101 + n % courses}+2026",
        "taxable": True, "title": "Python 101", "total_discount": "0.00",
        "total_discount_set": money, "variant_id": 808950810, "variant_title": "Online",
        "vendor": "Bench School", "tax_lines": [{"price": "8.17", "rate": 0.2, "title": "VAT",
                                                 "price_set": money}],
        "discount_allocations": [], "duties": []} for i in range(items)]
    return {
        "id": 5_000_000_000 + n, "admin_graphql_api_id": f"gid://shopify/Order/{n}",
        "name": f"#{1000 + n}", "order_number": 1000 + n, "number": n,
        "email": f"buyer{n}@example.org", "contact_email": f"buyer{n}@example.org",
        "created_at": "2026-11-28T10:00:00+00:00", "updated_at": "2026-11-28T10:00:01+00:00",
        "processed_at": "2026-11-28T10:00:00+00:00", "currency": "GBP",
        "presentment_currency": "GBP", "financial_status": "paid", "fulfillment_status": None,
        "confirmed": True, "test": False, "buyer_accepts_marketing": False,
        "browser_ip": "198.51.100.7", "landing_site": "/products/python-101?utm_source=news",
        "referring_site": "https://www.example.org/courses", "source_name": "web",
        "total_price": "49.00", "subtotal_price": "49.00", "total_tax": "8.17",
        "total_discounts": "0.00", "total_line_items_price": "49.00", "total_weight": 0,
        "total_price_set": money, "subtotal_price_set": money, "total_tax_set": money,
        "total_discounts_set": money, "total_line_items_price_set": money,
        "tax_lines": [{"price": "8.17", "rate": 0.2, "title": "VAT", "price_set": money}],
        "taxes_included": True, "token": hashlib.sha256(str(n).encode()).hexdigest(),
        "cart_token": hashlib.md5(str(n).encode()).hexdigest(), "checkout_id": 90210 + n,
        "client_details": {"accept_language": "en-GB,en;q=0.9", "browser_height": 900,
                           "browser_ip": "198.51.100.7", "browser_width": 1440,
                           "session_hash": None,
                           "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) "
                                         "Gecko/20100101 Firefox/133.0"},
        "customer": {"id": 7_000_000 + n, "email": f"buyer{n}@example.org",
                     "first_name": "Ada", "last_name": f"Lovelace{n}", "state": "enabled",
                     "verified_email": True, "tags": "", "currency": "GBP",
                     "created_at": "2026-01-01T09:00:00+00:00", "default_address": address},
        "billing_address": address, "shipping_address": address,
        "discount_codes": [], "note": None,
        "note_attributes": [{"name": "how_did_you_hear", "value": "newsletter"}],
        "payment_gateway_names": ["shopify_payments"], "shipping_lines": [],
        "fulfillments": [], "refunds": [], "line_items": lines,
    }


def signed_requests(count: int, items: int, port: int, courses: int = 1) -> list[bytes]:
    """Raw HTTP/1.1 keep-alive requests, signed, built before the clock starts."""
    out = []
    for n in range(count):
        body = json.dumps(order_payload(n, items, courses)).encode()
        sig = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest())
        head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/json\r\nX-Shopify-Topic: orders/create\r\n"
                f"X-Shopify-Shop-Domain: {SHOP}\r\nX-Shopify-Hmac-Sha256: {sig.decode()}\r\n"
                f"X-Shopify-Webhook-Id: bench-{n}\r\nContent-Length: {len(body)}\r\n\r\n")
        out.append(head.encode() + body)
    return out


async def send_all(port: int, requests: list[bytes], concurrency: int,
                   spread: float = 0.0) -> dict:
    """Send every request over ``concurrency`` keep-alive connections; with
    ``spread``, the n-th no sooner than ``n * spread / len(requests)`` s
    after the first."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(enumerate(requests))
    gap = spread / len(requests) if requests else 0.0

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n, request in queue:
                if gap:
                    await asyncio.sleep(max(0.0, began + n * gap - time.perf_counter()))
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    start = began = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return {"requests": len(latencies), "seconds": elapsed,
            "accepted_per_second": statuses.get(200, 0) / elapsed, "statuses": statuses,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": latencies[-1] * 1000}


class Process:
    """A subprocess pinned to a core, its stderr written to a file (as
    journald would take it: a pipe read by the load generator could fill up
    and stall the service)."""

    def __init__(self, name: str, args: list[str], core: int | None, cwd: Path, logs: Path,
                 env: dict | None = None):
        if core is not None and shutil.which("taskset"):
            args = ["taskset", "-c", str(core)] + args
        self.args, self.cwd, self.env = args, cwd, env
        self.proc: asyncio.subprocess.Process | None = None
        # in the run's scratch directory (or --logs), never the working directory
        self.log_path = logs / f"{name}.log"

    async def start(self, ready: str, timeout: float = 30) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, cwd=self.cwd, env=self.env, stdout=asyncio.subprocess.DEVNULL,
            stderr=self._log)
        deadline = time.monotonic() + timeout
        while ready not in self.log_path.read_text(errors="replace"):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("process did not start:\n" + self.log_path.read_text())
            await asyncio.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            self._log.close()


def lms_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
        return json.loads(r.read())


def enrollment_progress(db: Path) -> tuple[int, int, float | None]:
    """(line items, enrolled, seconds from the first delivery to the last enrollment)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        total, done = conn.execute(
            "SELECT count(*), coalesce(sum(state = 'enrolled'), 0) FROM items").fetchone()
        first = conn.execute("SELECT min(received_at) FROM deliveries").fetchone()[0]
        last = conn.execute(
            "SELECT max(updated_at) FROM items WHERE state = 'enrolled'").fetchone()[0]
    span = None
    if first and last:
        span = (dt.datetime.fromisoformat(last) - dt.datetime.fromisoformat(first)).total_seconds()
    return total, done, span


async def run_scenario(name: str, requests: int, concurrency: int, items: int,
                       latency: float, pacing: int | None, lms_up: bool,
                       wait_all: bool, workdir: Path, logs: Path, courses: int = 1,
                       throttle: tuple[int, float] | None = None,
                       spread: float = 0.0, python: str | None = None) -> dict:
    """One scenario. ``python``: the interpreter of another version's venv
    (``--against``) to run the service with, instead of this checkout."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    # the other version imports its own edx_hooks, never this checkout's
    service_env = env if python is None else {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    lms_port, port = free_port(), free_port()
    db = workdir / f"{name}.db"
    lms = Process(f"{name}-lms", [sys.executable, "-m", "tests.standin_lms", "--port",
                                  str(lms_port), "--latency", str(latency)]
                  + (["--throttle", str(throttle[0]), str(throttle[1])] if throttle else []),
                  LOAD_CORE, root, logs, env)
    if name == "bare":
        service = Process(name, [sys.executable, "-m", "tests.benchmark.bare", "--port",
                                 str(port), "--db", str(db), "--secret", SECRET],
                          SERVICE_CORE, workdir, logs, env)
    else:
        config = workdir / f"{name}.toml"
        pace = "" if pacing is None else f"max_calls_per_minute = {pacing}\n"
        config.write_text(
            f'[server]\nport = {port}\n[database]\nurl = "sqlite+aiosqlite:///{db}"\n'
            f'[lms]\nbase_url = "http://127.0.0.1:{lms_port}"\nclient_id = "edx-hooks"\n'
            f'client_secret = "{LMS_SECRET}"\n{pace}'
            f'[shopify]\nshop_domain = "{SHOP}"\nsecret = "{SECRET}"\n')
        service = Process(name, [python or sys.executable, "-m", "edx_hooks", "serve",
                                 "--config", str(config)], SERVICE_CORE, workdir, logs,
                          service_env)
    payloads = signed_requests(requests, items, port, courses)
    try:
        if lms_up:
            await lms.start("stand-in LMS on")
        await service.start("service.started")
        cpu_before = service.cpu_seconds()
        report = await send_all(port, payloads, concurrency, spread)
        cpu = service.cpu_seconds() - cpu_before
        report["service_cpu_share"] = cpu / report["seconds"]
        # the steadier figure on a shared machine: the service's own CPU time
        # (utime + stime) per accepted order, while they were sent
        report["cpu_ms_per_accepted"] = (cpu * 1000 / report["statuses"][200]
                                         if report["statuses"].get(200) else None)
        report.update(scenario=name, concurrency=concurrency, items_per_order=items,
                      lms_latency_s=latency, lms_up=lms_up, courses=courses,
                      lms_throttle=f"{throttle[0]} calls per {throttle[1]:g} s"
                      if throttle else None,
                      pacing_per_minute=100 if pacing is None else pacing, spread_s=spread)
        if name != "bare":
            deadline = time.monotonic() + (120 if wait_all else 0)
            while True:
                total, done, span = enrollment_progress(db)
                if done >= total or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            report.update(line_items=total, enrolled_at_end=done,
                          first_delivery_to_last_enrollment_s=span if done == total else None)
            if lms_up:
                stats = lms_stats(lms_port)
                # calls still in flight would skew it: only once all are enrolled
                report.update(lms_calls=stats["calls"], lms_learners=stats["learners"],
                              lms_throttled=stats["throttled"],
                              lms_learners_per_enrolled_item=(stats["learners"] / done)
                              if done and done == total else None)
        report["peak_rss_mb"] = service.peak_rss_mb()
    finally:
        await service.stop()
        await lms.stop()
    return report


def against_python(ref: str) -> tuple[str, str]:
    """The interpreter of the version to pair with, and its label. ``ref``: a
    venv (a directory with bin/python and edx_hooks installed), or a git ref
    of this repository, exported with ``git archive`` and installed into a
    venv under the system's temporary directory (kept for the next run; never
    inside the repository)."""
    path = Path(ref)
    if (path / "bin" / "python").exists():
        return str(path / "bin" / "python"), str(path)
    root = Path(__file__).resolve().parents[2]
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=root,
                         check=True, capture_output=True, text=True).stdout.strip()
    home = Path(tempfile.gettempdir()) / f"edx-hooks-against-{sha[:12]}"
    python = home / "venv" / "bin" / "python"
    if not (home / "ready").exists():
        shutil.rmtree(home, ignore_errors=True)
        (home / "src").mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=root, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(home / "src")], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(home / "src")],
                       check=True, stdout=subprocess.DEVNULL)
        (home / "ready").write_text(sha + "\n")
    return str(python), f"{ref} ({sha[:7]})"


def median(values: list[float]) -> float:
    return statistics.median(values)


async def paired(args: argparse.Namespace) -> dict:
    """``--against``: rounds of bare, this checkout and the other version,
    the two versions' order alternating from round to round."""
    python, label = against_python(args.against)
    spec = SCENARIOS[args.scenario]
    bare_spec = SCENARIOS["bare"]
    rounds = []
    with tempfile.TemporaryDirectory(prefix="edx-hooks-bench-") as tmp:

        async def one(name: str, version: str, py: str | None, n: int) -> dict:
            s = bare_spec if name == "bare" else spec
            workdir = Path(tmp) / f"{version}-{n}"
            workdir.mkdir()
            report = await run_scenario(
                name, args.requests or s[0], args.concurrency or s[1], args.items,
                s[2] if args.lms_latency is None else args.lms_latency,
                s[3] if args.pacing is None else args.pacing, s[4], False, workdir,
                args.logs or workdir, s[6], s[7], 0.0, python=py)
            report["version"] = version
            if not args.json:
                print(f"round {n + 1} {version:6}", end=" ", flush=True)
                show(report)
            return report

        for n in range(args.rounds):
            versions = [("this", None), ("other", python)]
            if n % 2:
                versions.reverse()
            bare = await one("bare", "bare", None, n)
            a = await one(args.scenario, *versions[0], n)
            b = await one(args.scenario, *versions[1], n)
            by = {r["version"]: r for r in (a, b)}
            rounds.append({"bare": bare, "this": by["this"], "other": by["other"]})

    def ratios(f) -> list[float]:
        return [f(r) for r in rounds]

    summary = {
        "against": label, "rounds": len(rounds),
        "this_per_second": ratios(lambda r: r["this"]["accepted_per_second"]),
        "other_per_second": ratios(lambda r: r["other"]["accepted_per_second"]),
        "bare_per_second": ratios(lambda r: r["bare"]["accepted_per_second"]),
        "this_cpu_ms": ratios(lambda r: r["this"]["cpu_ms_per_accepted"]),
        "other_cpu_ms": ratios(lambda r: r["other"]["cpu_ms_per_accepted"]),
        "bare_cpu_ms": ratios(lambda r: r["bare"]["cpu_ms_per_accepted"]),
        "this_over_bare": ratios(lambda r: r["this"]["accepted_per_second"]
                                 / r["bare"]["accepted_per_second"]),
        "other_over_bare": ratios(lambda r: r["other"]["accepted_per_second"]
                                  / r["bare"]["accepted_per_second"]),
        "this_over_other": ratios(lambda r: r["this"]["accepted_per_second"]
                                  / r["other"]["accepted_per_second"]),
        "cpu_this_over_other": ratios(lambda r: r["this"]["cpu_ms_per_accepted"]
                                      / r["other"]["cpu_ms_per_accepted"]),
    }
    summary["medians"] = {k: median(v) for k, v in summary.items() if isinstance(v, list)}
    if not args.json:
        print(f"paired with {label}, {len(rounds)} rounds (medians; range):")
        for key, values in summary.items():
            if isinstance(values, list):
                print(f"  {key:20} {median(values):8.3f}   "
                      f"({min(values):.3f} to {max(values):.3f})")
    return {"rounds": rounds, "summary": summary}


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}; service on core {SERVICE_CORE}"
            + ("" if shutil.which("taskset") else " (taskset missing: not pinned)"))


def show(report: dict) -> None:
    line = (f"{report['scenario']:9} {report['accepted_per_second']:7.0f}/s  "
            f"p50 {report['p50_ms']:5.1f}  p90 {report['p90_ms']:5.1f}  "
            f"p99 {report['p99_ms']:5.1f}  max {report['max_ms']:6.1f} ms  "
            f"RSS {report['peak_rss_mb']:4.0f} MB  CPU {report['service_cpu_share']:4.0%}")
    if "line_items" in report:
        span = report["first_delivery_to_last_enrollment_s"]
        line += (f"  enrolled {report['enrolled_at_end']}/{report['line_items']}"
                 + (f" in {span:.2f} s" if span is not None else ""))
    if report.get("lms_learners_per_enrolled_item") is not None:
        line += (f"  LMS calls {report['lms_calls']}, 429s {report['lms_throttled']}, "
                 f"learners/item {report['lms_learners_per_enrolled_item']:.2f}")
    print(line, flush=True)


async def main_async(args: argparse.Namespace) -> list[dict]:
    names = ALL if args.scenario == "all" else [args.scenario]
    reports = []
    with tempfile.TemporaryDirectory(prefix="edx-hooks-bench-") as tmp:
        for name in names:
            (requests, concurrency, latency, pacing, lms_up, wait_all, courses,
             throttle, spread) = SCENARIOS[name]
            report = await run_scenario(
                name, args.requests or requests, args.concurrency or concurrency,
                args.items, latency if args.lms_latency is None else args.lms_latency,
                pacing if args.pacing is None else args.pacing, lms_up, wait_all, Path(tmp),
                args.logs or Path(tmp), courses, throttle,
                spread if args.spread is None else args.spread)
            reports.append(report)
            if not args.json:
                show(report)
    bare = next((r for r in reports if r["scenario"] == "bare"), None)
    accept = next((r for r in reports if r["scenario"] == "accept"), None)
    if bare and accept and not args.json:
        print(f"accept / bare = {accept['accepted_per_second'] / bare['accepted_per_second']:.2f}")
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="accept")
    parser.add_argument("--requests", type=int, help="orders to send (default: per scenario)")
    parser.add_argument("--concurrency", type=int, help="requests in flight (default 16)")
    parser.add_argument("--items", type=int, default=1, help="line items per order")
    parser.add_argument("--lms-latency", type=float, help="seconds the LMS takes to answer")
    parser.add_argument("--pacing", type=int, help="lms.max_calls_per_minute (0 = off)")
    parser.add_argument("--spread", type=float, metavar="SECONDS",
                        help="send the orders evenly over this long (default: per scenario; "
                             "0 = as fast as possible)")
    parser.add_argument("--against", metavar="REF_OR_VENV",
                        help="pair this checkout with another version (a git ref, or a venv "
                             "with edx_hooks installed): rounds of the scenario (accept by "
                             "default), each with the bare yardstick, the two versions' order "
                             "alternating; reports throughput and the service's CPU time per "
                             "accepted order, and their ratios")
    parser.add_argument("--rounds", type=int, default=4, help="rounds with --against")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--logs", type=Path, metavar="DIR",
                        help="keep each process's log in DIR (default: a scratch directory "
                             "removed at the end)")
    args = parser.parse_args()
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    if shutil.which("taskset") and hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
        os.sched_setaffinity(0, {LOAD_CORE})
    if not args.json:
        print(machine(), flush=True)
    if args.against:
        if args.scenario in ("all", "bare"):
            parser.error("--against pairs one scenario (accept by default) with bare")
        result = asyncio.run(paired(args))
        if args.json:
            print(json.dumps({"machine": machine(), **result}, indent=2))
        return
    reports = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps({"machine": machine(), "reports": reports}, indent=2))


if __name__ == "__main__":
    main()
