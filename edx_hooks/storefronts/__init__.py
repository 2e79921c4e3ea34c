"""Storefronts: what each shop sends and how to tell a genuine order.

One module per storefront, each declaring a :class:`Storefront` as
``STOREFRONT``: its name, its endpoints (path, topics, what each does), its
shop settings and ``receive(headers, body, shops, endpoint)``, a pure
function (no I/O) that returns an :class:`Outcome`: the status to answer,
the reason to record and, when the delivery is accepted, the order or the
unenrollment to store. The routes, the config sections and the command
line follow from :data:`STOREFRONTS`, which holds every module of this
package that declares one: adding a storefront is adding a module (and its
tests, and its part of the README and of the example config, which the
tests check against it).
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    Endpoint,
    Outcome,
    Storefront,
    external_id,
    ignored,
    line_items,
    make_item,
    parse_json_object,
    rejected,
    signature_valid,
)


def _discover() -> dict[str, Storefront]:
    found = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        declared = getattr(importlib.import_module(f"{__name__}.{module}"), "STOREFRONT", None)
        if isinstance(declared, Storefront):
            found[declared.name] = declared
    return found


#: every storefront, by name
STOREFRONTS: dict[str, Storefront] = _discover()

__all__ = ["STOREFRONTS", "Endpoint", "Outcome", "Storefront", "external_id", "ignored",
           "line_items", "make_item", "parse_json_object", "rejected", "signature_valid"]
