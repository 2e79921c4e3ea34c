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

Layers: the setting types, parsers and sections live in
:mod:`edx_hooks.setting_types` (re-exported here), which imports nothing from
the package, so the storefronts declare their shops' settings with them. This
loader sits above the storefronts: it reads the sections of the registry it
is handed (``storefronts=``; the CLI passes :data:`STOREFRONTS`, which is
also the default).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError  # re-exported: config.ConfigError
from .setting_types import (  # noqa: F401  (re-exported: config.<name> is the way in)
    COURSE_ID_RE,
    ENV_PREFIX,
    LISTS,
    LMS,
    MODES,
    OLD_COURSE_ID_RE,
    REQUIRED,
    SECTIONS,
    WEAK_SECRET_LENGTH,
    Console,
    Database,
    Logging,
    Product,
    Reconcile,
    Retention,
    Retry,
    Server,
    Setting,
    boolean,
    choice,
    course_ids,
    database_url,
    declared,
    http_url,
    integer,
    is_course_id,
    is_email,
    is_secret,
    jobs_url,
    mode,
    names,
    nonempty,
    number,
    one_or_list,
    optional_secret,
    optional_url,
    placeholder,
    public_url,
    secret,
    secrets,
    setting,
    sku_prefix,
    syslog_address,
    text,
    usernames,
)
from .storefronts import STOREFRONTS, Storefront

#: storefronts by name, as :data:`edx_hooks.storefronts.STOREFRONTS`
Registry = Mapping[str, Storefront]


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


def storefront_sections(storefronts: Registry = STOREFRONTS) -> dict[str, type]:
    """The storefronts' sections (several shops each, absent = off), by name."""
    return {name: sf.settings for name, sf in storefronts.items()}


def settings(storefronts: Registry = STOREFRONTS) -> tuple[Setting, ...]:
    """Every setting: the sections', the catalog's, then the storefronts'."""
    every = {**SECTIONS, **LISTS, **storefront_sections(storefronts)}
    return tuple(s for name, cls in every.items() for s in declared(name, cls))


def _fix_hint(s: Setting) -> str:
    return f"set {s.key} in [{s.section}] or {s.env}"


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


def load(path: str | None, environ: Mapping[str, str] | None = None,
         storefronts: Registry = STOREFRONTS) -> Config:
    """Read ``path`` (may be None) and ``environ``; return the :class:`Config`.
    ``storefronts``: the registry whose shops' sections are read (who
    assembles the service passes :data:`edx_hooks.storefronts.STOREFRONTS`)."""
    environ = os.environ if environ is None else environ
    several_tables = {**LISTS, **storefront_sections(storefronts)}
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
        _check_unique(section, section_shops, storefronts[section])
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


def _check_unique(section: str, shops: tuple[Any, ...], storefront: Storefront) -> None:
    """Two shops of one storefront must not claim the same shop."""
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


def describe(storefronts: Registry = STOREFRONTS) -> str:
    """Every setting with its default and help, for ``edx-hooks settings``."""
    lines = []
    for s in settings(storefronts):
        default = "(required)" if s.default is REQUIRED else repr(s.default)
        lines.append(f"{s.name:28} {default:32} {s.help}  [{s.env}]")
    return "\n".join(lines)


def in_force(cfg: Config, storefronts: Registry = STOREFRONTS) -> list[dict[str, Any]]:
    """Every setting of ``cfg``: its value in force (a secret masked), where
    it came from (default, file, environment) and its help; a storefront
    without a shop, or an empty catalog, is one line saying so."""
    tables: dict[str, list[Any]] = {name: [getattr(cfg, name)] for name in SECTIONS}
    tables["products"] = list(cfg.products)
    tables.update({name: list(shops) for name, shops in cfg.shops.items()})
    found = []
    for section, cls in {**SECTIONS, **LISTS, **storefront_sections(storefronts)}.items():
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
