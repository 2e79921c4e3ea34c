"""Configuration: every setting declared once, read from one TOML file and the
environment, validated before anything starts.

A section's settings are the fields of a frozen dataclass (:class:`Server`,
:class:`LMS`...; a storefront declares its shop's own): each field is a
setting, with its type, its default (or none, when it is required), the
parser that checks it and a help line (:func:`setting`). So a reader, and
the linter, see every setting the code uses; a typo is an AttributeError at
once, not a surprise at run time. ``EDX_HOOKS_<SECTION>_<KEY>`` in the
environment wins over the file, so secrets can stay out of it. Any problem
raises :class:`ConfigError`, whose message is one line naming the key and
the fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError  # re-exported: config.ConfigError

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
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"must be a whole number from {low} to {high}")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"must be a whole number from {low} to {high}") from None
        if not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return value
    return parse


def number(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"must be a number from {low:g} to {high:g}") from None
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        return float(value)
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
    from .lms import is_course_id
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


@dataclass(frozen=True)
class Config:
    server: Server
    retention: Retention
    database: Database
    lms: LMS
    retry: Retry
    logging: Logging
    #: each storefront's shops, by storefront name (none: switched off)
    shops: Mapping[str, tuple[Any, ...]]
    #: the catalog: SKUs with their courses and mode
    products: tuple[Product, ...] = ()
    reconcile: Reconcile = Reconcile()
    #: the file read, if any
    path: str | None = None
    #: the staff's web console (off unless [console] names a client)
    console: Console = Console()
    #: the secrets set in that file (config.readable warns about them)
    secrets_in_file: tuple[str, ...] = ()
    #: secrets that are placeholders: one-line refusals (:func:`check_secrets`)
    placeholders: tuple[str, ...] = ()
    #: secrets shorter than WEAK_SECRET_LENGTH: one-line warnings
    weak_secrets: tuple[str, ...] = ()
    #: where each setting's value in force came from, by its label
    #: ("lms.base_url", "shopify[1].secret"): "file", "environment (NAME)",
    #: or absent for a default
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def storefronts(self) -> list[str]:
        """The storefronts switched on."""
        return [name for name, shops in self.shops.items() if shops]


def storefront_sections() -> dict[str, type]:
    """The storefronts' sections (several shops each, absent = off), by name."""
    from .storefronts import STOREFRONTS
    return {name: sf.settings for name, sf in STOREFRONTS.items()}


def settings() -> tuple[Setting, ...]:
    """Every setting: the sections', the catalog's, then the storefronts'."""
    every = {**SECTIONS, **LISTS, **storefront_sections()}
    return tuple(s for name, cls in every.items() for s in declared(name, cls))


def _fix_hint(setting: Setting) -> str:
    return f"set {setting.key} in [{setting.section}] or {setting.env}"


def _read_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found: pass --config with an existing file") from None
    except PermissionError:
        raise ConfigError(
            f"config file {path} is not readable: check its owner and mode") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"config file {path} is not valid TOML ({e}): fix the syntax") from None


def _tables(section: str, value: Any, path: str | None, known: set[str],
            several: bool) -> list[dict[str, Any]]:
    """A section's tables: one ``[section]``, or ``[[section]]`` for storefronts."""
    if isinstance(value, dict):
        tables = [value]
    elif isinstance(value, list) and several and all(isinstance(t, dict) for t in value):
        tables = value
    else:
        form = f"[{section}] or [[{section}]]" if several else f"[{section}]"
        raise ConfigError(f"{section} must be written as {form}: fix it in {path}")
    for table in tables:
        for key in table:
            if key not in known:
                raise ConfigError(f"unknown key {section}.{key} in {path}: remove it or fix its "
                                  f"spelling (see conf/edx-hooks.example.toml)")
    return tables


