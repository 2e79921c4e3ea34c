"""The bottom layer of the configuration: the setting types and validators,
and the sections every configuration has. It imports nothing from the
package but :mod:`edx_hooks.errors` (which imports nothing), so every layer
above -- the storefronts declaring their shops' settings, logs, the catalog,
the loader in :mod:`edx_hooks.config` -- may build on it without a cycle.

A section's settings are the fields of a frozen dataclass (:class:`Server`,
:class:`LMS`...; a storefront declares its shop's own with :func:`setting`
and these parsers): each field is a setting, with its type, its default (or
none, when it is required), the parser that checks it and a help line.
A parser takes a TOML value or an environment string and returns the value,
or raises ValueError with the fix.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError  # noqa: F401  (the parsers' callers raise it)

# -- Open edX identifiers (the LMS client checks them too)

_COURSE_PART = r"[\w\-~.:]+"
COURSE_ID_RE = re.compile(rf"course-v1:{_COURSE_PART}\+{_COURSE_PART}\+{_COURSE_PART}")
#: the old form, ORG/COURSE/RUN, of long-running installs (bulk enrollment takes it)
OLD_COURSE_ID_RE = re.compile(r"[\w\-~.]+/[\w\-~.]+/[\w\-~.]+")
_EMAIL_RE = re.compile(r"[^@\s,;<>()\[\]\\\"]+@[^@\s,;<>()\[\]\\\"]+\.[^@\s,;<>()\[\]\\\".]+")


def is_course_id(value: str) -> bool:
    """A course id in the opaque-keys grammar: course-v1:ORG+COURSE+RUN, or
    the old ORG/COURSE/RUN."""
    return (COURSE_ID_RE.fullmatch(value) is not None
            or OLD_COURSE_ID_RE.fullmatch(value) is not None)


def is_email(value: str) -> bool:
    """One plain address: no list separators, whitespace or control characters
    (bulk_enroll splits its ``identifiers`` on commas and whitespace)."""
    return (len(value) <= 254 and value.isprintable()
            and _EMAIL_RE.fullmatch(value) is not None)


ENV_PREFIX = "EDX_HOOKS_"


class _Required:
    def __repr__(self) -> str:
        return "(required)"


REQUIRED: Any = _Required()


# --- parsers: take a TOML value or an environment string, return the value or
# raise ValueError with the fix.

def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError("must be true or false")


def integer(low: int, high: int) -> Callable[[Any], int]:
    return _bounded(int, (int,), f"a whole number from {low} to {high}", low, high)


def number(low: float, high: float) -> Callable[[Any], float]:
    return _bounded(float, (int, float), f"a number from {low:g} to {high:g}", low, high)


def _bounded(convert: Callable[[Any], Any], types: tuple[type, ...], what: str,
             low: float, high: float) -> Callable[[Any], Any]:
    """A parser of ``types`` (or a string of one) from ``low`` to ``high``,
    converted with ``convert``; else "must be ``what``". Never a bool."""
    def parse(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = convert(value.strip())
            except ValueError:
                raise ValueError(f"must be {what}") from None
        if isinstance(value, bool) or not isinstance(value, types) \
                or not low <= value <= high:
            raise ValueError(f"must be {what}")
        return convert(value)
    return parse


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string in quotes")
    return value


def nonempty(value: Any) -> str:
    value = text(value).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def secret(value: Any) -> str:
    # An empty HMAC key is a key anyone can use.
    value = text(value)
    if not value.strip():
        raise ValueError("must not be empty (an empty signing key is a key anyone can use)")
    return value


#: a secret shorter than this gets a warning (not a refusal: an upgrade must
#: not stop a running install)
WEAK_SECRET_LENGTH = 16


def placeholder(value: str) -> bool:
    """Whether a secret is a placeholder, such as the example config's
    ``set-me-in-EDX_HOOKS_...``: written in a public file, it is a key anyone
    can sign with."""
    value = value.strip().lower()
    return value.startswith(("set-me", "change-me", "changeme")) or value in ("secret", "xxx")


def optional_secret(value: Any) -> str:
    """A secret that may be left empty (unset: the feature it turns on stays
    off), such as lms.api_key."""
    return text(value).strip()


def one_or_list(value: Any, bad_json: str) -> list[Any]:
    """A value, or a list of them: a TOML array, or in the environment (where
    everything is a string) a JSON array."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(bad_json) from None
    return value if isinstance(value, list) else [value]


