"""Command line: the service (``serve``) and the operator's whole window into
it. Every command reads the same database as the running service and is safe
while it runs (SQLite in WAL mode; writes wait their turn)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import sys
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from . import __version__, demo, logs
from . import config as config_mod
from .app import Service
from .batches import unsendable
from .catalog import Catalog
from .config import Config
from .errors import Failure  # re-exported: commands raise cli.Failure
from .intake import replay_delivery  # re-exported: cli.replay_delivery
from .lms import BULK_ENROLL_PATH, LMSClient, LMSError
from .lock import Held, ServiceLock
from .reconcile import Reconciler, check_webhooks, report, since_value
from .store import (
    ACTIVE,
    FAILED,
    ORDER_STATES,
    UNENROLL_FAILED,
    UNKNOWN,
    SchemaError,
    Store,
)
from .store.migrate import sqlite_path, status
from .storefronts import STOREFRONTS

log = logs.logging.getLogger("edx_hooks")


#: Exit codes. systemd restarts the service on 1 (what a restart may cure: a
#: port still taken, a database directory not mounted yet) and not on 2, 3
#: and 4 (RestartPreventExitStatus= in systemd/edx-hooks.service): a restart
#: cannot fix those, an operator must.
EXIT_FAILURE = 1
#: a bad or missing config value, or a command line argparse refuses
EXIT_CONFIG = 2
#: ``serve``: the database's schema is newer than this release, or its
#: upgrade (or the copy taken before it) failed
EXIT_SCHEMA = 3
#: ``serve``: another ``edx-hooks serve`` runs on this database
EXIT_LOCKED = 4


async def _serve(cfg: Config, args: argparse.Namespace) -> int:
    # Before anything slow (the lock, migrations, the scheduler): a SIGTERM
    # during start-up stops it cleanly, rather than killing it half-started.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lock = _lock(cfg)
    try:
        logs.event(log, logs.INFO, "service.starting", pid=os.getpid(), version=__version__)
        if config_mod.readable_by_others(cfg):
            logs.event(log, logs.WARNING, "config.readable", path=cfg.path,
                       secrets=",".join(cfg.secrets_in_file),
                       fix=f"chmod 600 {cfg.path}, or set the secrets as EDX_HOOKS_* variables")
        for problem in cfg.weak_secrets:
            logs.event(log, logs.WARNING, "config.weak_secret", problem=problem)
        service = Service(cfg)
        if not await _start(service, cfg, stop):
            logs.event(log, logs.INFO, "service.stopping", during="start-up")
            await service.stop()
            return 0
        await stop.wait()
        logs.event(log, logs.INFO, "service.stopping")
        await service.stop()
        return 0
    finally:
        if lock is not None:
            lock.release()


def _lock(cfg: Config) -> ServiceLock | None:
    """The lock that keeps a second ``serve`` off this database (see
    :mod:`edx_hooks.lock`); None when database.url names no file (start-up
    refuses that with its own line)."""
    try:
        path = sqlite_path(sa.make_url(cfg.database.url))
    except sa.exc.ArgumentError:
        path = None
    if path is None:
        return None
    lock = ServiceLock(path)
    try:
        lock.acquire()
    except Held as e:
        holder = f"process {e.pid}" if e.pid else "another process"
        raise Failure(f"{holder} already serves database {path} (it holds {e.path}): stop it "
                      "first, or give this one another database.url", EXIT_LOCKED) from None
    except OSError as e:
        raise Failure(f"cannot open the database's lock file {lock.path} ({e.strerror or e}): "
                      "check database.url and that its directory exists and is writable"
                      ) from None
    return lock


async def _start(service: Service, cfg: Config, stop: asyncio.Event) -> bool:
    """Start the service; False if ``stop`` came first (start-up is then
    abandoned where it was, and the caller stops what had started)."""
    starting = asyncio.ensure_future(service.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        try:
            await starting
        except (asyncio.CancelledError, Exception):  # stopping anyway
            pass
        return False
    try:
        starting.result()
    except OSError as e:
        await service.stop()
        raise Failure(f"cannot listen on {cfg.server.address}:{cfg.server.port}: "
                      f"{e.strerror or e}: set server.address/server.port or stop the other "
                      "process") from None
    except SchemaError as e:
        await service.stop()
        raise Failure(str(e), EXIT_SCHEMA) from None
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise Failure(f"cannot open the database ({reason}): check database.url and that its "
                      "directory exists and is writable") from None
    return True


# -- output

def _age(since: dt.datetime | None) -> str:
    if since is None:
        return "-"
    seconds = max(0, int((dt.datetime.now(dt.UTC).replace(tzinfo=None) - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def _json(value: Any) -> str:
    def default(v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return v.isoformat() + "Z"
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        raise TypeError(type(v).__name__)
    return json.dumps(value, default=default, indent=2, ensure_ascii=False)


def _short(text: str | None, width: int = 70) -> str | None:
    if text is None or len(text) <= width:
        return text
    return text[:width - 1] + "…"


# -- commands that read and write the database

async def _orders(store: Store, cfg: Config, args: argparse.Namespace) -> int:
    found = await store.orders(state=args.state, since=args.since, limit=args.limit,
                               email=args.email)
    if args.json:
        print(_json(found))
        return 0
    rows = [[o["provider"], o["shop"], o["external_id"], o["name"],
             f"{o['enrolled']}/{o['items']}", o["state"], _age(o["created_at"]),
             _short(o["last_error"]) if o["state"] != "enrolled" else None] for o in found]
    print(_table(rows, ["provider", "shop", "order", "name", "enrolled", "state", "age",
                        "last error"]) if rows else "no orders")
    return 0


async def _order(store: Store, cfg: Config, args: argparse.Namespace) -> int:
    found = await store.order_story(args.provider, args.order_id)
    if not found:
        raise Failure(f"no {args.provider} order {args.order_id}: `edx-hooks orders` lists them")
    if args.json:
        print(_json(found))
        return 0
    for order in found:
        print(f"{order['provider']} order {order['external_id']} {order['name']} from "
              f"{order['shop']}, received {order['created_at']:%Y-%m-%d %H:%M:%S} UTC"
              + (f", {order['hold']}: its line items wait for the delivery that shows it "
                 f"{'paid' if order['hold'] == 'awaiting-payment' else 'placed'}"
                 if order["hold"] else ""))
        print("\ndeliveries:")
        print(_table([[d["id"], f"{d['received_at']:%Y-%m-%d %H:%M:%S}", d["client_ip"],
                       d["endpoint"], d["status"], d["reason"]] for d in order["deliveries"]],
                     ["id", "received (UTC)", "client", "endpoint", "answer", "reason"]))
        print("\nline items:")
        print(_table([[i["id"], i["external_id"], i["sku"], i["course_id"], i["mode"],
                       i["email"], i["state"] + (f" ({i['unconfirmed']} sent, unconfirmed)"
                                                 if i["unconfirmed"] else ""), i["attempts"],
                       f"{i['updated_at']:%Y-%m-%d %H:%M:%S}", i["reason"]]
                      for i in order["items"]],
                     ["item", "line item", "sku", "course", "mode", "learner", "state",
                      "attempts", "updated (UTC)", "reason"]))
        if order["unenroll_requests"]:
            print("\nrefunds and cancellations:")
            print(_table([[f"{r['requested_at']:%Y-%m-%d %H:%M:%S}", r["why"],
                           r["line_item_id"] or "(whole order)", r["delivery_id"]]
                          for r in order["unenroll_requests"]],
                         ["received (UTC)", "what", "line item", "delivery"]))
        print()
    return 0


async def _deliveries(store: Store, cfg: Config, args: argparse.Namespace) -> int:
    found = await store.list_deliveries(rejected=args.rejected, since=args.since,
                                        limit=args.limit)
    if args.json:
        print(_json(found))
        return 0
    rows = [[d["id"], f"{d['received_at']:%Y-%m-%d %H:%M:%S}", d["provider"], d["shop"],
             d["endpoint"], d["status"], d["reason"], d["client_ip"]] for d in found]
    print(_table(rows, ["id", "received (UTC)", "provider", "shop", "endpoint", "answer",
                        "reason", "client"]) if rows else "no deliveries")
    if args.rejected and rows:
        print("\nonce the cause is fixed (a secret, a shop's domain or source): "
              "`edx-hooks replay ID`")
    return 0


async def _retry(store: Store, cfg: Config, args: argparse.Namespace) -> int:
    ids = await _set_pending_again(store, args, cfg)
    print(f"{len(ids)} line item(s) set pending again: {', '.join(map(str, ids))}")
    if args.wait is None:
        print("the running service picks them up within a second (a stopped one at its next "
              "start); `edx-hooks retry --wait` waits for their outcome")
        return 0
    return await _wait_for(store, ids, args.wait)


async def _wait_for(store: Store, ids: list[int], timeout: float) -> int:
    """Print each item's outcome as it comes; 0 if every one succeeded."""
    deadline = asyncio.get_running_loop().time() + timeout
    left, ok = set(ids), True
    while left:
        for item in await store.items_by_id(sorted(left)):
            if item["state"] in ACTIVE:
                continue
            left.discard(item["id"])
            failed = item["state"] in (FAILED, UNENROLL_FAILED, UNKNOWN)
            ok = ok and not failed
            print(f"item {item['id']} ({item['provider']} order {item['order_external_id']}): "
                  f"{item['state']}" + (f": {item['reason']}" if failed else ""), flush=True)
        if left and asyncio.get_running_loop().time() > deadline:
            print(f"still pending after {timeout:g} s: {', '.join(map(str, sorted(left)))} "
                  "(is `edx-hooks serve` running? `edx-hooks order` shows where they are)")
            return 1
        if left:
            await asyncio.sleep(0.25)
    return 0 if ok else 1


