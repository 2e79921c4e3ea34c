"""Logging: one ``key=value`` line per state change, for people and monitors.

Every line carries a stable ``event=`` name and the ids that find the order.
Secrets, signatures and tokens are never logged.
"""

from __future__ import annotations

import logging
import sys


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Each delivery and each job logs its own event line; the per-request
    # access line and APScheduler's per-run chatter add only noise and cost.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def quoted(text: object) -> str:
    """A value for a ``key=value`` line, quoted when it has spaces or quotes."""
    text = str(text)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    text = "".join(c if c.isprintable() else " " for c in text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
