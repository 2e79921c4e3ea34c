"""Logging: one line per state change, for people and monitors.

Every event has a stable name and the ids that find the order:
``event=item.failed provider=shopify order=5001 item=9 attempt=3 reason="..."``
as text, or the same fields as one JSON object per line. To stderr (journald
under systemd) or to syslog. Secrets, signatures and tokens are never passed
to it; learner emails only at debug.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import re
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .setting_types import Logging

DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR


def event(logger: logging.Logger, level: int, name: str, /, exc_info: Any = False,
          **fields: Any) -> None:
    """Log the event ``name`` with ``fields`` (rendered by the configured format)."""
    if logger.isEnabledFor(level):
        # the line as the message itself, no %-arguments: the record need
        # not ask whether they are a mapping (an ABC check, per line)
        logger.log(level, _Text(name, fields), exc_info=exc_info,
                   extra={"event": name, "fields": fields})


class _Text:
    """``event=name k=v ...``, built only if the line is written."""

    __slots__ = ("name", "fields")

    def __init__(self, name: str, fields: dict[str, Any]):
        self.name, self.fields = name, fields

    def __str__(self) -> str:
        return f"event={self.name}" + "".join([f" {k}={quoted(v)}"
                                               for k, v in self.fields.items()])


#: a value that needs no quotes: printable ASCII but space, quote, = and \\
_PLAIN = re.compile(r'[!#-<>-\[\]-~]+')


def quoted(value: object) -> str:
    """A value for a ``key=value`` line, quoted when it has spaces or quotes."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int:  # ids and counts, most values: never quoted
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    text = "".join(c if c.isprintable() else " " for c in text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TextFormatter(logging.Formatter):
    """The text format, with its time stamp's date and time made once a
    second rather than for every line (``time.strftime`` is a good part of
    a line's cost, and a burst of orders writes thousands a second). The
    same text as :class:`logging.Formatter`'s."""

    _second: int | None = None
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:  # format() runs under the handler's lock
            self._stamp = time.strftime(self.default_time_format,
                                        self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
                      .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name}
        if hasattr(record, "event"):
            line["event"] = record.event
            line.update({k: v for k, v in record.fields.items() if k not in line})
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _syslog_address(address: str) -> str | tuple[str, int]:
    """``/dev/log`` (a socket path) or ``host:port`` (UDP)."""
    if address.startswith("/"):
        return address
    host, _, port = address.rpartition(":")
    return host or "localhost", int(port or 514)


def setup(settings: Logging) -> None:
    """Send the logs where ``[logging]`` says, in its format, at its level."""
    if settings.syslog:
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address=_syslog_address(settings.syslog_address),
            facility=logging.handlers.SysLogHandler.LOG_LOCAL0, socktype=socket.SOCK_DGRAM)
        text_format = "edx-hooks[%(process)d]: %(levelname)s %(name)s %(message)s"
    else:
        handler = logging.StreamHandler(sys.stdout if settings.stream == "stdout" else sys.stderr)
        text_format = "%(asctime)s %(levelname)s %(name)s %(message)s"
    handler.setFormatter(JSONFormatter() if settings.format == "json"
                         else TextFormatter(text_format))
    # No format here uses the caller's file, function or line: skip the stack
    # walk logging does for every record to find them (the documented switch);
    # nor the thread's or the multiprocessing process's name, which each
    # record would otherwise look up (the process id stays: syslog's lines
    # carry it).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # Each delivery and each job logs its own event line; the per-request
    # access line and APScheduler's per-run chatter add only noise and cost.
    # The database drivers log every statement with its parameters at debug
    # (signatures, bodies, emails): they stay at warning whatever the level.
    for name in ("tornado.access", "apscheduler", "aiosqlite", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