async def _set_pending_again(store: Store, args: argparse.Namespace,
                             cfg: Config) -> list[int]:
    if args.all_failed:
        failed = await store.failed_items()
    elif args.item:
        failed = await store.failed_items(item_ids=args.item)
    else:
        if not (args.provider and args.order_id):
            raise Failure("say which: PROVIDER ORDER_ID, --item ID..., or --all-failed")
        found = await store.order_story(args.provider, args.order_id)
        if not found:
            raise Failure(f"no {args.provider} order {args.order_id}")
        failed = await store.failed_items(order_ids=[o["id"] for o in found])
    sendable = []
    catalog = Catalog(cfg.products, cfg.lms.default_mode)
    for item in failed:  # one that cannot be sent would only fail again, in a call
        problem = unsendable(item["email"], item["course_id"] or item["sku"])
        if problem:
            print(f"item {item['id']} skipped: {problem}; its reason stays: {item['reason']}")
            continue
        sendable.append(item["id"])
        # its SKU resolved again with the catalog in force (fixed since, say),
        # not the one its order met; a redirect is asked again at the attempt
        resolved = catalog.course_of(item["sku"], item["part"]) if item["sku"] else None
        if item["state"] == FAILED and resolved and resolved != (item["course_id"],
                                                                 item["mode"]):
            course, mode = resolved
            await store.update(item["id"], FAILED, course_id=course, mode=mode)
            if course:
                print(f"item {item['id']}: SKU {item['sku']!r} now sells {course}"
                      + (f" in mode {mode}" if mode else ""))
    ids = await store.retry_failed(item_ids=sendable) if sendable else []
    if not ids:
        raise Failure("no failed line item matched: nothing to retry" if not failed
                      else "no failed line item can be sent to the LMS: nothing to retry")
    return ids