def _environment(environ: Mapping[str, str], keys: dict[str, set[str]],
                 several: set[str]) -> dict[tuple[str, int | None, str], str]:
    """EDX_HOOKS_<SECTION>_<KEY>, and EDX_HOOKS_<STOREFRONT>_<N>_<KEY> for the
    N-th (from 0) of several shops, keyed by (section, N or None, key)."""
    found: dict[tuple[str, int | None, str], str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for section in sorted(keys, key=len, reverse=True):
            if not rest.startswith(section + "_"):
                continue
            key, index = rest[len(section) + 1:], None
            head, _, tail = key.partition("_")
            if section in several and head.isdigit() and tail:
                key, index = tail, int(head)
            if key not in keys[section]:
                raise ConfigError(
                    f"unknown environment variable {name}: unset it or fix its spelling")
            found[(section, index, key)] = value
            break
        else:  # a misspelled section would be ignored silently, its secret unset
            raise ConfigError(f"unknown environment variable {name} (no section "
                              f"{', '.join(keys)} starts it): unset it or fix its spelling")
    return found


def load(path: str | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (may be None) and ``environ``; return the :class:`Config`."""
    environ = os.environ if environ is None else environ
    storefronts = storefront_sections()
    several_tables = {**LISTS, **storefronts}
    every = {**SECTIONS, **several_tables}
    declarations = {name: declared(name, cls) for name, cls in every.items()}
    data = _read_file(path)
    for section in data:
        if section not in every:
            raise ConfigError(f"unknown section [{section}] in {path}: remove it "
                              f"(known sections: {', '.join(every)})")
    tables = {section: _tables(section, value, path, {s.key for s in declarations[section]},
                               section in several_tables)
              for section, value in data.items()}
    env = _environment(environ, {name: {s.key for s in d} for name, d in declarations.items()},
                       set(several_tables))

    built: dict[str, Any] = {}
    shops: dict[str, tuple[Any, ...]] = {}
    notes = _Notes()
    for section, cls in every.items():
        several = section in several_tables
        found = tables.get(section, [])
        indexes = {i for (sec, i, _) in env if sec == section and i is not None}
        count = max([len(found), *(i + 1 for i in indexes)], default=0)
        if not count and any(sec == section for (sec, _, _) in env):
            count = 1
        if several and not count:
            shops[section] = ()
            continue
        if several and count > 1 and any(sec == section and i is None for (sec, i, _) in env):
            raise ConfigError(f"there are {count} [[{section}]] shops: name one in the "
                              f"environment as {ENV_PREFIX}{section.upper()}_<N>_<KEY>, "
                              "N counting from 0")
        made = []
        for n in range(max(count, 1)):
            table = found[n] if n < len(found) else {}
            label = section if count <= 1 else f"{section}[{n}]"
            made.append(cls(**_values(declarations[section], table, env, section, n, label,
                                      notes)))
        if several:
            shops[section] = tuple(made)
        else:
            built[section] = made[0]

    products = shops.pop("products")
    for section, section_shops in shops.items():
        _check_unique(section, section_shops)
    _check_catalog(products)
    _check_console(built["console"])
    database = built["database"]
    built["database"] = dataclasses.replace(
        database, jobs_url=database.jobs_url or jobs_url_for(database.url))
    return Config(**built, shops=shops, products=products, path=path,
                  secrets_in_file=tuple(notes.secrets_in_file),
                  placeholders=tuple(notes.placeholders), weak_secrets=tuple(notes.weak),
                  sources=notes.sources)


@dataclass
class _Notes:
    """What loading notes besides the values."""
    secrets_in_file: list[str] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)
    weak: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def _check_catalog(products: tuple[Product, ...]) -> None:
    """A SKU is in the catalog once."""
    seen: dict[str, int] = {}
    for n, product in enumerate(products):
        if product.sku in seen:
            raise ConfigError(f"products[{seen[product.sku]}] and products[{n}] have the same "
                              f"sku {product.sku!r}: give each product one table")
        seen[product.sku] = n


def _check_console(console: Console) -> None:
    """[console] is all or nothing: a client id needs its secret, and back."""
    if console.client_id and not console.client_secret:
        raise ConfigError("console.client_secret is required with console.client_id: set "
                          "client_secret in [console] or EDX_HOOKS_CONSOLE_CLIENT_SECRET")
    if console.client_secret and not console.client_id:
        raise ConfigError("console.client_id is required with console.client_secret: set "
                          "client_id in [console] or EDX_HOOKS_CONSOLE_CLIENT_ID")


def _values(declared_here: tuple[Setting, ...], table: dict[str, Any],
            env: dict[tuple[str, int | None, str], str], section: str, n: int, label: str,
            notes: _Notes) -> dict[str, Any]:
    """One table's values, from the environment, the file or the defaults;
    where each came from, and a placeholder or weak secret, go in ``notes``."""
    values = {}
    for s in declared_here:
        env_key = next((k for k in ((section, n, s.key), (section, None, s.key)) if k in env),
                       None)
        if env_key is not None:
            raw = env[env_key]
            origin = (f"{ENV_PREFIX}{section.upper()}_{n}_{s.key.upper()}"
                      if env_key[1] is not None else s.env)
        elif s.key in table:
            raw, origin = table[s.key], f"{label}.{s.key}"
            if s.secret and raw not in ("", []):  # an empty optional one holds nothing
                notes.secrets_in_file.append(f"{label}.{s.key}")
        elif s.default is REQUIRED:
            raise ConfigError(f"{label}.{s.key} is required ({s.help}): {_fix_hint(s)}")
        else:
            continue  # the dataclass's default
        try:
            values[s.key] = s.parse(raw)
        except ValueError as e:
            shown = "<hidden>" if s.secret else repr(raw)
            where = "" if origin == f"{label}.{s.key}" else f" (from {origin})"
            raise ConfigError(f"{label}.{s.key} = {shown}{where} {e}: "
                              f"{_fix_hint(s)}") from None
        if s.secret:
            _judge_secret(s, values[s.key], label, origin, notes.placeholders, notes.weak)
        notes.sources[f"{label}.{s.key}"] = ("file" if origin == f"{label}.{s.key}"
                                             else f"environment ({origin})")
    return values


def _judge_secret(s: Setting, value: str | list[str], label: str, origin: str,
                  placeholders: list[str], weak: list[str]) -> None:
    """Note a placeholder (refused by :func:`check_secrets`) or a weak secret
    (warned about), each as one line that names the key and the fix, never
    the value."""
    where = "" if origin == f"{label}.{s.key}" else f" (from {origin})"
    values = [v for v in (value if isinstance(value, list) else [value]) if v]  # "": unset
    if any(placeholder(v) for v in values):
        off = (f", or remove [{s.section}] to switch {s.section} off"
               if s.section not in SECTIONS else "")  # a storefront's
        placeholders.append(f"{label}.{s.key}{where} is a placeholder, public in the example "
                            f"config, so anyone could sign with it: {_fix_hint(s)}{off}")
    elif any(len(v) < WEAK_SECRET_LENGTH for v in values):
        weak.append(f"{label}.{s.key}{where} is shorter than {WEAK_SECRET_LENGTH} characters, "
                    f"easy to guess: {_fix_hint(s)} to a longer one (letters and digits)")


def check_secrets(cfg: Config) -> None:
    """Refuse a config whose secret is a placeholder: ``serve``, ``check-config``
    and ``replay`` call this (reading commands need no secret)."""
    if cfg.placeholders:
        raise ConfigError(cfg.placeholders[0])


def _check_unique(section: str, shops: tuple[Any, ...]) -> None:
    """Two shops of one storefront must not claim the same shop."""
    from .storefronts import STOREFRONTS
    storefront = STOREFRONTS[section]
    seen: dict[str, int] = {}
    for n, shop in enumerate(shops):
        ident = storefront.shop_id(shop)
        if ident in seen:
            raise ConfigError(f"{section}[{seen[ident]}] and {section}[{n}] have the same "
                              f"{storefront.shop_key}: give each shop its own")
        seen[ident] = n


def readable_by_others(cfg: Config) -> bool:
    """Whether the config file holds a secret and anyone on the machine can read it."""
    if not cfg.path or not cfg.secrets_in_file:
        return False
    try:
        return bool(os.stat(cfg.path).st_mode & 0o004)
    except OSError:
        return False


def jobs_url_for(url: str) -> str:
    """The job store's synchronous URL for a database URL: a sibling SQLite
    file (APScheduler's SQLAlchemyJobStore is synchronous; on the same file
    as the writer their transactions would block each other)."""
    path = url[len("sqlite+aiosqlite:///"):]
    return f"sqlite:///{path}.jobs.db"


def describe() -> str:
    """Every setting with its default and help, for ``edx-hooks settings``."""
    lines = []
    for s in settings():
        default = "(required)" if s.default is REQUIRED else repr(s.default)
        lines.append(f"{s.name:28} {default:32} {s.help}  [{s.env}]")
    return "\n".join(lines)


def in_force(cfg: Config) -> list[dict[str, Any]]:
    """Every setting of ``cfg``: its value in force (a secret masked), where
    it came from (default, file, environment) and its help; a storefront
    without a shop, or an empty catalog, is one line saying so."""
    tables: dict[str, list[Any]] = {name: [getattr(cfg, name)] for name in SECTIONS}
    tables["products"] = list(cfg.products)
    tables.update({name: list(shops) for name, shops in cfg.shops.items()})
    found = []
    for section, cls in {**SECTIONS, **LISTS, **storefront_sections()}.items():
        several = section not in SECTIONS
        if several and not tables[section]:
            absent = "no catalog" if section == "products" else "off: no section"
            found.append({"setting": section, "secret": False, "value": None,
                          "source": absent, "help": "", "env": ""})
            continue
        for n, table in enumerate(tables[section]):
            label = section if len(tables[section]) == 1 else f"{section}[{n}]"
            for s in declared(section, cls):
                value = getattr(table, s.key)
                found.append({"setting": f"{label}.{s.key}", "secret": s.secret,
                              "value": "<hidden>" if s.secret and value else value,
                              "source": cfg.sources.get(f"{label}.{s.key}", "default"),
                              "help": s.help, "env": s.env})
    return found
