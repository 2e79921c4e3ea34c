"""Configuration: every setting declared once, read from one TOML file and the
environment, validated before anything starts.

Each setting has a section, a key, a parser, a default (or none, when it is
required) and a help line. ``EDX_HOOKS_<SECTION>_<KEY>`` in the environment
wins over the file, so secrets can stay out of it. Any problem raises
:class:`ConfigError` whose message is one line naming the key and the fix.
"""

from __future__ import annotations

import json
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


def _secrets(value: Any) -> list[str]:
    """One secret, or several (a list; in the environment a JSON array) during
    a rotation: a delivery is genuine if any of them verifies it."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("must be a secret, or a JSON array of secrets") from None
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("must hold at least one secret")
    return [_secret(v) for v in values]


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
        raise ValueError("must be an SQLite URL such as sqlite+aiosqlite:///edx-hooks.db")
    if value.startswith("sqlite") and not value.startswith("sqlite+aiosqlite://"):
        raise ValueError("SQLite needs the async driver: sqlite+aiosqlite:///path/to/edx-hooks.db")
    if not value.startswith("sqlite+aiosqlite:///") or value.rstrip("/").endswith(":memory:") \
            or value == "sqlite+aiosqlite:///":
        raise ValueError("must name an SQLite file, such as sqlite+aiosqlite:///edx-hooks.db "
                         "(other databases are not supported)")
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
    Setting("retention", "rejected_max_bytes", _integer(0, 2**40), 32 * 1024 * 1024,
            "bodies of rejected deliveries kept in all; past it, only their first 1 KiB"),
    Setting("database", "url", _database_url, "sqlite+aiosqlite:///edx-hooks.db",
            "the SQLite file (sqlite+aiosqlite:///path)"),
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
            "how often pending items that lost their job are looked for"),
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
    Setting("shopify", "secret", _secrets, REQUIRED,
            "the webhook signing secret; a list of secrets while rotating"),
    Setting("shopify", "require_payment", _boolean, False,
            "enroll an order only once its financial_status is paid"),
    Setting("shopify", "accept_test_orders", _boolean, True,
            "enroll orders Shopify marks test: true"),
    Setting("shopify", "unenroll_on_refund", _boolean, False,
            "unenroll the refunded or cancelled line items (destructive: off by default)"),
    Setting("woocommerce", "source", _source_url, REQUIRED,
            "the shop's home URL, as in X-WC-Webhook-Source (e.g. https://shop.example/)"),
    Setting("woocommerce", "secret", _secrets, REQUIRED,
            "the webhook's secret; a list of secrets while rotating"),
    Setting("woocommerce", "require_payment", _boolean, False,
            "record orders without date_paid_gmt as awaiting-payment; enroll on a paid update"),
    Setting("woocommerce", "unenroll_on_refund", _boolean, False,
            "unenroll the items of a refunded or cancelled order (destructive: off by default)"),
)

#: Sections whose absence switches a storefront off.
OPTIONAL_SECTIONS = ("shopify", "woocommerce")
SECTIONS = tuple(dict.fromkeys(s.section for s in SETTINGS))


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


def _tables(section: str, value: Any, path: str | None) -> list[dict[str, Any]]:
    """A section's tables: one ``[section]``, or ``[[section]]`` for storefronts."""
    if isinstance(value, dict):
        tables = [value]
    elif isinstance(value, list) and section in OPTIONAL_SECTIONS \
            and all(isinstance(t, dict) for t in value):
        tables = value
    else:
        form = f"[{section}] or [[{section}]]" if section in OPTIONAL_SECTIONS else f"[{section}]"
        raise ConfigError(f"{section} must be written as {form}: fix it in {path}")
    known = {s.key for s in SETTINGS if s.section == section}
    for table in tables:
        for key in table:
            if key not in known:
                raise ConfigError(f"unknown key {section}.{key} in {path}: remove it or fix its "
                                  f"spelling (see conf/edx-hooks.example.toml)")
    return tables


