"""A stand-in Open edX LMS: a small Tornado app on a free port that speaks the
real contract (protocols.md): OAuth2 client credentials with JWT tokens, the
bulk enrollment view without trailing slash, SKU redirects answered with a
301 for any method, and the failures a real LMS produces on demand.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.testing import bind_unused_port

COURSE_ID = re.compile(r"course-v1:[\w\-~.:]+\+[\w\-~.:]+\+[\w\-~.:]+")


@dataclass
class Call:
    """One bulk_enroll request as the LMS saw it."""
    form: dict[str, str]
    authorization: str
    at: float


@dataclass
class Forced:
    """An answer to give instead of the real one: a status, or a hang."""
    status: int = 503
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0


class StandinLMS:
    def __init__(self, client_id: str = "edx-hooks", client_secret: str = "lms-client-secret",
                 expires_in: int = 3600):
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.calls: list[Call] = []  # bulk_enroll requests, whatever the answer
        self.in_flight = 0  # requests of any kind being answered now
        self.token_requests = 0
        self.valid_tokens: set[str] = set()
        self._serial = itertools.count(1)
        #: answers to give to the next bulk_enroll requests, in order
        self.forced: list[Forced] = []
        #: the same, for token requests
        self.forced_token: list[Forced] = []
        #: sku path (after the host) -> Location of its 301
        self.redirects: dict[str, str] = {}
        self.head_requests: list[str] = []
        self.raw_head_paths: list[str] = []  # as sent, still percent-encoded
        #: learner emails with an LMS account (others get an "allowed" row)
        self.registered: set[str] = set()
        #: if set, only these course ids exist (others: 404 as up to Teak)
        self.courses: set[str] | None = None
        #: identifiers the LMS answers 200 with a per-learner error for
        self.erroring: set[str] = set()
        #: throttling as the LMS does it: at most ``count`` enrollment calls in
        #: any ``window`` seconds, then 429 with Retry-After
        self.throttle: tuple[int, float] | None = None
        self.throttled = 0  # how many 429s it answered
        #: seconds every enrollment call takes to answer
        self.latency = 0.0
        self._accepted: list[float] = []
        self.server: HTTPServer | None = None
        self.url = ""
        self.port: int | None = None

    async def start(self, same_port: bool = False) -> StandinLMS:
        """Listen on a free port, or again on the previous one (after stop)."""
        app = web.Application([
            (r"/oauth2/access_token", _Token, {"lms": self}),
            (r"/api/bulk_enroll/v1/bulk_enroll", _BulkEnroll, {"lms": self}),
            (r"/_stats", _Stats, {"lms": self}),
            (r"/(.*)", _Redirects, {"lms": self}),
        ])
        self.server = HTTPServer(app)
        if same_port and self.port:
            self.server.add_sockets(bind_sockets(self.port, "127.0.0.1"))
        else:
            sock, self.port = bind_unused_port()
            self.server.add_socket(sock)
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()
            self.server = None

    def over_limit(self) -> float:
        """Seconds until another call is allowed (0: allowed now, and counted)."""
        if self.throttle is None:
            return 0.0
        count, window = self.throttle
        now = time.monotonic()
        self._accepted = [t for t in self._accepted if t > now - window]
        if len(self._accepted) >= count:
            return self._accepted[0] + window - now
        self._accepted.append(now)
        return 0.0

    def revoke_tokens(self) -> None:
        self.valid_tokens.clear()

    def calls_for(self, email: str) -> list[Call]:
        return [c for c in self.calls if c.form.get("identifiers") == email]


class _Base(web.RequestHandler):
    def initialize(self, lms: StandinLMS) -> None:
        self.lms = lms

    def prepare(self) -> None:
        self.lms.in_flight += 1
        self.counted = True

    def on_finish(self) -> None:
        if getattr(self, "counted", False):
            self.counted = False
            self.lms.in_flight -= 1

    def on_connection_close(self) -> None:
        self.on_finish()

    async def forced(self, queue: list[Forced]) -> bool:
        if not queue:
            return False
        answer = queue.pop(0)
        if answer.hang:
            await asyncio.sleep(answer.hang)
        self.set_status(answer.status)
        for k, v in answer.headers.items():
            self.set_header(k, v)
        self.finish(answer.body)
        return True

    def form(self) -> dict[str, str]:
        return {k: v[-1].decode() for k, v in self.request.body_arguments.items()}

    def check_xsrf_cookie(self) -> None:
        pass


class _Token(_Base):
    async def post(self) -> None:
        self.lms.token_requests += 1
        if await self.forced(self.lms.forced_token):
            return
        form = self.form()
        if (form.get("grant_type") != "client_credentials"
                or form.get("client_id") != self.lms.client_id
                or form.get("client_secret") != self.lms.client_secret):
            self.set_status(401)
            self.finish({"error": "invalid_client"})
            return
        if form.get("token_type", "").lower() != "jwt":
            self.set_status(400)
            self.finish({"error": "this stand-in only issues JWTs"})
            return
        token = f"jwt-{next(self.lms._serial)}"
        self.lms.valid_tokens.add(token)
        self.finish({"access_token": token, "token_type": "JWT",
                     "expires_in": self.lms.expires_in, "scope": "read write profile email"})


class _BulkEnroll(_Base):
    async def post(self) -> None:
        form = self.form() if self.request.headers.get("Content-Type", "").startswith(
            "application/x-www-form-urlencoded") else json.loads(self.request.body)
        auth = self.request.headers.get("Authorization", "")
        self.lms.calls.append(Call(form=form, authorization=auth, at=time.monotonic()))
        if await self.forced(self.lms.forced):
            return
        if self.lms.latency:
            await asyncio.sleep(self.lms.latency)
        wait = self.lms.over_limit()
        if wait:
            self.lms.throttled += 1
            self.set_status(429)
            self.set_header("Retry-After", str(max(1, math.ceil(wait))))
            self.finish({"detail": "Request was throttled."})
            return
        scheme, _, token = auth.partition(" ")
        if scheme != "JWT" or token not in self.lms.valid_tokens:
            self.set_status(401)
            self.finish({"detail": "Authentication credentials were not provided."})
            return
        courses = [c.strip() for c in form.get("courses", "").split(",") if c.strip()]
        identifiers = [i.strip() for i in re.split(r"[\n,]", form.get("identifiers", ""))
                       if i.strip()]
        if not courses or not identifiers or form.get("action") not in ("enroll", "unenroll"):
            self.set_status(400)
            self.finish({"error": "missing action, courses or identifiers"})
            return
        for course in courses:
            if not COURSE_ID.fullmatch(course):
                self.set_status(400)
                self.finish({"courses": [f"Invalid course id: {course}"]})
                return
            if self.lms.courses is not None and course not in self.lms.courses:
                self.set_status(404)
                self.finish({"detail": "Course not found."})
                return
        auto = form.get("auto_enroll") in ("true", "True", True)
        enroll = form["action"] == "enroll"
        answer = {"action": form["action"], "auto_enroll": auto,
                  "email_students": form.get("email_students") in ("true", "True", True),
                  "courses": {}}
        for course in courses:
            results = []
            for ident in identifiers:
                if "@" not in ident:
                    results.append({"identifier": ident, "invalidIdentifier": True})
                    continue
                if ident in self.lms.erroring:
                    results.append({"identifier": ident, "error": True})
                    continue
                user = ident in self.lms.registered
                results.append({
                    "identifier": ident,
                    "before": {"user": user, "enrollment": False, "allowed": False,
                               "auto_enroll": False},
                    "after": {"user": user, "enrollment": enroll and user,
                              "allowed": enroll and not user, "auto_enroll": auto and not user},
                })
            answer["courses"][course] = {"action": form["action"], "auto_enroll": auto,
                                         "results": results}
        self.finish(answer)


class _Stats(_Base):
    """What the stand-in received, for benchmarks running it as a process."""

    def get(self) -> None:
        self.finish({"calls": len(self.lms.calls), "throttled": self.lms.throttled,
                     "token_requests": self.lms.token_requests})


class _Redirects(_Base):
    """The redirect middleware: an exact path match answers 301, any method."""

    def _redirect(self, path: str) -> None:
        self.lms.head_requests.append(path)
        self.lms.raw_head_paths.append(self.request.path)
        location = self.lms.redirects.get(path)  # Tornado has decoded it
        if location is None:
            self.set_status(404)
            self.finish()
            return
        self.set_status(301)
        self.set_header("Location", location)
        self.finish()

    def head(self, path: str) -> None:
        self._redirect(path)

    def get(self, path: str) -> None:
        self._redirect(path)


def main() -> None:  # pragma: no cover - for benchmarks and manual runs
    """Run the stand-in on its own: ``python -m tests.standin_lms --port 8098``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--client-secret", default="lms-client-secret")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds every enrollment call takes")
    args = parser.parse_args()

    async def serve() -> None:
        lms = StandinLMS(client_secret=args.client_secret)
        lms.latency = args.latency
        lms.port = args.port
        await lms.start(same_port=True)
        print(f"stand-in LMS on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
