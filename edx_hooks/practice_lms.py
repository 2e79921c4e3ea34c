"""A practice LMS for ``edx-hooks demo``: the one place in the package that
knows it is pretend.

It speaks just enough of the Open edX contract (docs: protocols.md) for the
service to enroll through it unchanged: OAuth2 client credentials issuing
JWTs, and the bulk enrollment view, which enrolls every well-formed email
in every well-formed course id. It listens on loopback only, keeps nothing
on disk, and its client secret is made afresh each run. (The tests' stand-in,
``tests/standin_lms.py``, is the full one: modes, accounts, throttling,
failures on demand.)
"""

from __future__ import annotations

import itertools
import re
import secrets

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .lms import BULK_ENROLL_PATH, TOKEN_PATH
from .setting_types import is_course_id

LOOPBACK = "127.0.0.1"


class PracticeLMS:
    """Start with :meth:`start`; :attr:`enrolled` holds (email, course id)."""

    def __init__(self) -> None:
        self.client_id = "edx-hooks-demo"
        self.client_secret = secrets.token_urlsafe(24)
        self.tokens: set[str] = set()
        self.enrolled: list[tuple[str, str]] = []
        self.url = ""
        self._serial = itertools.count(1)
        self._server: HTTPServer | None = None

    async def start(self) -> PracticeLMS:
        app = web.Application([(TOKEN_PATH, _Token, {"lms": self}),
                               (BULK_ENROLL_PATH, _BulkEnroll, {"lms": self})])
        self._server = HTTPServer(app)
        [sock] = bind_sockets(0, LOOPBACK)  # a free port, on loopback alone
        self._server.add_socket(sock)
        self.url = f"http://{LOOPBACK}:{sock.getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None


class _Handler(web.RequestHandler):
    def initialize(self, lms: PracticeLMS) -> None:
        self.lms = lms

    def check_xsrf_cookie(self) -> None:
        pass

    def arguments(self) -> dict[str, str]:
        return {k: v[-1].decode() for k, v in self.request.body_arguments.items()}


class _Token(_Handler):
    def post(self) -> None:
        form = self.arguments()
        if (form.get("client_id"), form.get("client_secret")) != (self.lms.client_id,
                                                                  self.lms.client_secret):
            self.set_status(401)
            self.finish({"error": "invalid_client"})
            return
        token = f"practice-jwt-{next(self.lms._serial)}"
        self.lms.tokens.add(token)
        self.finish({"access_token": token, "token_type": "JWT", "expires_in": 3600,
                     "scope": "read write"})


class _BulkEnroll(_Handler):
    def post(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme != "JWT" or token not in self.lms.tokens:
            self.set_status(401)
            self.finish({"detail": "Authentication credentials were not provided."})
            return
        form = self.arguments()
        courses = [c for c in form.get("courses", "").split(",") if c]
        emails = [e.strip() for e in re.split(r"[\n,]", form.get("identifiers", ""))
                  if e.strip()]
        if not courses or not emails or not all(is_course_id(c) for c in courses):
            self.set_status(400)
            self.finish({"error": "missing or malformed courses or identifiers"})
            return
        enroll = form.get("action") == "enroll"
        answer: dict = {"action": form.get("action"), "courses": {}}
        for course in courses:
            results = []
            for email in emails:
                if "@" not in email:
                    results.append({"identifier": email, "invalidIdentifier": True})
                    continue
                if enroll:
                    self.lms.enrolled.append((email, course))
                results.append({"identifier": email,
                                "after": {"user": True, "enrollment": enroll,
                                          "allowed": False, "auto_enroll": False}})
            answer["courses"][course] = {"action": form.get("action"), "results": results}
        self.finish(answer)
