"""Command line: ``edx-hooks serve`` runs the service, ``edx-hooks retry``
sets failed line items pending again, ``edx-hooks settings`` lists every
setting."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import __version__, logs
from . import config as config_mod

log = logging.getLogger("edx_hooks")


async def _serve(cfg) -> int:
    from .app import Service

    service = Service(cfg)
    try:
        await service.start()
    except OSError as e:
        print(f"edx-hooks: cannot listen on {cfg.server.address}:{cfg.server.port}: "
              f"{e.strerror or e}: set server.address/server.port or stop the other process",
              file=sys.stderr)
        await service.stop()
        return 1
    except Exception as e:
        from sqlalchemy.exc import SQLAlchemyError
        if not isinstance(e, SQLAlchemyError):
            raise
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        print(f"edx-hooks: cannot open the database ({reason}): check database.url and that "
              "its directory exists and is writable", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("event=service.stopping")
    await service.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edx-hooks",
        description="Storefront order webhooks in, Open edX enrollments out.")
    parser.add_argument("--version", action="version", version=f"edx-hooks {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the webhook receiver")
    serve.add_argument("--config", metavar="PATH", default=os.environ.get("EDX_HOOKS_CONFIG"),
                       help="TOML configuration file (default: $EDX_HOOKS_CONFIG)")
    commands.add_parser("settings", help="list every setting, its default and its variable")
    retry = commands.add_parser(
        "retry", help="set failed line items pending again (safe while the service runs)",
        description="Set failed line items pending again, with their attempts counted from "
                    "zero. The running service picks them up within retry.sweep_seconds; a "
                    "stopped one at its next start.")
    retry.add_argument("--config", metavar="PATH", default=os.environ.get("EDX_HOOKS_CONFIG"),
                       help="TOML configuration file (default: $EDX_HOOKS_CONFIG)")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--item", type=int, nargs="+", metavar="ID",
                       help="line item ids (item=... in the log)")
    which.add_argument("--order", type=int, nargs="+", metavar="ID",
                       help="order ids (order=... in the log): all their failed items")
    which.add_argument("--all-failed", action="store_true", help="every failed line item")
    args = parser.parse_args(argv)

    if args.command == "settings":
        print(config_mod.describe())
        return 0
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"edx-hooks: config: {e}", file=sys.stderr)
        return 2
    if args.command == "retry":
        return asyncio.run(_retry(cfg, args))
    logs.setup(cfg.logging.level)
    return asyncio.run(_serve(cfg))


async def _retry(cfg, args: argparse.Namespace) -> int:
    from .store import Store

    store = Store(cfg.database.url, cfg.database.sqlite_synchronous)
    await store.start()
    try:
        ids = await store.retry_failed(args.item, args.order)
    finally:
        await store.close()
    if not ids:
        print("no failed line item matched: nothing to retry")
        return 1
    print(f"{len(ids)} line item(s) set pending again: {', '.join(map(str, ids))}")
    print(f"the running service picks them up within {cfg.retry.sweep_seconds:g} s "
          "(retry.sweep_seconds), a stopped one at its next start")
    return 0
