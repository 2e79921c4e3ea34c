"""Command line: ``edx-hooks serve`` runs the service; ``edx-hooks settings``
lists every setting."""

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
    args = parser.parse_args(argv)

    if args.command == "settings":
        print(config_mod.describe())
        return 0
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"edx-hooks: config: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.logging.level)
    return asyncio.run(_serve(cfg))