async def _replay(store: Store, cfg: Config, args: argparse.Namespace) -> int:
    recorded, outcome = await replay_delivery(store, cfg, args.delivery_id)
    print(f"delivery {args.delivery_id} replayed as delivery {recorded.delivery_id}: "
          f"{outcome.status} {outcome.reason}")
    if outcome.status >= 300:
        return 1
    print(f"{len(recorded.new_pending)} new line item(s) pending, "
          f"{len(recorded.new_failed)} failed on arrival; the running service picks them up "
          "within a second")
    return 0


async def _reconcile(store: Store, cfg: Config, args: argparse.Namespace) -> int:
    reconciler = Reconciler(cfg, store, Catalog(cfg.products, cfg.lms.default_mode),
                            dry_run=args.dry_run)
    try:
        runs = await reconciler.run(args.shop, args.since)
    finally:
        reconciler.close()
    if args.shop and not runs:
        raise Failure(f"no shop {args.shop!r} with API credentials: name a shop_domain or "
                      "source of the config, or a storefront")
    print(report(runs, args.dry_run))
    return 0 if all(run.complete for run in runs) else 1


async def _prune(store: Store, cfg: Config, args: argparse.Namespace) -> int:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    count = await store.prune(now - dt.timedelta(days=args.older_than),
                              now - dt.timedelta(days=cfg.retention.rejected_days))
    print(f"removed body and headers of {count} finished deliveries older than "
          f"{args.older_than:g} days; orders, line items and outcomes are kept, and so are "
          "the bodies `replay` may need: of orders with a failed item, and of rejected "
          f"deliveries younger than retention.rejected_days ({cfg.retention.rejected_days:g})")
    return 0


