"""The one client of the Open edX LMS: OAuth2 token, SKU lookup, bulk enrollment.

Written on ``tornado.httpclient.AsyncHTTPClient`` directly: the session
wrapper the predecessor used (tornado-httpclient-session, last released
2016) no longer imports on Tornado 6, and what it added, a cached token, is
a few lines here.

Every call has explicit connect and answer timeouts and never follows a
redirect; a bulk enrollment call is given more time for each learner it
names (the LMS emails each inside the call). Every answer that is not a
success goes through one classifier, :func:`error_for`, into
:class:`TransientError` (worth another attempt later), :class:`OutcomeUnknown`
(the request may have been acted on, its answer was lost), :class:`Throttled`
(the LMS asked us to slow down; not a failed attempt) or
:class:`PermanentError` (retrying cannot help; an operator must act); each
keeps the HTTP status and the LMS's own words as data, as HTTPX's
``HTTPStatusError`` keeps its response.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import logging
import time
import urllib.parse
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.iostream import StreamClosedError

from . import logs
from .errors import (  # re-exported: raised here, caught by callers
    Halted,
    LMSError,
    OutcomeUnknown,
    PermanentError,
    Throttled,
    TransientError,
)
from .setting_types import (  # noqa: F401  (re-exported: lms.is_course_id, lms.is_email)
    COURSE_ID_RE,
    OLD_COURSE_ID_RE,
    is_course_id,
    is_email,
)

log = logging.getLogger("edx_hooks.lms")

BULK_ENROLL_PATH = "/api/bulk_enroll/v1/bulk_enroll"  # no trailing slash: newer LMSes 404 on it
TOKEN_PATH = "/oauth2/access_token"
ACCOUNTS_PATH = "/api/user/v1/accounts"
ENROLLMENT_PATH = "/api/enrollment/v1/enrollment"
#: an email's enrollment allowances (trailing slash; since Quince; admin only)
ALLOWED_PATH = "/api/enrollment/v1/enrollment_allowed/"
COURSE_PATH = "/api/enrollment/v1/course/{}"
#: refresh the token this long before the LMS says it expires
TOKEN_MARGIN_SECONDS = 60



def origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an absolute http(s) URL, the default port
    spelled out; None for anything else."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def course_in(url: str, lms_url: str, learning_mfe_url: str = "") -> str | None:
    """The course a redirect target names: ``/courses/<course id>/...`` on
    the LMS's own origin (scheme, host and port), or
    ``<learning MFE>/course/<course id>/...`` on the Learning MFE's. An id of
    the old form spans three segments (``/courses/ORG/COURSE/RUN/...``)."""
    parts = urllib.parse.urlsplit(url)
    here = origin(url)
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/")]
    candidates = []
    if here is not None and here == origin(lms_url) and "courses" in segments:
        after = segments[segments.index("courses") + 1:]
        candidates = [after[0]] if after else []
        if len(after) >= 3:
            candidates.append("/".join(after[:3]))
    elif learning_mfe_url and here is not None and here == origin(learning_mfe_url):
        base = urllib.parse.urlsplit(learning_mfe_url).path.rstrip("/") + "/course/"
        if parts.path.startswith(base):
            candidates = [urllib.parse.unquote(parts.path[len(base):].split("/")[0])]
    return next((c for c in candidates if c and is_course_id(c)), None)


# -- what can go wrong

#: the statuses after which the LMS may have done what it was asked
UNKNOWN_STATUSES = (500, 502, 504)
#: Tornado's messages for timeouts before the request was sent
NOT_SENT = ("Timeout while connecting", "Timeout in request queue")
#: what an item's reason adds when its call's outcome is unknown
UNKNOWN_NOTE = "; outcome unknown: the LMS is asked what it did before a re-send"


def error_for(response: HTTPResponse, what: str, *, request: str = "",
              hints: dict[int, str] | None = None, permanent: str = "",
              redact: dict[str, str] | None = None) -> LMSError:
    """The one reading of an answer that is not the success a call expected:
    429 throttled (with its Retry-After), 5xx transient, any other status
    permanent. ``what`` answered (``request``, if named otherwise, was
    throttled); a permanent one says what to fix: ``hints`` by status, a
    redirect where to, or ``permanent`` for every status. ``redact``: texts
    (the learner's email, a secret) kept out of the recorded detail, and
    what stands for each."""
    code = response.code
    detail = _summary(response)
    for text, placeholder in (redact or {}).items():
        detail = detail.replace(text, placeholder)
    if code == 429:
        return Throttled(f"LMS throttled {request or what} (429)", _retry_after(response),
                         detail=detail)
    if code in UNKNOWN_STATUSES:
        return OutcomeUnknown(f"{what} answered {code}{UNKNOWN_NOTE}", code, detail)
    if code >= 500:
        return TransientError(f"{what} answered {code}", code, detail)
    if permanent:
        return PermanentError(permanent, code, detail)
    if 300 <= code < 400:
        hint = (f"redirected to {response.headers.get('Location', '?')[:200]}: set "
                "lms.base_url to the LMS's final URL")
    else:
        hint = (hints or {}).get(code, "unexpected answer")
    return PermanentError(f"{what} answered {code}: {hint}" + (f" ({detail})" if detail else ""),
                          code, detail)


def _retry_after(response: HTTPResponse, default: float = 60.0) -> float:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def _summary(response: HTTPResponse, limit: int = 200) -> str:
    """A short, single-line excerpt of an LMS answer for the recorded reason."""
    body = (response.body or b"")[:limit].decode("utf-8", "replace")
    return " ".join(body.split())


def _drop_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class Pacer:
    """At most ``per_minute`` calls in any ``window`` seconds (60: a minute),
    counted as the LMS's throttle counts them: a sliding window.

    The LMS (DRF's ``UserRateThrottle``) keeps the times of the calls it
    accepted over the last window and answers 429 beyond its rate (about 120
    a minute for a staff user). A burst therefore goes at once, up to
    ``per_minute`` calls; the next call waits until the oldest of the last
    ``per_minute`` is ``window`` (plus ``margin``) old, so a long sale never
    meets a 429. ``margin`` (default: 1 s, or an eighth of a shorter window)
    covers the time a call takes to reach the LMS, which stamps it on
    arrival. ``per_minute = 0``: unpaced. A 429 pushes every waiting call
    back by its Retry-After (:meth:`back_off`), paced or not.

    ``clock`` and ``sleep`` are injectable: :meth:`reserve` is pure
    arithmetic on the clock, and a test can use a window of seconds.
    """

    def __init__(self, per_minute: int, window: float = 60.0, *,
                 margin: float | None = None, clock=time.monotonic, sleep=asyncio.sleep):
        self.limit = per_minute
        self.window = window
        self.margin = min(1.0, window / 8) if margin is None else margin
        self.clock = clock
        self.sleep = sleep
        #: the times of the last ``limit`` turns given, oldest first (never
        #: decreasing: each turn is at or after the one before)
        self._turns: collections.deque[float] = collections.deque()
        self._blocked_until = 0.0

    def reserve(self) -> float:
        """Take the next turn; the seconds until it comes (0: now)."""
        now = self.clock()
        turn = max(now, self._blocked_until)
        if self.limit:
            if len(self._turns) >= self.limit:
                turn = max(turn, self._turns.popleft() + self.window + self.margin)
            self._turns.append(turn)
        return turn - now

    async def wait(self) -> None:
        """Wait for this call's turn (and past any Retry-After that came
        meanwhile)."""
        delay = self.reserve()
        while delay > 0:
            await self.sleep(delay)
            delay = self._blocked_until - self.clock()

    def back_off(self, seconds: float) -> None:
        """The LMS said 429, Retry-After ``seconds``: no call before then,
        whether it is still to come or already waiting its turn."""
        now = self.clock()
        until = now + seconds
        if until > self._blocked_until:
            self._blocked_until = until  # the turns still to come move with it
            self._turns = collections.deque(max(t, until) if t > now else t
                                            for t in self._turns)


#: what a refusal of bulk_enroll means, by status
BULK_HINTS = {
    400: "the LMS rejected the request",
    401: "the LMS refused a fresh token: check the OAuth2 application",
    403: "the OAuth2 application's user is not global staff",
    404: "unknown course, or the bulk enrollment view is off (ENABLE_BULK_ENROLLMENT_VIEW)",
}


class LMSClient:
    """The Open edX LMS's REST API, as edx-hooks uses it: an OAuth2
    client-credentials token, bulk enrollment, the enrollment and account
    views, SKU redirects. Each call is paced (:attr:`pacer`) and bounded; a
    failure raises an :class:`~edx_hooks.errors.LMSError` saying what to do.

    Arguments:

    * ``base_url`` -- the LMS's root URL (``lms.base_url``); a trailing slash is dropped.
    * ``client_id``, ``client_secret`` -- the OAuth2 application of a global-staff
      user (``lms.client_id``, ``lms.client_secret``).
    * ``timeout`` -- seconds a call is given to answer, once connected
      (``lms.timeout_seconds``).
    * ``connect_timeout`` -- seconds allowed to connect (``lms.connect_timeout_seconds``).
    * ``seconds_per_learner`` -- more answer time for each learner a bulk
      enrollment call names (``lms.seconds_per_learner``; see :meth:`answer_time`).
    * ``auto_enroll`` -- bulk enrollment enrolls a learner without an account
      when they register (``lms.auto_enroll``).
    * ``email_students`` -- the LMS emails the learner (``lms.email_students``).
    * ``sku_prefix`` -- the path prefix of SKU redirects on the LMS, e.g.
      ``sku/`` (``lms.sku_prefix``).
    * ``max_clients`` -- requests under way at once at most; the others wait
      for a slot here, where the wait does not count against their timeout.
    * ``max_calls_per_minute`` -- the pace of enrollment calls (the
      :class:`Pacer`'s; ``lms.max_calls_per_minute``, 0 = unpaced).
    * ``api_key`` -- the LMS's ``EDX_API_KEY``, sent as ``X-Edx-Api-Key``
      (``lms.api_key``; empty: not sent).
    * ``learning_mfe_url`` -- the Learning MFE's root: SKU redirects to its
      course pages name courses too (``lms.learning_mfe_url``).
    """

    def __init__(self, base_url: str, client_id: str, client_secret: str, *,
                 timeout: float = 10.0, connect_timeout: float = 5.0,
                 seconds_per_learner: float = 1.0, auto_enroll: bool = True,
                 email_students: bool = True, sku_prefix: str = "",
                 max_clients: int = 10, max_calls_per_minute: int = 100,
                 api_key: str = "", learning_mfe_url: str = ""):
        self.base_url = base_url.rstrip("/")
        self.learning_mfe_url = learning_mfe_url.rstrip("/")
        #: the LMS's last answer (when, path, status or why none) and when it
        #: last throttled us, for the web console
        self.last_answer: tuple[float, str, int | str] | None = None
        self.last_throttled: float | None = None
        #: sent as X-Edx-Api-Key: the LMS then skips its throttle for the
        #: enrollment views, and lets a mode be set past its upgrade deadline
        self._api_key = api_key
        self.client_id = client_id
        self._client_secret = client_secret
        #: seconds allowed to connect, and for an answer: ``timeout``, plus
        #: ``seconds_per_learner`` for each learner a bulk enrollment call
        #: names (see :meth:`answer_time`)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.seconds_per_learner = seconds_per_learner
        self.auto_enroll = auto_enroll
        self.email_students = email_students
        self.sku_prefix = sku_prefix
        self._http = AsyncHTTPClient(force_instance=True, max_clients=max_clients)
        # Calls wait their turn here, not in the HTTP client's queue: its
        # queue time counts against the request timeout, ours does not.
        self._slots = asyncio.Semaphore(max_clients)
        self.pacer = Pacer(max_calls_per_minute)
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self.halted = False

    def halt(self) -> None:
        """Make no new request from now on (stopping): one that would start,
        waiting for a connection slot, a token or a repeat after a 401,
        raises :class:`Halted` instead. Requests under way go on."""
        self.halted = True

    def close(self) -> None:
        self._http.close()

    def answer_time(self, learners: int = 0) -> float:
        """Seconds a call naming ``learners`` learners is given to answer
        once connected: the LMS sends each learner's email inside a bulk
        enrollment call, one after the other."""
        return self.timeout + self.seconds_per_learner * learners

    def deadline(self, learners: int = 0) -> float:
        """Seconds a call naming ``learners`` learners may take in all."""
        return self.connect_timeout + self.answer_time(learners)

    async def fetch(self, path: str, learners: int = 0, **kwargs: Any) -> HTTPResponse:
        """One request to the LMS (``path`` under ``lms.base_url``), whatever
        its answer, given :meth:`deadline` for ``learners``. No answer at all
        raises :class:`TransientError`: :class:`OutcomeUnknown` if the
        request may have reached the LMS."""
        request = HTTPRequest(self.base_url + path, connect_timeout=self.connect_timeout,
                              request_timeout=self.deadline(learners),
                              follow_redirects=False, **kwargs)
        try:
            async with self._slots:
                if self.halted:
                    raise Halted("stopping: the call was not made")
                # Shielded: a job interrupted at shutdown must not cancel
                # Tornado's own future, which then logs a traceback when the
                # client closes; its outcome is read and dropped instead.
                future = self._http.fetch(request, raise_error=False)
                future.add_done_callback(_drop_outcome)
                answer = await asyncio.shield(future)
                self.last_answer = (time.time(), path, answer.code)
                if answer.code == 429:
                    self.last_throttled = time.time()
                return answer
        except HTTPClientError as e:  # 599: timeout or closed connection
            message = e.message or str(e)
            self.last_answer = (time.time(), path, message)
            if message in NOT_SENT:
                raise TransientError(f"LMS unreachable: {message}") from None
            raise OutcomeUnknown(f"LMS unreachable: {message}{UNKNOWN_NOTE}") from None
        except OSError as e:  # connecting failed (refused, no route): nothing was sent
            raise TransientError(f"LMS unreachable: {e.strerror or e}") from None
        except StreamClosedError as e:
            raise OutcomeUnknown(f"LMS unreachable: {e}{UNKNOWN_NOTE}") from None

    # -- OAuth2

    async def token(self, *, stale: str | None = None) -> str:
        """A JWT access token, cached until shortly before it expires.

        ``stale`` is a token the LMS just refused: fetch a new one unless
        another call has done so meanwhile.
        """
        async with self._token_lock:
            fresh = time.monotonic() < self._token_expires
            if self._token and fresh and self._token != stale:
                return self._token
            body = urllib.parse.urlencode({
                "grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self._client_secret, "token_type": "jwt"})
            response = await self.fetch(TOKEN_PATH, method="POST", body=body)
            if response.code != 200:
                refused = (f"LMS refused the OAuth2 client credentials ({response.code}): "
                           "check lms.client_id and lms.client_secret")
                raise error_for(response, "LMS token endpoint", request="the token request",
                                permanent="" if response.code == 404 else refused,
                                hints={404: "not found: check lms.base_url"},
                                redact={self._client_secret: "<secret>"})
            try:
                answer = json.loads(response.body)
                token = answer["access_token"]
                expires_in = float(answer.get("expires_in", 3600))
            except (ValueError, KeyError, TypeError):
                raise TransientError("LMS token endpoint answered 200 without a token",
                                     200) from None
            self._token = token
            self._token_expires = time.monotonic() + max(0.0, expires_in - TOKEN_MARGIN_SECONDS)
            logs.event(log, logs.INFO, "lms.token", expires_in=int(expires_in))
            return token

    # -- SKU lookup

    async def resolve_sku(self, sku: str) -> str:
        """The course id an SKU redirects to on the LMS.

        Only the first redirect is read: following them all can end on a login
        page with the course id left only in a query string. The lookup never
        leaves the LMS: see :func:`course_in` for the redirects that name a
        course.
        """
        quoted = urllib.parse.quote(sku, safe="-._~")
        if quoted in (".", ".."):  # a dot-segment would climb out of the SKU prefix
            quoted = quoted.replace(".", "%2E")
        path = f"/{self.sku_prefix}{quoted}"
        response = await self.fetch(path, method="HEAD")
        location = response.headers.get("Location")
        if response.code not in (301, 302, 303, 307, 308) or not location:
            raise error_for(response, "SKU lookup", request="the SKU lookup",
                            permanent=f"SKU {sku!r} resolves to no course: not in the "
                                      "catalog ([[products]]), and HEAD "
                                      f"{self.base_url}{path} answered {response.code} "
                                      "without a redirect")
        course_id = course_in(urllib.parse.urljoin(self.base_url + path, location),
                              self.base_url, self.learning_mfe_url)
        if course_id is None:
            raise PermanentError(f"SKU {sku!r} redirects to {location[:200]!r}, "
                                 "which names no course on the LMS", response.code)
        return course_id

    # -- bulk enrollment

    async def _authorized(self, method: str, path: str, body: str | None = None,
                          content_type: str = "", paced: bool = True,
                          slot_taken: bool = False, learners: int = 0) -> HTTPResponse:
        """A call with the token (and the API key, when set). ``paced``: one
        the LMS's enrollment throttle counts, made in its turn with
        :attr:`pacer` (``slot_taken``: the caller already waited it). On a
        401: one fresh token, one repeat (in a turn of its own).
        ``learners``: how many the call names (its answer time grows)."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self._api_key:
            headers["X-Edx-Api-Key"] = self._api_key
        token = None
        for repeat in (False, True):
            token = await self.token(stale=token)
            if paced and (repeat or not slot_taken):
                await self.pacer.wait()
            response = await self.fetch(path, learners, method=method, body=body,
                                        headers={**headers, "Authorization": f"JWT {token}"})
            if response.code != 401:
                break
            logs.event(log, logs.INFO, "lms.unauthorized", action="refresh-token")
        if response.code == 429 and paced:
            self.pacer.back_off(_retry_after(response))
        return response

    async def bulk(self, action: str, course_id: str, emails: list[str], reason: str,
                   slot_taken: bool = False, auto_enroll: bool | None = None
                   ) -> dict[str, str | PermanentError]:
        """Enroll or unenroll (``action``) learners in one course through the
        bulk enrollment view, in one call. Returns, by email (lower case),
        ``enrolled`` or ``allowed`` (no account yet: enrolled when they
        register) for an enrollment, ``unenrolled`` for an unenrollment (the
        enrollment deactivated, an "allowed" row deleted; unenrolling someone
        not enrolled is a no-op), or that learner's own PermanentError. A
        failure of the whole call is raised. ``slot_taken``: the caller
        already waited its turn with :attr:`pacer`. ``auto_enroll``: instead
        of ``lms.auto_enroll``. Each email is one validated address: none can
        carry a comma into ``identifiers``."""
        auto = self.auto_enroll if auto_enroll is None else auto_enroll
        form = urllib.parse.urlencode({
            "action": action, "courses": course_id, "identifiers": ",".join(emails),
            "auto_enroll": "true" if auto and action == "enroll" else "false",
            "email_students": "true" if self.email_students else "false",
            "reason": reason})
        response = await self._authorized("POST", BULK_ENROLL_PATH, form,
                                          "application/x-www-form-urlencoded",
                                          slot_taken=slot_taken, learners=len(emails))
        if response.code != 200:
            raise error_for(response, "bulk_enroll", hints=BULK_HINTS,
                            redact={email: "<learner>" for email in emails})
        return outcomes(response.body, course_id, emails, action)

    # -- accounts and modes (the enrollment API)

    async def account(self, email_address: str) -> dict[str, Any] | None:
        """The learner's LMS account (``username``, ``is_active``...), or None
        when there is none with that email. Not throttled by the LMS: not
        paced."""
        response = await self._authorized(
            "GET", ACCOUNTS_PATH + "?" + urllib.parse.urlencode({"email": email_address}),
            paced=False)
        if response.code == 404:
            return None
        if response.code != 200:
            raise error_for(response, "the account lookup", hints={
                403: "the OAuth2 application's user is not global staff (looking accounts "
                     "up by email needs it)"}, redact={email_address: "<learner>"})
        try:
            found = json.loads(response.body)
            found = found if isinstance(found, list) else [found]
            account = next(a for a in found if isinstance(a, dict)
                           and str(a.get("email", "")).lower() == email_address.lower())
            str(account["username"])
        except (ValueError, StopIteration, KeyError, TypeError):
            raise PermanentError("the account lookup answered 200 without the learner's "
                                 "account", 200) from None
        return account

    async def enroll_in_mode(self, username: str, course_id: str, mode: str,
                             slot_taken: bool = False) -> str:
        """Enroll an existing account in ``course_id`` in ``mode``, active, or
        change its enrollment to that: the enrollment API. Paid orders go
        through with ``force_enrollment`` (the shop is the gate: a course
        whose enrollment window closed still takes a learner who paid; a
        full course does not). Returns ``enrolled``. A refusal (a mode the
        course does not offer, an unknown course, a closed or full course)
        is a :class:`PermanentError` with the LMS's own message."""
        body = json.dumps({"user": username, "mode": mode, "is_active": True,
                           "course_details": {"course_id": course_id},
                           "force_enrollment": True})
        response = await self._authorized("POST", ENROLLMENT_PATH, body, "application/json",
                                          slot_taken=slot_taken)
        if response.code != 200:
            message = _message(response)
            raise error_for(response, "the enrollment API", hints={
                401: "the LMS refused a fresh token: check the OAuth2 application",
                404: "not found: the enrollment API is missing on this LMS"},
                permanent=(f"the enrollment API answered {response.code}: {message}"
                           if response.code in (400, 403, 406) and message else ""),
                redact={username: "<learner>"})
        try:
            answer = json.loads(response.body)
            confirmed = answer["mode"] == mode and answer["is_active"] is True
        except (ValueError, KeyError, TypeError):
            confirmed = False
        if not confirmed:
            raise PermanentError(f"the enrollment API answered 200 but did not confirm the "
                                 f"{mode} enrollment", 200)
        return "enrolled"

    async def enrollment_of(self, username: str, course_id: str,
                            slot_taken: bool = False) -> dict[str, Any] | None:
        """The account's enrollment in the course (``mode``, ``is_active``),
        or None: the enrollment API, which the throttle counts."""
        response = await self._authorized(
            "GET", f"{ENROLLMENT_PATH}/{urllib.parse.quote(username, safe='')},"
                   f"{urllib.parse.quote(course_id, safe='')}", slot_taken=slot_taken)
        if response.code == 404:
            return None
        if response.code != 200:
            raise error_for(response, "the enrollment API", redact={username: "<learner>"})
        try:
            answer = json.loads(response.body or b"null")
        except ValueError:
            answer = None
        return answer if isinstance(answer, dict) and answer.get("mode") else None

    async def allowances(self, email_address: str) -> list[str] | None:
        """The courses an email has an enrollment allowance for (no account
        yet: enrolled when it registers), through the allowance view (since
        Quince; the throttle counts it); None where the LMS lacks the view
        (404)."""
        response = await self._authorized(
            "GET", ALLOWED_PATH + "?" + urllib.parse.urlencode({"email": email_address}))
        if response.code == 404:
            return None
        if response.code != 200:
            raise error_for(response, "the enrollment allowance view",
                            redact={email_address: "<learner>"})
        try:
            found = json.loads(response.body)
            found = found.get("results", []) if isinstance(found, dict) else found
            return [str(a["course_id"]) for a in found
                    if str(a.get("email", email_address)).lower() == email_address.lower()]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise PermanentError("the enrollment allowance view answered 200 without a list",
                                 200) from None

    async def shows(self, action: str, course_id: str, email_address: str) -> str | None:
        """What the LMS shows of a bulk enrollment call for this learner
        whose answer was lost: ``enrolled`` (their account's enrollment is
        active), ``allowed`` (no account: an allowance), ``unenrolled``
        (neither, after an unenroll), or None: it does not show what the
        call would have done, which may then be sent. Where the LMS lacks
        the allowance view, a learner who is not enrolled is shown nothing
        (sent again). Raises like the calls it makes."""
        account = await self.account(email_address)
        enrolled = False
        if account is not None:
            enrollment = await self.enrollment_of(str(account["username"]), course_id)
            enrolled = bool(enrollment and enrollment.get("is_active") is True)
        if enrolled:
            return "enrolled" if action == "enroll" else None
        if action == "enroll" and account is not None and account.get("is_active") is True:
            return None  # an active account is enrolled, never given an allowance
        allowed = await self.allowances(email_address)
        if allowed is None:
            return None
        if action == "enroll":
            return "allowed" if course_id in allowed else None
        return None if course_id in allowed else "unenrolled"

    async def course_modes(self, course_id: str) -> list[str] | None:
        """The modes a course offers, expired ones included; None for a
        course the LMS does not know. No token needed."""
        response = await self.fetch(
            COURSE_PATH.format(urllib.parse.quote(course_id, safe="")) + "?include_expired=1")
        if response.code in (400, 404):
            return None
        if response.code != 200:
            raise error_for(response, "the course modes view")
        try:
            return [str(m["slug"]) for m in json.loads(response.body)["course_modes"]]
        except (ValueError, KeyError, TypeError):
            raise PermanentError("the course modes view answered 200 without modes",
                                 200) from None


def _message(response: HTTPResponse) -> str:
    """The LMS's own words in an error answer: its ``message`` (the
    enrollment API), ``detail`` (DRF) or ``error``."""
    try:
        answer = json.loads(response.body or b"")
    except ValueError:
        return _summary(response)
    if isinstance(answer, dict):
        for key in ("message", "detail", "error", "error_msg"):
            if isinstance(answer.get(key), str) and answer[key].strip():
                return " ".join(answer[key].split())[:300]
    return _summary(response)


def outcomes(body: bytes, course_id: str, emails: list[str], action: str
             ) -> dict[str, str | PermanentError]:
    """Read a bulk_enroll 200, learner by learner (by email, lower case):
    ``enrolled``, ``allowed`` or ``unenrolled``, or the
    :class:`PermanentError` of that learner alone. A 200 can carry a failure
    for some learners and not others; a learner without a result failed."""
    try:
        answer = json.loads(body)
        results = answer["courses"][course_id]["results"]
    except (ValueError, KeyError, TypeError):
        error = PermanentError("bulk_enroll answered 200 without a result for the course", 200)
        return {e.lower(): error for e in emails}
    if not isinstance(results, list):
        error = PermanentError("bulk_enroll answered 200 with a malformed result", 200)
        return {e.lower(): error for e in emails}
    by_email = {str(r.get("identifier", "")).lower(): r for r in reversed(results)
                if isinstance(r, dict)}
    return {e.lower(): _learner(by_email.get(e.lower()), action) for e in emails}


def _learner(result: dict | None, action: str) -> str | PermanentError:
    if result is None:
        return PermanentError("bulk_enroll answered 200 without a result for the learner", 200)
    if result.get("invalidIdentifier"):
        return PermanentError("the LMS rejected the learner email as invalid", 200)
    if result.get("error") or result.get("success") is False:
        message = str(result.get("error_message") or result.get("error_type") or "")[:200]
        return PermanentError("the LMS reported an error enrolling the learner"
                              + (f": {message}" if message else ""), 200, message)
    after = result.get("after")
    if isinstance(after, dict):
        if action == "unenroll":
            if not after.get("enrollment") and not after.get("allowed"):
                return "unenrolled"
        elif after.get("enrollment"):
            return "enrolled"
        elif after.get("allowed"):
            return "allowed"
    return PermanentError(f"bulk_enroll answered 200 but did not confirm the {action}ment", 200)
