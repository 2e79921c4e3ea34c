"""What every storefront shares: the outcome of a delivery, the signature
check, and reading line items; and what a storefront module declares
(:class:`Storefront`, :class:`Endpoint`) so that the routes, the settings
and the command line follow from it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..setting_types import is_course_id, is_email
from ..store import NewItem, NewOrder, Unenroll


@dataclass(frozen=True)
class Endpoint:
    """One URL of a storefront: ``/webhooks/<storefront>/<path>``."""
    #: under /webhooks/<storefront>/, e.g. "order/create" (a trailing slash is accepted too)
    path: str
    #: the topics a delivery here is acted on for (others: stored, answered 200, ignored)
    topics: tuple[str, ...]
    #: what a delivery here does, in a few words (``edx-hooks check-config`` lists it)
    does: str


@dataclass(frozen=True)
class Storefront:
    """What a storefront module declares as ``STOREFRONT``; the package finds
    every module that does (see ``storefronts/__init__.py``)."""
    #: the provider name: config section ``[name]``/``[[name]]``, URL segment, CLI word
    name: str
    #: judge a delivery: receive(headers, body, shops, endpoint) -> Outcome; pure, no I/O
    receive: Callable[[Mapping[str, str], bytes, Sequence[Any], Endpoint], Outcome]
    #: whether one of the shops signed a delivery: verified(headers, body, shops) -> bool;
    #: asked when judging it failed, to keep its whole body for `edx-hooks replay`
    verified: Callable[[Mapping[str, str], bytes, Sequence[Any]], bool]
    #: one shop's settings: a frozen dataclass of setting_types.setting() fields
    settings: type
    #: the setting that tells this storefront's shops apart (no two alike)
    shop_key: str
    endpoints: tuple[Endpoint, ...]
    #: how two values of shop_key compare (``str.lower``: without case)
    normalize: Callable[[str], str] = str.lower

    def shop_id(self, shop: Any) -> str:
        return self.normalize(getattr(shop, self.shop_key))

    def endpoint(self, path: str) -> Endpoint | None:
        """The endpoint at ``path`` (under /webhooks/<name>/), if any."""
        path = path.strip("/")
        return next((e for e in self.endpoints if e.path == path), None)


@dataclass
class Outcome:
    status: int
    reason: str
    shop: str | None = None
    order: NewOrder | None = None
    #: things worth a warning in the log that do not change the answer
    warnings: list[str] = field(default_factory=list)
    #: more fields for the log line, and its event name and level if not the usual
    extra: dict[str, str] = field(default_factory=dict)
    event: str | None = None
    level: int = 20
    #: line items to unenroll (a refund, a cancellation)
    unenroll: Unenroll | None = None
    #: a shop's signature verified, though the delivery is rejected (a defect
    #: of ours): its whole body is kept, whatever the rejected-bytes budget
    verified: bool = False


def rejected(status: int, reason: str, shop: str | None = None) -> Outcome:
    return Outcome(status, reason, shop)


def ignored(reason: str, shop: str | None, warning: str | None = None) -> Outcome:
    """A genuine delivery that is not acted on: stored, logged, answered 200 so
    the shop neither retries it nor disables the webhook."""
    return Outcome(200, reason, shop, warnings=[warning] if warning else [],
                   event="delivery.ignored", level=30 if warning else 20,
                   extra={"reason": reason})


def signature_valid(body: bytes, secrets: str | list[str], signature: str) -> bool:
    """Whether ``signature`` is the base64 HMAC-SHA256 of ``body`` under one of
    ``secrets`` (several while a secret is being rotated).

    Constant-time comparison; a signature that is not base64 is simply invalid.
    """
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    valid = False
    for secret in [secrets] if isinstance(secrets, str) else secrets:
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
        valid |= hmac.compare_digest(expected, given)
    return valid


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return doc if isinstance(doc, dict) else None


def external_id(value: Any) -> str | None:
    """A storefront id as text: a positive integer, or a non-empty string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    if isinstance(value, str) and value.strip() and len(value) <= 64:
        return value.strip()
    return None


def make_item(item_id: str, sku: Any, email: Any, email_hint: str) -> NewItem:
    """A line item to store, failed at once when it cannot be enrolled.

    ``email_hint`` says where the storefront keeps the learner email, for the
    recorded reason.
    """
    if isinstance(sku, (int, float)) and not isinstance(sku, bool):
        sku = str(sku)
    sku = sku.strip() if isinstance(sku, str) and sku.strip() else None
    email = email.strip() if isinstance(email, str) and email.strip() else None
    item = NewItem(external_id=item_id, sku=sku and sku[:255], email=email and email[:320])
    if email is None:
        item.failure = f"no learner email ({email_hint})"
    elif not is_email(email):
        item.failure = "learner email is not one valid address"
    if sku is None:
        item.sku_problem = ("no SKU: set the course id, a SKU of the catalog ([[products]]) "
                            "or a SKU the LMS redirects, on the product")
    elif sku.startswith("course-v1:"):
        if is_course_id(sku):
            item.course_id = sku
        else:
            item.sku_problem = "SKU starts with course-v1: but is not a valid course id"
    return item


#: the learner settings every storefront's shops have (see :func:`learner`)
LEARNER_EMAIL_HELP = ("where a line item's learner email is: 'property' (a line item "
                      "property named in learner_email_properties), or 'buyer' (that, or "
                      "else the buyer's email: for shops that sell only to who pays)")
PROPERTIES_HELP = "the names of the line item property holding the learner email, any case"


def learner(found: Callable[[dict[str, Any]], Any], buyer: Any,
            fallback: str) -> Callable[[dict[str, Any]], Any]:
    """A line item's learner email: what ``found`` finds in it or, with
    ``learner_email = "buyer"`` (``fallback``), the buyer's email."""
    if fallback != "buyer":
        return found
    return lambda line: found(line) or buyer


def hint(where: str, names: tuple[str, ...], fallback: str) -> str:
    """Where the learner email was looked for, for a line item's reason."""
    text = f"{where} {' or '.join(repr(n) for n in names)}"
    return text + (", nor the buyer's email" if fallback == "buyer" else "")


def line_items(value: Any, learner_email: Callable[[dict[str, Any]], Any],
               email_hint: str) -> list[NewItem]:
    """An order's line items to store: each keyed by its id (or its position),
    each with its SKU and the learner email ``learner_email`` finds in it."""
    if not isinstance(value, list):
        return []
    found = []
    for position, line in enumerate(value):
        if not isinstance(line, dict):
            found.append(NewItem(external_id=f"#{position}", sku=None, email=None,
                                 failure="line item is not a JSON object"))
            continue
        item_id = external_id(line.get("id")) or f"#{position}"
        found.append(make_item(item_id, line.get("sku"), learner_email(line), email_hint))
    return found