def _environment(environ: Mapping[str, str]) -> dict[tuple[str, int | None, str], str]:
    """EDX_HOOKS_<SECTION>_<KEY>, and EDX_HOOKS_<STOREFRONT>_<N>_<KEY> for the
    N-th (from 0) of several shops, keyed by (section, N or None, key)."""
    found: dict[tuple[str, int | None, str], str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for section in sorted(SECTIONS, key=len, reverse=True):
            if not rest.startswith(section + "_"):
                continue
            key, index = rest[len(section) + 1:], None
            head, _, tail = key.partition("_")
            if section in OPTIONAL_SECTIONS and head.isdigit() and tail:
                key, index = tail, int(head)
            if not any(s.section == section and s.key == key for s in SETTINGS):
                raise ConfigError(
                    f"unknown environment variable {name}: unset it or fix its spelling")
            found[(section, index, key)] = value
            break
        else:
            if any(rest.startswith(sec.split("_")[0]) for sec in SECTIONS):
                raise ConfigError(
                    f"unknown environment variable {name}: unset it or fix its spelling")
    return found


def load(path: str | None, environ: Mapping[str, str] | None = None) -> SimpleNamespace:
    """Read ``path`` (may be None) and ``environ``; return a namespace per
    section. A storefront section is a list of shops (``None`` when it is
    switched off)."""
    environ = os.environ if environ is None else environ
    data = _read_file(path)
    for section in data:
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}] in {path}: remove it "
                              f"(known sections: {', '.join(SECTIONS)})")
    tables = {section: _tables(section, value, path) for section, value in data.items()}
    env = _environment(environ)

    sections: dict[str, Any] = {}
    secrets_in_file: list[str] = []
    for section in SECTIONS:
        members = [s for s in SETTINGS if s.section == section]
        found = tables.get(section, [])
        indexes = {i for (sec, i, _) in env if sec == section and i is not None}
        count = max([len(found), *(i + 1 for i in indexes)], default=0)
        if not count and any(sec == section for (sec, _, _) in env):
            count = 1
        if section in OPTIONAL_SECTIONS and not count:
            sections[section] = None
            continue
        if section in OPTIONAL_SECTIONS and count > 1 and any(
                sec == section and i is None for (sec, i, _) in env):
            raise ConfigError(f"there are {count} [[{section}]] shops: name one in the "
                              f"environment as {ENV_PREFIX}{section.upper()}_<N>_<KEY>, "
                              "N counting from 0")
        shops = []
        for n in range(max(count, 1)):
            table = found[n] if n < len(found) else {}
            label = section if count <= 1 else f"{section}[{n}]"
            values = {}
            for s in members:
                env_key = next((k for k in ((section, n, s.key), (section, None, s.key))
                                if k in env), None)
                if env_key is not None:
                    raw = env[env_key]
                    origin = (f"{ENV_PREFIX}{section.upper()}_{n}_{s.key.upper()}"
                              if env_key[1] is not None else s.env)
                elif s.key in table:
                    raw, origin = table[s.key], f"{label}.{s.key}"
                    if s.parse in (_secret, _secrets):
                        secrets_in_file.append(f"{label}.{s.key}")
                elif s.default is REQUIRED:
                    raise ConfigError(f"{label}.{s.key} is required ({s.help}): "
                                      f"{_fix_hint(s)}")
                else:
                    values[s.key] = s.default
                    continue
                try:
                    values[s.key] = s.parse(raw)
                except ValueError as e:
                    shown = "<hidden>" if "secret" in s.key else repr(raw)
                    where = "" if origin == f"{label}.{s.key}" else f" (from {origin})"
                    raise ConfigError(f"{label}.{s.key} = {shown}{where} {e}: "
                                      f"{_fix_hint(s)}") from None
            shops.append(SimpleNamespace(**values))
        sections[section] = shops if section in OPTIONAL_SECTIONS else shops[0]

    cfg = SimpleNamespace(**sections)
    for name in OPTIONAL_SECTIONS:
        _check_unique(name, cfg)
    cfg.database.jobs_url = cfg.database.jobs_url or jobs_url_for(cfg.database.url)
    cfg.storefronts = [name for name in OPTIONAL_SECTIONS if sections[name] is not None]
    cfg.path = path
    cfg.secrets_in_file = secrets_in_file
    return cfg


def _check_unique(section: str, cfg: SimpleNamespace) -> None:
    """Two shops of one storefront must not claim the same domain or source."""
    shops = getattr(cfg, section) or []
    key = "shop_domain" if section == "shopify" else "source"
    seen: dict[str, int] = {}
    for n, shop in enumerate(shops):
        ident = shop_key(section, getattr(shop, key))
        if ident in seen:
            raise ConfigError(f"{section}[{seen[ident]}] and {section}[{n}] have the same "
                              f"{key}: give each shop its own")
        seen[ident] = n


def shop_key(section: str, value: str) -> str:
    if section == "woocommerce":
        from .storefronts.woocommerce import normalize_source
        return normalize_source(value)
    return value.lower()


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
