"""What every console page shares: the session (a signed cookie), the
access rule, XSRF, templates, and error pages that never show a traceback."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

from tornado import web

from .. import __version__, logs
from ..config import Config
from ..lms import LMSClient
from ..store import FAILED, UNENROLL_FAILED, UNKNOWN, Store
from . import signin

log = logging.getLogger("edx_hooks.console")

HERE = os.path.dirname(__file__)
STATIC = os.path.join(HERE, "static")
SESSION = "edx_hooks_console"
PENDING = "edx_hooks_console_signin"
#: how long a browser has to come back from the LMS's sign-in
SIGNIN_MINUTES = 10
PAGE_SIZE = 50
#: header names whose values are never shown (signatures, credentials)
MASKED = ("hmac", "signature", "authorization", "cookie", "token", "secret", "api-key")
RETRYABLE = (FAILED, UNENROLL_FAILED, UNKNOWN)


@dataclass
class Context:
    """What every console handler needs, handed in by ``make_app``."""
    cfg: Config
    store: Store
    lms: LMSClient
    schedule: Any
    cookie_secret: str


class Off(web.RequestHandler):
    """The console is not configured: 404, and nothing stored."""

    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish("The web console is off: configure [console] to turn it on.\n")

    def check_xsrf_cookie(self) -> None:
        pass


class Static(web.StaticFileHandler):
    pass


def masked(headers: str | None) -> list[tuple[str, str]]:
    """A delivery's stored headers, with signatures and credentials hidden."""
    try:
        found = json.loads(headers or "{}")
    except ValueError:
        return []
    return [(k, "•••• (hidden)" if any(m in k.lower() for m in MASKED) else str(v))
            for k, v in (found.items() if isinstance(found, dict) else [])]


def when(value: dt.datetime | float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = dt.datetime.fromtimestamp(value, dt.UTC).replace(tzinfo=None)
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


class Page(web.RequestHandler):
    """A console page: the session, the access rule, templates, error pages."""

    #: whether the page is for signed-in staff only
    staff_only = True

    def initialize(self, context: Context) -> None:
        self.context = context
        self.cfg = context.cfg
        self.store = context.store
        self.person: signin.Person | None = None

    def get_template_path(self) -> str:
        return os.path.join(HERE, "templates")

    # signed cookies use the console's key, not an application setting
    def require_setting(self, name: str, feature: str = "this feature") -> None:
        if name != "cookie_secret":
            super().require_setting(name, feature)

    def _key(self) -> str:
        return self.context.cookie_secret

    def set_secure(self, name: str, value: str, **kw: Any) -> None:
        self.set_cookie(name, web.create_signed_value(self._key(), name, value).decode(),
                        path="/webhooks/console/", httponly=True, samesite="Lax",
                        secure=self.request.protocol == "https", **kw)

    def get_secure(self, name: str, max_age_days: float) -> str | None:
        raw = self.get_cookie(name)
        if not raw:
            return None
        value = web.decode_signed_value(self._key(), name, raw, max_age_days=max_age_days)
        return value.decode() if value else None

    def get_template_namespace(self) -> dict[str, Any]:
        ns = super().get_template_namespace()
        ns.update(person=self.person, when=when, version=__version__,
                  prefix="/webhooks/console", quote=urllib.parse.quote)
        return ns

    async def prepare(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Content-Security-Policy",
                        "default-src 'none'; style-src 'self'; img-src 'self'; "
                        "form-action 'self'; frame-ancestors 'none'")
        expired = False
        raw = self.get_cookie(SESSION)
        if raw:
            value = self.get_secure(SESSION, self.cfg.console.session_hours / 24)
            if value:
                data = json.loads(value)
                self.person = signin.Person(data["u"], data.get("n", ""), data.get("e", ""),
                                            bool(data.get("a")))
            else:
                expired = True
        if self.request.method not in ("GET", "HEAD") and self.person is not None:
            try:
                self.check_xsrf_cookie()
            except web.HTTPError:
                logs.event(log, logs.WARNING, "console.refused", why="xsrf",
                           user=self.person.username, path=self.request.path)
                self.page(403, "message.html", title="This form has expired",
                          text="The form was not sent from a console page open now (its "
                               "security token is missing or stale), so nothing was done. "
                               "Open the page again and repeat what you did.",
                          link=("Back to the overview", "/webhooks/console/"))
                return
        if not self.staff_only:
            return
        if self.person is None:
            if expired or self.request.method not in ("GET", "HEAD"):
                self.clear_cookie(SESSION, path="/webhooks/console/")
                self.page(401, "message.html", title="Please sign in again",
                          text="Your console session has ended (sessions last "
                               f"{self.cfg.console.session_hours:g} hours, and end when the "
                               "service restarts without console.cookie_secret), so nothing "
                               "was done.",
                          link=("Sign in with Open edX", "/webhooks/console/sign-in?next="
                                + urllib.parse.quote(self.request.uri or "")))
            else:
                self.redirect("/webhooks/console/sign-in?next="
                              + urllib.parse.quote(self.request.uri or ""))
            return
        if not self.is_staff():
            logs.event(log, logs.WARNING, "console.refused", why="not-staff",
                       user=self.person.username)
            self.page(403, "forbidden.html", title="No access to the console")

    def is_staff(self) -> bool:
        return self.person is not None and (
            self.person.administrator or self.person.username in self.cfg.console.staff_usernames)

    def page(self, status: int, template: str, **values: Any) -> None:
        self.set_status(status)
        self.render(template, **values)

    def bad(self, status: int, title: str, text: str) -> None:
        self.page(status, "message.html", title=title, text=text,
                  link=("Back to the overview", "/webhooks/console/"))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # never a traceback: a page that says what happened
        if status_code == 404:
            self.render("message.html", title="Not found",
                        text="There is no console page here.",
                        link=("Back to the overview", "/webhooks/console/"))
            return
        if status_code < 500:
            self.render("message.html", title=f"Bad request ({status_code})",
                        text="The console cannot read this request: "
                             f"{self._reason}.", link=("Back to the overview",
                                                        "/webhooks/console/"))
            return
        self.render("message.html", title="Something went wrong",
                    text="The console could not show this page (the service's log says "
                         "why, event=console.error). Deliveries are not affected.",
                    link=("Back to the overview", "/webhooks/console/"))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            return
        logs.event(log, logs.ERROR, "console.error", path=self.request.path,
                   exc_info=(typ, value, tb))

    def int_arg(self, name: str, default: int, low: int = 0, high: int = 10**9) -> int | None:
        raw = self.get_argument(name, "")
        if not raw:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            self.bad(400, "That is not a page of this list",
                     f"{name} must be a whole number from {low} to {high}, not {raw[:40]!r}.")
            return None
        return int(raw)


class NotFound(Page):
    async def get(self) -> None:
        self.bad(404, "Not found", "There is no console page here.")

    post = get


