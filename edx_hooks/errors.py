"""Every exception edx-hooks raises, in one place (HTTPX's ``_exceptions.py``
is the model). This module imports nothing from the package: any layer may
raise or catch these.

Two families, kept apart on purpose:

**Errors** -- something did not work; each ``str()`` is one line for the
operator or the item's recorded reason::

    EdxHooksError
    ├── ConfigError        a setting is missing or wrong (config, setting_types)
    ├── SchemaError        the database cannot be used as it is (store.migrate)
    ├── StoreClosed        a write asked of a store closing or closed (store.writer)
    ├── Held               another process holds the service's lock (lock)
    ├── Failure            ends a CLI command with its message and exit code (cli)
    ├── SignInError        the console's sign-in with the LMS failed (console.signin)
    ├── ShopAPIError       a shop's API did not give what was asked (storefronts.readback,
    │                      reconcile)
    └── LMSError           an LMS call did not succeed (lms, batches, enrollment)
        ├── TransientError     no answer, or a 5xx: a later attempt may succeed
        │   ├── OutcomeUnknown the request went out, its answer was lost: ask the LMS
        │   └── Throttled      429: wait ``retry_after``; not a failed attempt
        └── PermanentError     refused for a reason another attempt cannot change

**Signals** -- control flow, not failures: they tell the code that waited
what happened instead, and are never recorded as an item's error::

    Signal
    ├── Halted      the service is stopping: the LMS call was not made (no attempt used)
    └── Withdrawn   the item's refund or cancellation came while it waited for its
                    batch: not sent (batches)

``StoreClosed`` stays a ``RuntimeError`` too, and each class is re-exported
from the module that raised it before, so ``from edx_hooks.lms import
LMSError`` and the like keep working.
"""

from __future__ import annotations

#: exit status of a failed CLI command (a refused config is 2, see cli)
EXIT_FAILURE = 1


class EdxHooksError(Exception):
    """The base of every edx-hooks error (not of the :class:`Signal` s)."""


class ConfigError(EdxHooksError):
    """A configuration problem; ``str()`` is one line for the operator."""


class SchemaError(EdxHooksError):
    """The database cannot be used as it is; ``str()`` is one line saying why
    and what to do."""


class StoreClosed(EdxHooksError, RuntimeError):
    """A write asked of a store that is closing or closed."""


class Held(EdxHooksError):
    """Another process holds the lock; ``pid`` is its pid, if it wrote one."""

    def __init__(self, path: str, pid: int | None):
        super().__init__(path, pid)
        self.path = path
        self.pid = pid


class Failure(EdxHooksError):
    """Ends a command with this one-line message and exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


class SignInError(EdxHooksError):
    """The console's sign-in could not be completed; ``str()`` says why, for the page."""


class ShopAPIError(EdxHooksError):
    """The shop's API did not give what was asked. ``kind``: ``auth`` (a
    wrong or too weak key: one error per run, with ``fix``), ``throttled``
    (still, after backing off), ``unavailable`` (timeout, refused, 5xx: the
    next run tries again), ``unparsable`` (an answer we cannot read)."""

    def __init__(self, kind: str, message: str, fix: str = ""):
        super().__init__(message)
        self.kind, self.fix = kind, fix


class LMSError(EdxHooksError):
    """An LMS call that did not succeed; ``str()`` is the reason recorded.

    ``status`` is the LMS's HTTP status (None: no answer at all) and
    ``detail`` a one-line excerpt of what it said (learner email removed).
    """

    def __init__(self, reason: str, status: int | None = None, detail: str = ""):
        super().__init__(reason)
        self.status = status
        self.detail = detail


class TransientError(LMSError):
    """No answer (connection error, timeout) or a 5xx: another attempt later
    may succeed."""


class OutcomeUnknown(TransientError):
    """The request went out and its answer was lost: a timeout while the
    LMS was answering, a connection cut before the answer, a 500, 502 or
    504 (a proxy that gave up waiting). The LMS may have done it: ask it
    (:meth:`LMSClient.shows`) before sending it again."""


class Throttled(TransientError):
    """429: wait ``retry_after`` seconds; does not count as a failed attempt."""

    def __init__(self, reason: str, retry_after: float, status: int = 429, detail: str = ""):
        super().__init__(reason, status, detail)
        self.retry_after = retry_after


class PermanentError(LMSError):
    """The LMS refused for a reason another attempt cannot change."""


class Signal(Exception):
    """The base of control-flow signals: not failures, never an item's error."""


class Halted(Signal):
    """The service is stopping: this call was not made (not an attempt)."""


class Withdrawn(Signal):
    """The item's refund or cancellation came while it waited: not sent."""