async def _with_store(command: Any, cfg: Config, args: argparse.Namespace) -> int:
    store = Store(cfg.database.url, cfg.database.sqlite_synchronous)
    try:
        # never created or upgraded here: that is `serve`'s, at start-up
        await store.start(create=False)
        return await command(store, cfg, args)
    except SchemaError as e:
        raise Failure(str(e)) from None
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise Failure(f"database error ({reason}): check database.url") from None
    finally:
        await store.close()


async def _check(cfg: Config, args: argparse.Namespace) -> int:
    print(f"config OK: listening on {cfg.server.address}:{cfg.server.port}, database "
          f"{cfg.database.url}, storefronts: {', '.join(cfg.storefronts) or 'none'}")
    for problem in cfg.weak_secrets:
        print(f"warning: {problem}")
    public = cfg.server.public_url or cfg.lms.base_url  # /webhooks/ is on the LMS's host
    for name in cfg.storefronts:  # what to subscribe, where
        storefront = STOREFRONTS[name]
        shops = ", ".join(storefront.shop_id(shop) for shop in cfg.shops[name])
        print(f"{name} ({shops}): webhooks to subscribe, by URL and topic:")
        for endpoint in storefront.endpoints:
            print(f"  {public}/webhooks/{name}/{endpoint.path}  "
                  f"[{', '.join(endpoint.topics)}]: {endpoint.does}")
    line, ok = status(cfg.database.url)
    print(line if ok else f"FAIL {line}")
    if not args.online:
        return 0 if ok else 1

    for good, line in await probe(cfg.lms, cfg.products) + await check_webhooks(cfg):
        print(("ok   " if good else "FAIL ") + line)
        ok = ok and good
    return 0 if ok else 1


async def probe(settings: config_mod.LMS,
                products: tuple[config_mod.Product, ...] = ()) -> list[tuple[bool, str]]:
    """Check the LMS set-up the way an operator would, and say what was found
    (``check-config --online``).

    Fetches a token; asks the bulk enrollment view without one (401 means it
    is on, 404 that ENABLE_BULK_ENROLLMENT_VIEW is off or the URL is wrong);
    then with the token and an empty request (400 means the client's user may
    enroll, 403 that it is not global staff). When something is sold in a
    mode: whether the account lookup answers for the client, and for every
    catalog entry whether its courses exist and offer its mode.
    """
    client = LMSClient(settings.base_url, settings.client_id, settings.client_secret,
                       timeout=settings.timeout_seconds,
                       connect_timeout=settings.connect_timeout_seconds, max_calls_per_minute=0)
    found: list[tuple[bool, str]] = []
    try:
        token = None
        try:
            token = await client.token()
            found.append((True, f"token: the LMS at {client.base_url} issued a JWT to "
                                f"client {settings.client_id}"))
        except LMSError as e:
            found.append((False, f"token: {e}"))
        try:
            anonymous = await client.fetch(BULK_ENROLL_PATH, method="POST", body="")
        except LMSError as e:
            found.append((False, f"bulk enrollment view: {e}"))
            return found
        if anonymous.code == 401:
            found.append((True, "bulk enrollment view: on (401 without a token)"))
        elif anonymous.code == 404:
            found.append((False, "bulk enrollment view: not found (404): set "
                                 "ENABLE_BULK_ENROLLMENT_VIEW: true in the LMS settings, or "
                                 "check lms.base_url"))
            return found
        else:
            found.append((False, f"bulk enrollment view: answered {anonymous.code} without a "
                                 "token (expected 401)"))
        if token:
            answer = await client.fetch(BULK_ENROLL_PATH, method="POST", body="", headers={
                "Authorization": f"JWT {token}",
                "Content-Type": "application/x-www-form-urlencoded"})
            if answer.code == 403:
                found.append((False, "permission: the OAuth2 application's user is not global "
                                     "staff (403)"))
            elif answer.code in (200, 400):
                found.append((True, f"permission: the client's user may enroll learners "
                                    f"({answer.code} to an empty request)"))
            else:
                found.append((False, f"permission: answered {answer.code} to an empty "
                                     "request with the token"))
        if token and (settings.default_mode or any(p.mode for p in products)):
            try:
                await client.account("edx-hooks-check-config@example.invalid")
                found.append((True, "account lookup: answers for the client (learners sold "
                                    "a mode are looked up by email)"))
            except LMSError as e:
                found.append((False, f"account lookup: {e}"))
        for product in products:
            mode = product.mode or settings.default_mode
            for course in product.courses:
                try:
                    modes = await client.course_modes(course)
                except LMSError as e:
                    found.append((False, f"catalog {product.sku}: {course}: {e}"))
                    continue
                if modes is None:
                    found.append((False, f"catalog {product.sku}: {course} is not a course "
                                         "of this LMS"))
                elif mode and mode not in modes:
                    found.append((False, f"catalog {product.sku}: {course} does not offer "
                                         f"the {mode} mode (it offers {', '.join(modes)})"))
                else:
                    found.append((True, f"catalog {product.sku}: {course} offers "
                                        f"{mode or 'its default mode'}"))
    finally:
        client.close()
    return found