def secrets(value: Any) -> list[str]:
    """One secret, or several during a rotation: a delivery is genuine if any
    of them verifies it."""
    values = one_or_list(value, "must be a secret, or a JSON array of secrets")
    if not values:
        raise ValueError("must hold at least one secret")
    return [secret(v) for v in values]


def http_url(value: Any) -> str:
    value = nonempty(value)
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as https://lms.example.org")
    if parts.query or parts.fragment:
        raise ValueError("must be the LMS root URL, without query or fragment")
    return value.rstrip("/")


def public_url(value: Any) -> str:
    value = text(value).strip()
    if not value:
        return ""
    parts = urllib.parse.urlsplit(value)
    if (parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ValueError("must be the root URL shops reach the LMS host at, such as "
                         "https://lms.example.org, or empty (lms.base_url)")
    return value.rstrip("/")


def syslog_address(value: Any) -> str:
    value = nonempty(value)
    if value.startswith("/"):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be a socket path such as /dev/log, or host:port such as "
                         "logs.example.org:514")
    return value


def database_url(value: Any) -> str:
    value = nonempty(value)
    if "://" not in value:
        raise ValueError("must be an SQLite URL such as sqlite+aiosqlite:///edx-hooks.db")
    if value.startswith("sqlite") and not value.startswith("sqlite+aiosqlite://"):
        raise ValueError("SQLite needs the async driver: sqlite+aiosqlite:///path/to/edx-hooks.db")
    if not value.startswith("sqlite+aiosqlite:///") or value.rstrip("/").endswith(":memory:") \
            or value == "sqlite+aiosqlite:///":
        raise ValueError("must name an SQLite file, such as sqlite+aiosqlite:///edx-hooks.db "
                         "(other databases are not supported)")
    return value


def jobs_url(value: Any) -> str:
    value = text(value).strip()
    if value and (not value.startswith("sqlite:///") or value == "sqlite:///"
                  or value.endswith(":memory:")):
        raise ValueError("must name an SQLite file, such as sqlite:///edx-hooks.jobs.db, or be "
                         "empty (a file beside the database)")
    return value


#: the course modes of Open edX (CourseMode slugs)
MODES = ("audit", "honor", "verified", "professional", "no-id-professional", "credit",
         "masters", "executive-education", "paid-executive-education",
         "unpaid-executive-education", "paid-bootcamp", "unpaid-bootcamp")


def mode(value: Any) -> str:
    """A course mode, or "" for none (the LMS's default)."""
    value = text(value).strip().lower()
    if value and value not in MODES:
        raise ValueError("is no Open edX course mode: use one of " + ", ".join(MODES)
                         + ", or leave it empty")
    return value


def course_ids(value: Any) -> list[str]:
    """One course id, or a list of them (a bundle)."""
    values = one_or_list(value, "must be a course id, or a JSON array of course ids")
    if not values:
        raise ValueError("must name at least one course")
    found = []
    for v in values:
        v = nonempty(v)
        if not is_course_id(v):
            raise ValueError(f"{v!r} is not a course id (course-v1:ORG+COURSE+RUN, or "
                             "ORG/COURSE/RUN)")
        if v in found:
            raise ValueError(f"names {v!r} twice")
        found.append(v)
    return found


def optional_url(value: Any) -> str:
    value = text(value).strip()
    return http_url(value) if value else ""


def choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        value = text(value).strip().lower()
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(repr(c) for c in choices))
        return value
    return parse


def names(value: Any) -> tuple[str, ...]:
    """One name or a list of them (in the environment, a JSON array), each
    compared without case."""
    found = tuple(nonempty(v).lower() for v in one_or_list(
        value, "must be a name, or a JSON array of names"))
    if not found:
        raise ValueError("must hold at least one name")
    return found


def sku_prefix(value: Any) -> str:
    return text(value).lstrip("/")


