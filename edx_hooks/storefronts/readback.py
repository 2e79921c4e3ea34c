"""What the storefronts' API clients share (reading orders back from a shop,
for reconciliation): one HTTP client with explicit timeouts, and the errors
a shop's API answers with, sorted by what the reconciler does about them.

Each storefront's client lives beside it (``woocommerce_api``,
``shopify_api``) and yields the orders changed since a time as pages of
(order id, [(what, Outcome)]): each order judged by the storefront's own
code, as its webhook would have been.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from ..errors import ShopAPIError  # re-exported: the APIs raise it from here
from .base import Outcome

#: seconds to connect to a shop's API, and for one page to arrive
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0
#: a throttled request is tried this many times in one run, then left to the next run
THROTTLE_TRIES = 4
#: the longest wait for a throttle to clear, per try
MAX_BACKOFF_SECONDS = 30.0

#: kinds of :class:`ShopAPIError`
AUTH, THROTTLED, UNAVAILABLE, UNPARSABLE = "auth", "throttled", "unavailable", "unparsable"


@dataclass
class Found:
    """One order read back: its id, the body stored as the read-back
    delivery, and its storefront's judgements of it, one per endpoint its
    webhooks would have come to (an order, its cancellation, its refunds):
    (endpoint path, judge), ``judge()`` giving the :class:`Outcome`."""
    order_id: str
    body: bytes
    judges: list[tuple[str, Callable[[], Outcome]]]


@dataclass
class Page:
    """A page of orders; ``error`` when it did not parse (its orders are not
    known: the watermark must not pass it)."""
    orders: list[Found] = field(default_factory=list)
    error: str | None = None
    number: int = 1


class Client(Protocol):
    """A storefront's API client, as the reconciler uses it."""
    shop_id: str

    def changed_since(self, since: dt.datetime) -> AsyncIterator[Page]: ...

    def close(self) -> None: ...


class HTTP:
    """One shop API's HTTP client (Tornado's), with explicit timeouts."""

    def __init__(self, connect_timeout: float | None = None,
                 request_timeout: float | None = None):
        self.connect_timeout = connect_timeout or CONNECT_TIMEOUT
        self.request_timeout = request_timeout or REQUEST_TIMEOUT
        self._http = AsyncHTTPClient(force_instance=True)

    async def fetch(self, url: str, **kwargs: Any) -> HTTPResponse:
        """The answer, whatever its status; :class:`ShopAPIError`
        ``unavailable`` when none came (timeout, refused, cut)."""
        request = HTTPRequest(url, connect_timeout=self.connect_timeout,
                              request_timeout=self.request_timeout, follow_redirects=False,
                              **kwargs)
        try:
            return await self._http.fetch(request, raise_error=False)
        except HTTPClientError as e:
            raise ShopAPIError(UNAVAILABLE, f"no answer ({e})") from None
        except (TimeoutError, OSError) as e:
            raise ShopAPIError(UNAVAILABLE, f"unreachable ({e.__class__.__name__}: {e})"
                               ) from None

    def close(self) -> None:
        self._http.close()


def checked(answer: HTTPResponse, what: str, auth_fix: str) -> HTTPResponse:
    """``answer`` if it is a 2xx; otherwise the :class:`ShopAPIError` it means."""
    if 200 <= answer.code < 300:
        return answer
    if answer.code in (401, 403):
        raise ShopAPIError(AUTH, f"{what} answered {answer.code}", auth_fix)
    if answer.code == 429:
        raise ShopAPIError(THROTTLED, f"{what} answered 429")
    if answer.code == 599 or answer.code >= 500:
        raise ShopAPIError(UNAVAILABLE, f"{what} answered {answer.code}")
    raise ShopAPIError(UNAVAILABLE, f"{what} answered {answer.code}")


def retry_after(answer: HTTPResponse, default: float = 2.0) -> float:
    """Seconds a 429's ``Retry-After`` asks for (capped)."""
    try:
        wait = float(answer.headers.get("Retry-After", default))
    except ValueError:
        wait = default
    return min(max(wait, 0.0), MAX_BACKOFF_SECONDS)


def iso(when: dt.datetime) -> str:
    """Naive UTC as ISO 8601 with a Z, to the second."""
    return when.replace(microsecond=0).isoformat() + "Z"