def _date(value: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-11-28") from None


def _since(value: str) -> dt.datetime:
    try:
        return since_value(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="edx-hooks", description="Shop order webhooks in, Open edX enrollments out.")
    top.add_argument("--version", action="version", version=f"edx-hooks {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=kw.pop("description", help))
        sub.add_argument("--config", metavar="PATH", default=os.environ.get("EDX_HOOKS_CONFIG"),
                         help="TOML configuration file (default: $EDX_HOOKS_CONFIG)")
        return sub

    command("serve", "run the webhook receiver")
    sub = command("orders", "list orders with their state, age and last error")
    sub.add_argument("--state", choices=ORDER_STATES)  # an order's, as store.order_state
    sub.add_argument("--since", type=_date, metavar="DATE", help="received on or after DATE")
    sub.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    sub.add_argument("--email", metavar="ADDRESS",
                     help="only orders with a line item for this learner")
    sub.add_argument("--json", action="store_true", help="JSON for scripts")
    sub = command("order", "everything about one order: deliveries and line items")
    sub.add_argument("provider", choices=list(STOREFRONTS))
    sub.add_argument("order_id", help="the shop's order id (order=... in the log), or its "
                                      "name or number as the shop shows it (#1004, 1004)")
    sub.add_argument("--json", action="store_true", help="JSON for scripts")
    sub = command("deliveries", "list deliveries, rejected ones too: the ids replay needs")
    sub.add_argument("--rejected", action="store_true",
                     help="only those answered 300 or more (bad signature, unknown shop...)")
    sub.add_argument("--since", type=_date, metavar="DATE", help="received on or after DATE")
    sub.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    sub.add_argument("--json", action="store_true", help="JSON for scripts")
    sub = command("retry", "set failed (or unknown) line items pending again, with fresh "
                           "attempts",
                  description="Set failed line items pending again, attempts counted from "
                              "zero, once the cause is fixed. The running service picks them "
                              "up within a second; a stopped one at its next start. An "
                              "unknown one (its last call's answer was lost) is not sent "
                              "again before the LMS is asked what it did.")
    sub.add_argument("provider", nargs="?", choices=list(STOREFRONTS))
    sub.add_argument("order_id", nargs="?", help="the shop's order id")
    sub.add_argument("--item", type=int, nargs="+", metavar="ID",
                     help="line item ids (item=... in the log)")
    sub.add_argument("--all-failed", action="store_true",
                     help="every failed and unknown line item")
    sub.add_argument("--wait", type=float, nargs="?", const=600.0, metavar="SECONDS",
                     help="wait for each item's outcome and print it (up to SECONDS, 600 "
                          "by default); exit 1 if one failed again or is still pending")
    sub = command("replay", "process a stored delivery again, verified with the current config",
                  description="Process a stored delivery again (one rejected while a secret "
                              "was misconfigured, say), verified against the current config.")
    sub.add_argument("delivery_id", type=int)
    sub = command("check-config", "validate the config; --online also checks the LMS")
    sub.add_argument("--online", action="store_true",
                     help="fetch a token and probe the bulk enrollment view")
    sub = command("reconcile", "read the orders the webhooks missed back from the shops now",
                  description="Read the orders changed since the last reading back from each "
                              "shop with API credentials, and act on what the webhooks missed; "
                              "beside the running service or without it.")
    sub.add_argument("--shop", metavar="NAME", help="only this shop (its shop_domain or "
                                                    "source), or storefront")
    sub.add_argument("--since", type=_since, metavar="TIME|DURATION",
                     help="from this time (2026-12-01T08:00, UTC) or this long ago (90m, 2h, "
                          "3d) instead of the last reading")
    sub.add_argument("--dry-run", action="store_true", help="show what would be done, change "
                                                            "nothing")
    sub = command("prune", "remove raw bodies and headers of old finished deliveries")
    sub.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    sub = command("settings", "list every setting: its value in force and where it came from",
                  description="List every setting. With a config (--config, "
                              "EDX_HOOKS_CONFIG or EDX_HOOKS_* variables): its value in force, "
                              "secrets hidden, and where it came from (default, file, "
                              "environment); without: its default.")
    sub.add_argument("--json", action="store_true", help="JSON for scripts")
    sub = commands.add_parser(
        "demo", help="try it out: a sample order enrolled through a practice LMS, on loopback",
        description="Run the real service on 127.0.0.1 with a throw-away database, a "
                    "practice LMS and a signing secret made for this run; send one signed "
                    "sample order; show what `orders` and `order` show, and a curl line to "
                    "send another. Runs until Ctrl-C; needs no config.")
    sub.add_argument("--port", type=int, default=0,
                     help="the service's port on 127.0.0.1 (default: a free one)")
    return top


async def _demo_show(store: Store, cfg: Config) -> None:
    """What the operator's commands show, for ``edx-hooks demo``: the same code."""
    print("\n$ edx-hooks orders")
    await _orders(store, cfg, parser().parse_args(["orders"]))
    print("\n$ edx-hooks order shopify 1001")
    await _order(store, cfg, parser().parse_args(["order", "shopify", "1001"]))


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # where a buffered output meets the closed pipe
        return code
    except BrokenPipeError:
        # the reader went away (`edx-hooks orders | head`): no traceback, and
        # stdout pointed at nothing so that the flush at exit does not fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    given = args.command != "demo" and (args.config or any(
        name.startswith(config_mod.ENV_PREFIX) for name in os.environ))
    if args.command == "settings" and not given:
        print(_json([{"setting": s.name, "required": s.default is config_mod.REQUIRED,
                      "default": None if s.default is config_mod.REQUIRED else s.default,
                      "help": s.help, "env": s.env} for s in config_mod.settings(STOREFRONTS)])
              if args.json else config_mod.describe(STOREFRONTS))
        return 0
    if args.command == "demo":
        try:
            return asyncio.run(demo.run(args, _demo_show))
        except Failure as e:
            print(f"edx-hooks: {e}", file=sys.stderr)
            return 1
    try:
        cfg = config_mod.load(args.config, storefronts=STOREFRONTS)
        if args.command in ("serve", "check-config", "replay"):  # those that use the secrets
            config_mod.check_secrets(cfg)
    except config_mod.ConfigError as e:
        # not "lms.base_url is required" when it is the file itself that is missing
        message = str(e) if given else (
            "no config file given: pass --config /etc/edx-hooks/edx-hooks.toml or set "
            "EDX_HOOKS_CONFIG (sudo drops the environment: sudo edx-hooks ... --config PATH)")
        print(f"edx-hooks: config: {message}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "settings":
        found = config_mod.in_force(cfg, STOREFRONTS)
        print(_json(found) if args.json else _table(
            [[f["setting"], "" if f["value"] is None
              else f["value"] if f["secret"] and f["value"] else repr(f["value"]), f["source"]]
             for f in found], ["setting", "value in force", "source"]))
        return 0
    try:
        if args.command == "serve":
            # The database, its WAL and the job store: readable by the
            # service's user only (they hold orders and learner emails).
            os.umask(0o077)
            logs.setup(cfg.logging)
            return asyncio.run(_serve(cfg, args))
        if args.command == "check-config":
            return asyncio.run(_check(cfg, args))
        handler = {"orders": _orders, "order": _order, "deliveries": _deliveries,
                   "retry": _retry, "replay": _replay, "prune": _prune,
                   "reconcile": _reconcile}[args.command]
        return asyncio.run(_with_store(handler, cfg, args))
    except Failure as e:
        print(f"edx-hooks: {e}", file=sys.stderr)
        return e.code