def setting(default: Any, parse: Callable[[Any], Any], help: str) -> Any:
    """A setting, declared as a dataclass field: its default (``REQUIRED``:
    none), the parser that checks a value from the file or the environment,
    and a help line."""
    metadata = {"parse": parse, "help": help, "default": default}
    shown = not is_secret(parse)  # a secret stays out of every repr
    if default is REQUIRED:
        return field(metadata=metadata, repr=shown)
    return field(default=default, metadata=metadata, repr=shown)


def is_secret(parse: Callable[[Any], Any]) -> bool:
    """Whether a setting with this parser holds a secret."""
    return parse in (secret, secrets, optional_secret)


@dataclass(frozen=True)
class Setting:
    """One setting as the loader, ``edx-hooks settings`` and the docs see it."""
    section: str
    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}_{self.key.upper()}"

    @property
    def secret(self) -> bool:
        return is_secret(self.parse)


def declared(section: str, cls: type) -> tuple[Setting, ...]:
    """The settings a section's dataclass declares, in order."""
    return tuple(Setting(section, f.name, f.metadata["parse"], f.metadata["default"],
                         f.metadata["help"]) for f in dataclasses.fields(cls))


# --- the sections

@dataclass(frozen=True, kw_only=True)
class Server:
    address: str = setting("127.0.0.1", nonempty, "address to listen on")
    port: int = setting(8090, integer(1, 65535), "TCP port to listen on")
    xheaders: bool = setting(False, boolean, "trust X-Real-IP / X-Forwarded-For (turn on "
                                             "behind nginx, off otherwise)")
    max_body_size: int = setting(2 * 1024 * 1024, integer(1024, 256 * 1024 * 1024),
                                 "largest accepted request body in bytes; larger ones get 413")
    client_timeout_seconds: float = setting(
        10.0, number(1, 3600), "a client sending its headers or body slower than this is cut off")
    public_url: str = setting("", public_url,
                              "the root URL shops call /webhooks/ at, for the webhook URLs "
                              "`check-config` lists; empty = lms.base_url")


@dataclass(frozen=True, kw_only=True)
class Retention:
    rejected_days: float = setting(30.0, number(0.01, 36500),
                                   "rejected deliveries (and pings) are deleted after this many "
                                   "days")
    rejected_body_bytes: int = setting(65536, integer(0, 16 * 1024 * 1024),
                                       "how much of a rejected delivery's body is kept")
    rejected_max_bytes: int = setting(32 * 1024 * 1024, integer(0, 2**40),
                                      "bodies of rejected deliveries kept in all; past it, "
                                      "only their first 1 KiB")


@dataclass(frozen=True, kw_only=True)
class Database:
    url: str = setting("sqlite+aiosqlite:///edx-hooks.db", database_url,
                       "the SQLite file (sqlite+aiosqlite:///path)")
    jobs_url: str = setting("", jobs_url, "the APScheduler job store's SQLite file "
                                          "(sqlite:///path); empty = a sibling file "
                                          "<database>.jobs.db")
    sqlite_synchronous: str = setting("full", choice("full", "normal"),
                                      "SQLite PRAGMA synchronous: full survives a power cut, "
                                      "normal only a crash")


@dataclass(frozen=True, kw_only=True)
class LMS:
    base_url: str = setting(REQUIRED, http_url, "root URL of the Open edX LMS")
    client_id: str = setting(REQUIRED, nonempty, "OAuth2 client id (global-staff user)")
    client_secret: str = setting(REQUIRED, secret, "OAuth2 client secret")
    sku_prefix: str = setting("", sku_prefix,
                              "path prefix of SKU redirects on the LMS, e.g. 'sku/'")
    auto_enroll: bool = setting(True, boolean,
                                "enroll learners without an account when they register")
    email_students: bool = setting(True, boolean, "let the LMS email the learner")
    timeout_seconds: float = setting(10.0, number(0.1, 300),
                                     "seconds an LMS call is given to answer, once connected "
                                     "(a bulk enrollment call: plus seconds_per_learner for "
                                     "each learner it names)")
    connect_timeout_seconds: float = setting(5.0, number(0.1, 300),
                                             "seconds allowed to connect to the LMS")
    seconds_per_learner: float = setting(1.0, number(0, 600),
                                         "more answer time for each learner a bulk "
                                         "enrollment call names: the LMS emails each inside "
                                         "the call, one after the other")
    max_calls_per_minute: int = setting(100, integer(0, 100000),
                                        "pace of enrollment calls (the LMS throttles at about "
                                        "120 a minute); 0 = unpaced")
    batch_size: int = setting(20, integer(1, 1000),
                              "learners in one bulk enrollment call at most (same course and "
                              "action); the LMS emails each in the call")
    default_mode: str = setting("", mode, "course mode for SKUs not in [[products]] (a course "
                                          "id, or a redirect); empty = the LMS's default")
    api_key: str = setting("", optional_secret, "the LMS's EDX_API_KEY, sent as X-Edx-Api-Key: no "
                                     "throttle, and modes set past their upgrade deadline")
    learning_mfe_url: str = setting("", optional_url,
                                    "the Learning MFE's root (e.g. https://apps.lms.example.org"
                                    "/learning): SKU redirects to its course pages name courses")
    account_check_minutes: float = setting(60.0, number(0.001, 1440),
                                           "how often a learner without an account yet is "
                                           "looked for, to set the paid mode")
    account_wait_days: float = setting(60.0, number(0.0001, 3650),
                                       "how long a learner without an account is waited for")


