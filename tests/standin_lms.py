"""A stand-in Open edX LMS: a small Tornado app on a free port that speaks the
real contract (protocols.md): OAuth2 client credentials with JWT tokens; the
bulk enrollment view (no trailing slash), which enrolls an account in the
default mode or leaves an allowance for an email without one; accounts by
email; the enrollment API with course modes; a course's modes; SKU
redirects answered with a 301 for any method; one throttle bucket for both
enrollment views, which the API key skips; an email's allowances (the
enrollment_allowed view of Quince and later); a bulk enrollment call that
takes time for each learner it emails, and finishes its work even when the
caller has given up (as Django does); and the failures a real LMS produces on
demand.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import math
import re
import time
import urllib.parse
from dataclasses import dataclass, field

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.testing import bind_unused_port

#: a course id: course-v1:ORG+COURSE+RUN, or the old ORG/COURSE/RUN
COURSE_ID = re.compile(r"course-v1:[\w\-~.:]+\+[\w\-~.:]+\+[\w\-~.:]+"
                       r"|[\w\-~.]+/[\w\-~.]+/[\w\-~.]+")


@dataclass
class Call:
    """One bulk_enroll request as the LMS saw it."""
    form: dict[str, str]
    authorization: str
    at: float


@dataclass
class Learner:
    """One learner of a bulk_enroll call (a call names one or several)."""
    action: str
    course: str
    email: str
    call: Call


@dataclass
class Account:
    username: str
    email: str
    is_active: bool = True


@dataclass
class Enrollment:
    mode: str
    is_active: bool = True


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
        #: an answer to give to every bulk_enroll request while it is set (an
        #: outage: however the learners are grouped into calls)
        self.fail_all: Forced | None = None
        #: the same, for token requests
        self.forced_token: list[Forced] = []
        #: sku path (after the host) -> Location of its 301
        self.redirects: dict[str, str] = {}
        self.head_requests: list[str] = []
        self.raw_head_paths: list[str] = []  # as sent, still percent-encoded
        #: learner emails with an active LMS account (others get an "allowed"
        #: row); an account made on first sight, its username the local part
        self.registered: set[str] = set()
        #: accounts by email (lower case), active or not
        self.accounts: dict[str, Account] = {}
        #: (username, course id) -> enrollment, with its mode
        self.enrollments: dict[tuple[str, str], Enrollment] = {}
        #: (email, course id) -> auto_enroll: the CourseEnrollmentAllowed rows
        self.allowances: dict[tuple[str, str], bool] = {}
        self.default_mode = "audit"
        #: the modes each course offers (any other course: audit and verified)
        self.modes: dict[str, list[str]] = {}
        #: courses whose enrollment is closed (force_enrollment passes) or full
        self.closed: set[str] = set()
        self.full: set[str] = set()
        #: courses past their verified upgrade deadline (a mode change to
        #: verified needs the API key)
        self.past_upgrade_deadline: set[str] = set()
        #: the LMS's EDX_API_KEY: sent as X-Edx-Api-Key, it skips the throttle
        self.api_key: str | None = None
        #: enrollment API requests (JSON bodies) and account lookups, as received
        self.mode_calls: list[Call] = []
        self.account_lookups: list[str] = []
        #: seconds every account lookup takes to answer
        self.account_latency = 0.0
        #: answers to give to the next enrollment API requests, in order
        self.forced_mode: list[Forced] = []
        #: if set, only these course ids exist (others: 404 as up to Teak)
        self.courses: set[str] | None = None
        #: identifiers the LMS answers 200 with a per-learner error for, with
        #: invalidIdentifier (its own address check), or with no result at all
        self.erroring: set[str] = set()
        self.invalid: set[str] = set()
        self.omit: set[str] = set()
        #: throttling as the LMS does it: at most ``count`` enrollment calls in
        #: any ``window`` seconds, then 429 with Retry-After
        self.throttle: tuple[int, float] | None = None
        self.throttled = 0  # how many 429s it answered
        #: seconds every enrollment call takes to answer
        self.latency = 0.0
        #: seconds a bulk enrollment call takes for each learner it emails
        #: (edx-ace sends each learner's email inside the call, one after
        #: the other); the call's work goes on if the caller has gone
        self.per_learner = 0.0
        #: whether the LMS has the enrollment_allowed view (Quince and later)
        self.allowed_view = True
        #: requests to the enrollment_allowed view, by email
        self.allowance_lookups: list[str] = []
        #: while set and not yet set free, bulk enrollment calls wait for it
        #: (a call held for as long as a test needs it under way)
        self.hold: asyncio.Event | None = None
        self._accepted: list[float] = []
        #: the web console's sign-in (authorization code): its application,
        #: the key the JWTs are signed with (HS256, as the LMS's symmetric
        #: key), who is signed in at the LMS now (their claims; None: nobody),
        #: and the codes handed out, with what they were issued for
        self.console_client_id = "edx-hooks-console"
        self.console_client_secret = "console-client-secret"
        self.jwt_key = "standin-lms-jwt-key"
        self.signed_in: dict | None = None
        self.codes: dict[str, dict] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self.server: HTTPServer | None = None
        self.url = ""
        self.port: int | None = None

    async def start(self, same_port: bool = False) -> StandinLMS:
        """Listen on a free port, or again on the previous one (after stop)."""
        app = web.Application([
            (r"/oauth2/access_token", _Token, {"lms": self}),
            (r"/oauth2/authorize", _Authorize, {"lms": self}),
            (r"/api/bulk_enroll/v1/bulk_enroll", _BulkEnroll, {"lms": self}),
            (r"/api/user/v1/accounts", _Accounts, {"lms": self}),
            (r"/api/enrollment/v1/enrollment", _EnrollmentAPI, {"lms": self}),
            (r"/api/enrollment/v1/enrollment/([^,/]+),(.+)", _EnrollmentOf, {"lms": self}),
            (r"/api/enrollment/v1/course/(.+)", _CourseModes, {"lms": self}),
            (r"/api/enrollment/v1/enrollment_allowed/", _Allowed, {"lms": self}),
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

    def sign_in(self, username: str, *, staff: bool = False, email: str | None = None,
                name: str = "") -> None:
        """A user signs in at the LMS (the console's sign-in then finds them)."""
        self.signed_in = {"preferred_username": username, "name": name or username.title(),
                          "email": email or f"{username}@example.org",
                          "administrator": staff, "superuser": False}

    def jwt(self, claims: dict) -> str:
        """A JWT as the LMS makes one: base64url header.payload.signature, HS256."""
        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = part(json.dumps(claims).encode())
        signature = hmac.new(self.jwt_key.encode(), f"{head}.{body}".encode(),
                             hashlib.sha256).digest()
        return f"{head}.{body}.{part(signature)}"

    def revoke_tokens(self) -> None:
        self.valid_tokens.clear()

    # -- the platform's state, as a test arranges and reads it

    def account(self, email: str) -> Account | None:
        email = email.lower()
        if email not in self.accounts and email in {r.lower() for r in self.registered}:
            self.accounts[email] = Account(email.split("@")[0], email)
        return self.accounts.get(email)

    def register(self, email: str, active: bool = False) -> Account:
        """An account made (not yet activated, by default)."""
        account = Account(email.split("@")[0].lower(), email.lower(), active)
        self.accounts[email.lower()] = account
        return account

    def activate(self, email: str) -> Account:
        """The learner activates their account: its allowances with
        auto_enroll become enrollments in the default mode
        (``user_post_save_callback``)."""
        account = self.account(email) or self.register(email)
        account.is_active = True
        for (allowed, course), auto in list(self.allowances.items()):
            enrollment = self.enrollments.get((account.username, course))
            if allowed == account.email and auto and course not in self.closed \
                    and not (enrollment and enrollment.is_active):
                self.enrollments[(account.username, course)] = Enrollment(self.default_mode)
        return account

    def enrollment(self, email: str, course: str) -> Enrollment | None:
        account = self.account(email)
        return self.enrollments.get((account.username, course)) if account else None

    def course_modes(self, course: str) -> list[str] | None:
        if self.courses is not None and course not in self.courses:
            return None
        return self.modes.get(course, ["audit", "verified"])

    def unthrottled(self, handler: web.RequestHandler) -> bool:
        return bool(self.api_key) and handler.request.headers.get("X-Edx-Api-Key") == \
            self.api_key

    def learners(self) -> list[Learner]:
        """Every learner of every bulk_enroll call received, in order."""
        return [Learner(c.form.get("action", ""), c.form.get("courses", ""), email.strip(), c)
                for c in self.calls
                for email in re.split(r"[\n,]", c.form.get("identifiers", "")) if email.strip()]

    def calls_for(self, email: str) -> list[Call]:
        return [learner.call for learner in self.learners() if learner.email == email]


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

    async def forced(self, queue: list[Forced], always: Forced | None = None) -> bool:
        if not queue and always is None:
            return False
        answer = queue.pop(0) if queue else always
        if answer.hang:
            await asyncio.sleep(answer.hang)
        self.set_status(answer.status)
        for k, v in answer.headers.items():
            self.set_header(k, v)
        self.finish(answer.body)
        return True

    def form(self) -> dict[str, str]:
        return {k: v[-1].decode() for k, v in self.request.body_arguments.items()}

    def authorized(self) -> bool:
        """A valid JWT (global staff), else 401 answered."""
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme == "JWT" and token in self.lms.valid_tokens:
            return True
        self.set_status(401)
        self.finish({"detail": "Authentication credentials were not provided."})
        return False

    def throttled(self) -> bool:
        """The enrollment views' one bucket (EnrollmentUserThrottle): past it,
        429 with Retry-After answered; the API key skips it."""
        if self.lms.unthrottled(self):
            return False
        wait = self.lms.over_limit()
        if not wait:
            return False
        self.lms.throttled += 1
        self.set_status(429)
        self.set_header("Retry-After", str(max(1, math.ceil(wait))))
        self.finish({"detail": f"Request was throttled. Expected available in "
                               f"{max(1, math.ceil(wait))} seconds."})
        return True

    def check_xsrf_cookie(self) -> None:
        pass


class _Authorize(_Base):
    """GET /oauth2/authorize: the user signed in at the LMS (``sign_in``) is
    sent back to the redirect URI with a code, at once (skip-authorization)."""

    def get(self) -> None:
        args = {k: self.get_argument(k) for k in self.request.arguments}
        self.lms.authorize_requests.append(args)
        if args.get("client_id") != self.lms.console_client_id \
                or args.get("response_type") != "code" or not args.get("redirect_uri"):
            self.set_status(400)
            self.finish({"error": "invalid_request"})
            return
        if self.lms.signed_in is None:
            self.set_status(401)
            self.finish("not signed in at the LMS")
            return
        code = f"code-{next(self.lms._serial)}"
        self.lms.codes[code] = {"redirect_uri": args["redirect_uri"],
                                "challenge": args.get("code_challenge"),
                                "scopes": args.get("scope", "").split(),
                                "user": dict(self.lms.signed_in)}
        query = urllib.parse.urlencode({"code": code, "state": args.get("state", "")})
        self.redirect(f"{args['redirect_uri']}?{query}")


class _Token(_Base):
    async def post(self) -> None:
        self.lms.token_requests += 1
        if await self.forced(self.lms.forced_token):
            return
        form = self.form()
        if form.get("grant_type") == "authorization_code":
            self.authorization_code(form)
            return
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


    def authorization_code(self, form: dict[str, str]) -> None:
        """The code's JWT, with the claims of protocols.md; PKCE honoured
        when the code was asked for with a challenge."""
        lms = self.lms
        issued = lms.codes.pop(form.get("code", ""), None)
        if form.get("client_id") != lms.console_client_id \
                or form.get("client_secret") != lms.console_client_secret:
            self.set_status(401)
            self.finish({"error": "invalid_client"})
            return
        verifier = form.get("code_verifier", "")
        if issued is None or issued["redirect_uri"] != form.get("redirect_uri") or (
                issued["challenge"] and base64.urlsafe_b64encode(
                    hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                != issued["challenge"]):
            self.set_status(400)
            self.finish({"error": "invalid_grant"})
            return
        user, scopes = issued["user"], issued["scopes"]
        claims = {"preferred_username": user["preferred_username"],
                  "sub": hashlib.md5(user["preferred_username"].encode()).hexdigest(),
                  "iss": f"{lms.url}/oauth2", "aud": "openedx",
                  "exp": int(time.time()) + lms.expires_in, "iat": int(time.time()),
                  "scopes": scopes, "email_verified": True}
        if "email" in scopes:
            claims["email"] = user["email"]
        if "profile" in scopes:
            claims.update(name=user["name"], administrator=user["administrator"],
                          superuser=user["superuser"])
        self.finish({"access_token": lms.jwt(claims), "token_type": "JWT",
                     "expires_in": lms.expires_in, "scope": " ".join(scopes)})


class _BulkEnroll(_Base):
    async def post(self) -> None:
        form = self.form() if self.request.headers.get("Content-Type", "").startswith(
            "application/x-www-form-urlencoded") else json.loads(self.request.body)
        auth = self.request.headers.get("Authorization", "")
        self.lms.calls.append(Call(form=form, authorization=auth, at=time.monotonic()))
        if await self.forced(self.lms.forced, self.lms.fail_all):
            return
        if self.lms.latency:
            await asyncio.sleep(self.lms.latency)
        if self.lms.hold is not None:
            await self.lms.hold.wait()
        if not self.authorized() or self.throttled():
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
        emails = form.get("email_students") in ("true", "True", True)
        answer = {"action": form["action"], "auto_enroll": auto, "email_students": emails,
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
                if ident in self.lms.invalid:
                    results.append({"identifier": ident, "invalidIdentifier": True})
                    continue
                if ident in self.lms.omit:
                    continue
                if emails and self.lms.per_learner:  # its email, sent inside the call
                    await asyncio.sleep(self.lms.per_learner)
                before = self.state(ident, course)
                self.apply(ident, course, enroll, auto)
                results.append({"identifier": ident, "before": before,
                                "after": self.state(ident, course)})
            answer["courses"][course] = {"action": form["action"], "auto_enroll": auto,
                                         "results": results}
        self.finish(answer)

    def state(self, email: str, course: str) -> dict:
        """What the view reports of a learner in a course, before and after."""
        account = self.lms.account(email)
        enrollment = self.lms.enrollments.get((account.username, course)) if account else None
        allowed = (email.lower(), course) in self.lms.allowances
        return {"user": account is not None,
                "enrollment": bool(enrollment and enrollment.is_active),
                "allowed": allowed,
                "auto_enroll": self.lms.allowances.get((email.lower(), course), False)}

    def apply(self, email: str, course: str, enroll: bool, auto: bool) -> None:
        """The view's effect (``enroll_email``, ``unenroll_email``): an active
        account is enrolled (an active enrollment keeps its mode; another is
        made or reactivated in the default mode) or deactivated (the mode
        kept); an email without an active account gets an allowance, or
        loses it."""
        account = self.lms.account(email)
        key = (email.lower(), course)
        if enroll:
            if account is None or not account.is_active:
                self.lms.allowances[key] = auto
                return
            enrollment = self.lms.enrollments.get((account.username, course))
            if enrollment is None or not enrollment.is_active:
                self.lms.enrollments[(account.username, course)] = Enrollment(
                    self.lms.default_mode)
        else:
            self.lms.allowances.pop(key, None)
            if account is not None and (account.username, course) in self.lms.enrollments:
                self.lms.enrollments[(account.username, course)].is_active = False


class _Accounts(_Base):
    """``GET /api/user/v1/accounts?email=``: a list of one account, or 404."""

    async def get(self) -> None:
        if not self.authorized():
            return
        email = self.get_query_argument("email", "")
        self.lms.account_lookups.append(email)
        if self.lms.account_latency:
            await asyncio.sleep(self.lms.account_latency)
        account = self.lms.account(email)
        if account is None:
            self.set_status(404)
            self.finish()
            return
        self.finish(json.dumps([{"username": account.username, "email": account.email,
                                 "id": abs(hash(account.username)) % 100000,
                                 "is_active": account.is_active, "name": ""}]))


class _EnrollmentAPI(_Base):
    """``POST /api/enrollment/v1/enrollment``: enroll a user in a mode, or
    change their enrollment's mode or activity, as global staff may."""

    def refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"message": message})

    async def post(self) -> None:
        body = json.loads(self.request.body or b"{}")
        self.lms.mode_calls.append(Call(form=body, at=time.monotonic(),
                                        authorization=self.request.headers.get(
                                            "Authorization", "")))
        if await self.forced(self.lms.forced_mode):
            return
        if self.lms.latency:
            await asyncio.sleep(self.lms.latency)
        if not self.authorized() or self.throttled():
            return
        username = body.get("user")
        course = (body.get("course_details") or {}).get("course_id", "")
        mode = body.get("mode") or self.lms.default_mode
        active = body.get("is_active", True)
        account = next((a for a in self.lms.accounts.values() if a.username == username), None)
        if account is None:
            self.refuse(406, f"The user {username} does not exist.")
            return
        modes = self.lms.course_modes(course)
        if modes is None:
            self.refuse(400, f"No course '{course}' found for enrollment")
            return
        if mode not in modes:
            self.refuse(400, f"The [{mode}] course mode is expired or otherwise unavailable "
                             f"for course run [{course}].")
            return
        existing = self.lms.enrollments.get((username, course))
        if not active and existing is not None and existing.mode != mode:
            self.refuse(400, "Enrollment mode mismatch")
            return
        if course in self.lms.full and active:
            self.refuse(400, f"Course {course} is full")
            return
        if course in self.lms.closed and active and not body.get("force_enrollment"):
            self.refuse(400, f"Enrollment is closed for {course}")
            return
        if mode == "verified" and course in self.lms.past_upgrade_deadline \
                and not self.lms.unthrottled(self):  # expired: only the API key includes it
            self.refuse(400, f"The [{mode}] course mode is expired or otherwise unavailable "
                             f"for course run [{course}].")
            return
        created = existing is None
        self.lms.enrollments[(username, course)] = Enrollment(mode, bool(active))
        self.finish({"created": created, "mode": mode, "is_active": bool(active),
                     "user": username,
                     "course_details": {"course_id": course,
                                        "course_modes": [{"slug": m} for m in modes]}})


class _EnrollmentOf(_Base):
    """``GET /api/enrollment/v1/enrollment/{username},{course_id}``: one
    enrollment (staff: anyone's); counted by the same throttle."""

    async def get(self, username: str, course: str) -> None:
        self.lms.mode_calls.append(Call(form={"get": [username, course]}, at=time.monotonic(),
                                        authorization=self.request.headers.get(
                                            "Authorization", "")))
        if not self.authorized() or self.throttled():
            return
        enrollment = self.lms.enrollments.get((username, course))
        if enrollment is None:
            self.set_status(404)
            self.finish({"message": f"An error occurred while retrieving enrollments for user "
                                    f"{username} in course {course}"})
            return
        self.finish({"mode": enrollment.mode, "is_active": enrollment.is_active,
                     "user": username, "course_details": {"course_id": course}})


class _Allowed(_Base):
    """``GET /api/enrollment/v1/enrollment_allowed/?email=``: the email's
    allowances (admin only; the enrollment throttle counts it); 404 on an LMS
    older than Quince."""

    def get(self) -> None:
        if not self.lms.allowed_view:
            self.set_status(404)
            self.finish("<h1>Not Found</h1>")
            return
        if not self.authorized() or self.throttled():
            return
        email = self.get_query_argument("email", "").lower()
        self.lms.allowance_lookups.append(email)
        self.finish(json.dumps([{"email": allowed, "course_id": course, "auto_enroll": auto}
                                for (allowed, course), auto in self.lms.allowances.items()
                                if allowed == email]))


class _CourseModes(_Base):
    """``GET /api/enrollment/v1/course/{course_id}``: no authentication."""

    def get(self, course: str) -> None:
        modes = self.lms.course_modes(course)
        if modes is None:
            self.set_status(400)
            self.finish({"message": f"No course found for course ID '{course}'"})
            return
        self.finish({"course_id": course, "course_modes": [{"slug": m} for m in modes]})


class _Stats(_Base):
    """What the stand-in received, for benchmarks running it as a process."""

    def get(self) -> None:
        self.finish({"calls": len(self.lms.calls), "learners": len(self.lms.learners()),
                     "throttled": self.lms.throttled,
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
    parser.add_argument("--per-learner", type=float, default=0.0,
                        help="seconds a bulk enrollment call takes for each learner it emails")
    parser.add_argument("--throttle", type=float, nargs=2, metavar=("CALLS", "SECONDS"),
                        help="throttle the enrollment views as the LMS does (DRF): at most "
                             "CALLS in any SECONDS, then 429 with Retry-After")
    args = parser.parse_args()

    async def serve() -> None:
        lms = StandinLMS(client_secret=args.client_secret)
        lms.latency = args.latency
        lms.per_learner = args.per_learner
        if args.throttle:
            lms.throttle = (int(args.throttle[0]), args.throttle[1])
        lms.port = args.port
        await lms.start(same_port=True)
        print(f"stand-in LMS on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
