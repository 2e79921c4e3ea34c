"""Configuration: every setting declared once, read from one TOML file and the
environment, validated before anything starts.

Each setting has a section, a key, a parser, a default (or none, when it is
required) and a help line. ``EDX_HOOKS_<SECTION>_<KEY>`` in the environment
wins over the file, so secrets can stay out of it. Any problem raises
:class:`ConfigError` whose message is one line naming the key and the fix.
"""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

ENV_PREFIX = "EDX_HOOKS_"
REQUIRED = object()


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line for the operator."""


# --- parsers: take a TOML value or an environment string, return the value or
# raise ValueError with the fix.

def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _integer(low: int, high: int) -> Callable[[Any], int]:
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


def _number(low: float, high: float) -> Callable[[Any], float]:
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


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string in quotes")
    return value


def _nonempty(value: Any) -> str:
    value = _text(value).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _secret(value: Any) -> str:
    # An empty HMAC key is a key anyone can use.
    value = _text(value)
    if not value.strip():
        raise ValueError("must not be empty (an empty signing key is a key anyone can use)")
    return value


def _http_url(value: Any) -> str:
    value = _nonempty(value)
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as https://lms.example.org")
    if parts.query or parts.fragment:
        raise ValueError("must be the LMS root URL, without query or fragment")
    return value.rstrip("/")


def _source_url(value: Any) -> str:
    value = _nonempty(value)
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be the shop's http(s) home URL such as https://shop.example/")
    return value


def _syslog_address(value: Any) -> str:
    value = _nonempty(value)
    if value.startswith("/"):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be a socket path such as /dev/log, or host:port such as "
                         "logs.example.org:514")
    return value


def _shop_domain(value: Any) -> str:
    value = _nonempty(value).lower()
    if "/" in value or ":" in value or " " in value:
        raise ValueError("must be the bare shop domain, such as my-school.myshopify.com")
    return value


def _database_url(value: Any) -> str:
    value = _nonempty(value)
    if "://" not in value:
        raise ValueError("must be an SQLAlchemy async URL such as sqlite+aiosqlite:///edx-hooks.db")
    if value.startswith("sqlite") and not value.startswith("sqlite+aiosqlite://"):
        raise ValueError("SQLite needs the async driver: sqlite+aiosqlite:///path/to/edx-hooks.db")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        value = _text(value).strip().lower()
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(repr(c) for c in choices))
        return value
    return parse


def _sku_prefix(value: Any) -> str:
    return _text(value).lstrip("/")


@dataclass(frozen=True)
class Setting:
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


SETTINGS: tuple[Setting, ...] = (
    Setting("server", "address", _nonempty, "127.0.0.1", "address to listen on"),
    Setting("server", "port", _integer(1, 65535), 8090, "TCP port to listen on"),
    Setting("server", "xheaders", _boolean, False,
            "trust X-Real-IP / X-Forwarded-For (turn on behind nginx, off otherwise)"),
    Setting("server", "max_body_size", _integer(1024, 256 * 1024 * 1024), 2 * 1024 * 1024,
            "largest accepted request body in bytes; larger ones get 413"),
    Setting("server", "client_timeout_seconds", _number(1, 3600), 10.0,
            "a client sending its headers or body slower than this is cut off"),
    Setting("retention", "rejected_days", _number(0.01, 36500), 30.0,
            "rejected deliveries are deleted after this many days"),
    Setting("retention", "rejected_body_bytes", _integer(0, 16 * 1024 * 1024), 65536,
            "how much of a rejected delivery's body is kept"),
    Setting("database", "url", _database_url, "sqlite+aiosqlite:///edx-hooks.db",
            "SQLAlchemy async URL of the database"),
    Setting("database", "jobs_url", _text, "",
            "synchronous SQLAlchemy URL of the APScheduler job store; "
            "empty = a sibling file <database>.jobs.db for SQLite"),
    Setting("database", "sqlite_synchronous", _choice("full", "normal"), "full",
            "SQLite PRAGMA synchronous: full survives a power cut, normal only a crash"),
    Setting("lms", "base_url", _http_url, REQUIRED, "root URL of the Open edX LMS"),
    Setting("lms", "client_id", _nonempty, REQUIRED, "OAuth2 client id (global-staff user)"),
    Setting("lms", "client_secret", _secret, REQUIRED, "OAuth2 client secret"),
    Setting("lms", "sku_prefix", _sku_prefix, "",
            "path prefix of SKU redirects on the LMS, e.g. 'sku/'"),
    Setting("lms", "auto_enroll", _boolean, True,
            "enroll learners without an account when they register"),
    Setting("lms", "email_students", _boolean, True, "let the LMS email the learner"),
    Setting("lms", "timeout_seconds", _number(0.1, 300), 10.0,
            "connect and request timeout of every LMS call"),
    Setting("lms", "max_calls_per_minute", _integer(0, 100000), 100,
            "pace of enrollment calls (the LMS throttles at about 120 a minute); 0 = unpaced"),
    Setting("retry", "attempts", _integer(1, 100), 3, "LMS attempts per line item in all"),
    Setting("retry", "delay_seconds", _number(0, 86400), 180.0,
            "seconds between attempts after a transient failure"),
    Setting("retry", "sweep_seconds", _number(0.1, 3600), 60.0,
            "how often pending items without a job (e.g. retried with the CLI) are picked up"),
    Setting("logging", "level", _choice("debug", "info", "warning", "error"), "info",
            "log level (learner emails appear only at debug)"),
    Setting("logging", "format", _choice("text", "json"), "text",
            "text: event=... key=value lines; json: one JSON object per line"),
    Setting("logging", "syslog", _boolean, False,
            "log to syslog (facility local0) instead of stderr"),
    Setting("logging", "syslog_address", _syslog_address, "/dev/log",
            "syslog socket path, or host:port for UDP"),
    Setting("shopify", "shop_domain", _shop_domain, REQUIRED,
            "the shop's *.myshopify.com domain"),
    Setting("shopify", "secret", _secret, REQUIRED, "the webhook signing secret"),
    Setting("woocommerce", "source", _source_url, REQUIRED,
            "the shop's home URL, as in X-WC-Webhook-Source (e.g. https://shop.example/)"),
    Setting("woocommerce", "secret", _secret, REQUIRED, "the webhook's secret"),
    Setting("woocommerce", "require_payment", _boolean, False,
            "answer 402 and skip orders without date_paid_gmt; enroll on a paid update"),
)

#: Sections whose absence switches a storefront off.
OPTIONAL_SECTIONS = ("shopify", "woocommerce")
SECTIONS = tuple(dict.fromkeys(s.section for s in SETTINGS))


def _fix_hint(setting: Setting) -> str:
    return f"set {setting.key} in [{setting.section}] or {setting.env}"


def load(path: str | None, environ: Mapping[str, str] | None = None) -> SimpleNamespace:
    """Read ``path`` (may be None) and ``environ``; return a namespace per
    section (``None`` for a storefront that is switched off)."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(
                f"config file {path} not found: pass --config with an existing file") from None
        except PermissionError:
            raise ConfigError(
                f"config file {path} is not readable: check its owner and mode") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(
                f"config file {path} is not valid TOML ({e}): fix the syntax") from None

    known = {(s.section, s.key) for s in SETTINGS}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}] in {path}: remove it "
                              f"(known sections: {', '.join(SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{section} must be a [{section}] table: write it as a section")
        for key in table:
            if (section, key) not in known:
                raise ConfigError(f"unknown key {section}.{key} in {path}: remove it or fix its "
                                  f"spelling (see conf/edx-hooks.example.toml)")

    env_names = {s.env: s for s in SETTINGS}
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in env_names and name != ENV_PREFIX + "CONFIG":
            if any(name.startswith(f"{ENV_PREFIX}{sec.upper()}_") for sec in SECTIONS):
                raise ConfigError(
                    f"unknown environment variable {name}: unset it or fix its spelling")

    sections: dict[str, SimpleNamespace | None] = {}
    secrets_in_file: list[str] = []
    for section in SECTIONS:
        members = [s for s in SETTINGS if s.section == section]
        present = section in data or any(s.env in environ for s in members)
        if section in OPTIONAL_SECTIONS and not present:
            sections[section] = None
            continue
        values = {}
        for s in members:
            if s.env in environ:
                raw, origin = environ[s.env], s.env
            elif s.key in data.get(section, {}):
                raw, origin = data[section][s.key], s.name
                if s.parse is _secret:
                    secrets_in_file.append(s.name)
            elif s.default is REQUIRED:
                raise ConfigError(f"{s.name} is required ({s.help}): {_fix_hint(s)}")
            else:
                values[s.key] = s.default
                continue
            try:
                values[s.key] = s.parse(raw)
            except ValueError as e:
                shown = "<hidden>" if "secret" in s.key else repr(raw)
                where = "" if origin == s.name else f" (from {origin})"
                raise ConfigError(f"{s.name} = {shown}{where} {e}: {_fix_hint(s)}") from None
        sections[section] = SimpleNamespace(**values)

    cfg = SimpleNamespace(**sections)
    cfg.database.jobs_url = cfg.database.jobs_url or jobs_url_for(cfg.database.url)
    cfg.storefronts = [name for name in OPTIONAL_SECTIONS if sections[name] is not None]
    cfg.path = path
    cfg.secrets_in_file = secrets_in_file
    return cfg


def readable_by_others(cfg: SimpleNamespace) -> bool:
    """Whether the config file holds a secret and anyone on the machine can read it."""
    if not cfg.path or not cfg.secrets_in_file:
        return False
    try:
        return bool(os.stat(cfg.path).st_mode & 0o004)
    except OSError:
        return False


def jobs_url_for(url: str) -> str:
    """The job store's synchronous URL for a database URL.

    APScheduler's SQLAlchemyJobStore is synchronous; on the same SQLite file as
    the async writer their transactions would block each other, so SQLite
    gets a sibling file.
    """
    if url.startswith("sqlite+aiosqlite://"):
        path = url[len("sqlite+aiosqlite:///"):]
        if not path or path == ":memory:":
            return "sqlite://"
        return f"sqlite:///{path}.jobs.db"
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def describe() -> str:
    """Every setting with its default and help, for ``edx-hooks config --help``."""
    lines = []
    for s in SETTINGS:
        default = "(required)" if s.default is REQUIRED else repr(s.default)
        lines.append(f"{s.name:28} {default:32} {s.help}  [{s.env}]")
    return "\n".join(lines)