@dataclass(frozen=True, kw_only=True)
class Retry:
    attempts: int = setting(3, integer(1, 100), "LMS attempts per line item in all")
    delay_seconds: float = setting(180.0, number(0, 86400),
                                   "seconds between attempts after a transient failure")
    sweep_seconds: float = setting(60.0, number(0.1, 3600),
                                   "how often pending items that lost their job are looked for")


@dataclass(frozen=True, kw_only=True)
class Reconcile:
    minutes: float = setting(15.0, number(0, 1440),
                             "how often orders are read back from shops with API credentials, "
                             "to act on what a webhook missed; 0 = off")
    first_lookback_hours: float = setting(72.0, number(0, 24 * 366),
                                          "how far back the first reading of a shop looks")


@dataclass(frozen=True, kw_only=True)
class Logging:
    level: str = setting("info", choice("debug", "info", "warning", "error"),
                         "log level (learner emails appear only at debug)")
    format: str = setting("text", choice("text", "json"),
                          "text: event=... key=value lines; json: one JSON object per line")
    stream: str = setting("stderr", choice("stderr", "stdout"),
                          "where the logs go when not to syslog (stdout: a container's log)")
    syslog: bool = setting(False, boolean, "log to syslog (facility local0) instead of stderr")
    syslog_address: str = setting("/dev/log", syslog_address,
                                  "syslog socket path, or host:port for UDP")


def usernames(value: Any) -> tuple[str, ...]:
    values = one_or_list(value, "must be a username, or a JSON array of usernames")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError("must be a list of LMS usernames in quotes")
    return tuple(v.strip() for v in values)


@dataclass(frozen=True, kw_only=True)
class Console:
    """The staff's web console at /webhooks/console/ (off while client_id is empty)."""
    client_id: str = setting("", text, "OAuth2 client id of the LMS application with grant "
                                       "type authorization-code; empty = console off")
    client_secret: str = setting("", secret, "that application's client secret")
    staff_usernames: tuple[str, ...] = setting((), usernames,
                                         "LMS usernames let in besides global staff")
    cookie_secret: str = setting("", secret, "key that signs the session cookie; empty = a "
                                             "random one at each start (sessions end at "
                                             "restart)")
    session_hours: float = setting(8.0, number(0.05, 720),
                                   "how long a sign-in lasts")

    @property
    def enabled(self) -> bool:
        return bool(self.client_id)


@dataclass(frozen=True, kw_only=True)
class Product:
    """A SKU of the catalog: ``[[products]]``, one table per SKU."""
    sku: str = setting(REQUIRED, nonempty, "the product's SKU in the shop")
    courses: list[str] = setting(REQUIRED, course_ids,
                                 "its course id, or several for a bundle (one enrollment each)")
    mode: str = setting("", mode, "the course mode sold (e.g. verified); empty = "
                                  "lms.default_mode")


#: the sections every configuration has, by name
SECTIONS: dict[str, type] = {"server": Server, "retention": Retention, "database": Database,
                             "lms": LMS, "retry": Retry, "logging": Logging,
                             "reconcile": Reconcile, "console": Console}
#: sections of several tables (``[[name]]``), none of which is required
LISTS: dict[str, type] = {"products": Product}
