"""The staff's web console at ``/webhooks/console/``: sign in with Open edX,
see every order and delivery, retry and replay (issue 22).

Off unless ``[console]`` names a client: then every console path answers 404.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..lms import LMSClient
from ..store import Store
from . import base
from . import handlers as h

PREFIX = "/webhooks/console"


def routes(cfg: Config, store: Store, lms: LMSClient,
           schedule: Callable[[list[int]], None]) -> list[tuple[Any, ...]]:
    """The console's routes for ``make_app``: its pages, or 404 when it is off."""
    if not cfg.console.enabled:
        return [(rf"{PREFIX}(?:/.*)?", base.Off)]
    # without console.cookie_secret: a new key at each start, so that every
    # session ends when the service restarts
    context = base.Context(cfg=cfg, store=store, lms=lms, schedule=schedule,
                        cookie_secret=cfg.console.cookie_secret or secrets.token_urlsafe(32))
    args = {"context": context}
    return [
        (rf"{PREFIX}/?", h.Overview, args),
        (rf"{PREFIX}/sign-in", h.SignIn, args),
        (rf"{PREFIX}/signed-in", h.SignedIn, args),
        (rf"{PREFIX}/sign-out", h.SignOut, args),
        (rf"{PREFIX}/orders", h.Orders, args),
        (rf"{PREFIX}/orders/([0-9]+)", h.Order, args),
        (rf"{PREFIX}/orders/([0-9]+)/retry", h.Retry, args),
        (rf"{PREFIX}/deliveries/([0-9]+)/replay", h.Replay, args),
        (rf"{PREFIX}/rejected", h.Rejected, args),
        (rf"{PREFIX}/static/(console\.css)", base.Static, {"path": base.STATIC}),
        (rf"{PREFIX}/.*", base.NotFound, args),
    ]
