"""WooCommerce: ``order.created`` and ``order.updated`` deliveries, and the
activation ping.

Genuine means: ``X-WC-Webhook-Source`` is the configured shop (WooCommerce
sends ``home_url('/')``, with a trailing slash) and ``X-WC-Webhook-Signature``
is the base64 HMAC-SHA256 of the raw body under the webhook's secret, HTML
entities decoded as WordPress does. The learner is the first field of type
``email`` that the Product Input Fields plugin stored in a line item's
``meta_data``; the course is the line item's SKU.

What an order's ``status`` means here (WooCommerce 10 sends ``order.updated``
for each change, and for a checkout that was only opened):

- placed (``pending``, ``on-hold``, ``processing``, ``completed``): enrolled;
  with ``require_payment``, only once ``date_paid_gmt`` is set;
- ``refunded``, ``cancelled``: never enrolled; with ``unenroll_on_refund`` its
  enrolled items are unenrolled. A later delivery (by ``date_modified_gmt``)
  showing the order placed again lifts it: its items not yet enrolled are
  enrolled after all (a cancelled unpaid order that is paid late);
- not placed (``checkout-draft``, ``draft``, ``auto-draft``, ``failed``,
  ``trash``): recorded as ``not-placed``, not acted on;
- any other (a plugin's own status): enrolled once paid, ``awaiting-payment``
  until then.

Whatever the status, a genuine delivery is answered 200: WooCommerce never
retries, and disables a webhook after more than five failures in a row.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import setting_types as config  # the setting types, not the loader
from ..store import AWAITING_PAYMENT, NOT_PLACED, NewOrder, Unenroll
from .base import (
    LEARNER_EMAIL_HELP,
    Endpoint,
    Outcome,
    Storefront,
    external_id,
    hint,
    ignored,
    learner,
    line_items,
    parse_json_object,
    rejected,
    signature_valid,
)

PROVIDER = "woocommerce"
EMAIL_HINT = "a Product Input Fields field of type email"

_FORM = "application/x-www-form-urlencoded"
#: a ping is ``webhook_id=<n>``
PING_MAX_BYTES = 256
_ENTITIES = re.compile(r"&(?:lt|gt|quot|amp|#0*3[49]|#0*38|#x0*2[267]);", re.IGNORECASE)
_DECODED = {"lt": "<", "gt": ">", "quot": '"', "amp": "&", "#34": '"', "#39": "'", "#38": "&",
            "#x22": '"', "#x27": "'", "#x26": "&"}


def signing_key(secret: str) -> str:
    """The key WooCommerce signs with: ``wp_specialchars_decode($secret, ENT_QUOTES)``.

    The admin page may show a secret with ``&amp;`` where the signature used ``&``.
    """
    def decode(m: re.Match) -> str:
        name = m.group(0)[1:-1].lower()
        if name.startswith("#x"):
            name = "#x" + name[2:].lstrip("0")
        elif name.startswith("#"):
            name = "#" + name[1:].lstrip("0")
        return _DECODED.get(name, m.group(0))
    return _ENTITIES.sub(decode, secret)


def normalize_source(url: str) -> str:
    """``https://Shop.Example/`` and ``https://shop.example`` are one source:
    scheme and host compared without case, one trailing slash ignored."""
    parts = urllib.parse.urlsplit(url.strip())
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo}@{hostport.lower()}"
    else:
        netloc = netloc.lower()
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, path, parts.query,
                                    parts.fragment))


#: topics the order endpoints act on (both endpoints alike)
TOPICS = ("order.created", "order.updated", "order.restored")


def home_url(value: Any) -> str:
    """The ``source`` setting: the shop's http(s) home URL."""
    value = config.nonempty(value)
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be the shop's http(s) home URL such as https://shop.example/")
    return value


@dataclass(frozen=True, kw_only=True)
class Shop:
    """One WooCommerce shop's settings: ``[woocommerce]``, or ``[[woocommerce]]``."""
    source: str = config.setting(config.REQUIRED, home_url,
                                 "the shop's home URL, as in X-WC-Webhook-Source (e.g. "
                                 "https://shop.example/)")
    secret: list[str] = config.setting(config.REQUIRED, config.secrets,
                                       "the webhook's secret; a list of secrets while rotating")
    require_payment: bool = config.setting(False, config.boolean,
                                           "record orders without date_paid_gmt as "
                                           "awaiting-payment; enroll on a paid update")
    unenroll_on_refund: bool = config.setting(False, config.boolean,
                                              "unenroll the items of a refunded or cancelled "
                                              "order (destructive: off by default)")
    learner_email_properties: tuple[str, ...] = config.setting(
        ("email",), config.names, "besides the first field of type email: the names (any "
                                  "case) of a field or meta_data entry holding the learner email")
    learner_email: str = config.setting("property", config.choice("property", "buyer"),
                                        LEARNER_EMAIL_HELP)
    consumer_key: str = config.setting("", config.optional_secret,
                                       "REST API consumer key (ck_...), permission Read (Read/"
                                       "Write to reactivate webhooks): orders are read back "
                                       "(reconcile); empty = off")
    consumer_secret: str = config.setting("", config.optional_secret,
                                          "REST API consumer secret (cs_...) of that key")
    reactivate_webhooks: bool = config.setting(False, config.boolean,
                                               "set a disabled or paused webhook pointing here "
                                               "active again (needs a Read/Write key)")

    def __post_init__(self) -> None:
        if bool(self.consumer_key) != bool(self.consumer_secret):
            raise config.ConfigError(
                f"woocommerce shop {self.source}: consumer_key and consumer_secret go together: "
                "set both (a REST API key, WooCommerce > Settings > Advanced > REST API) or "
                "neither")

    @property
    def readable(self) -> bool:
        """Whether its orders can be read back (a REST API key is set)."""
        return bool(self.consumer_key)

#: statuses of an order the customer has placed: enrolled (with
#: require_payment, once paid)
PLACED = ("pending", "on-hold", "processing", "completed")
#: an order in one of these statuses is never enrolled; with
#: unenroll_on_refund its enrolled items are unenrolled
UNDONE = ("refunded", "cancelled")
#: not placed (a checkout opened and left, a failed payment, the bin):
#: recorded and answered 200, not acted on until a delivery shows it placed
NOT_PLACED_STATUSES = ("checkout-draft", "draft", "auto-draft", "failed", "trash")
# Any other status comes from a plugin (shipped, delivered, partially-paid,
# awaiting-quote...): acted on once the order is paid (date_paid_gmt), since
# such statuses follow payment; before that it waits as awaiting-payment.


def receive(headers: Mapping[str, str], body: bytes, shops: Sequence[Shop],
            endpoint: Endpoint) -> Outcome:
    """Judge a delivery: a ping, a genuine order, or a rejection."""
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == _FORM:
        return _ping(body)
    if content_type != "application/json" and not content_type.endswith("+json"):
        return rejected(400, "unsupported-content-type")
    settings = _signer(headers, body, shops)
    if isinstance(settings, Outcome):
        return settings
    shop = normalize_source(settings.source)
    doc = parse_json_object(body)
    if doc is None:
        return rejected(400, "body-not-json-object", shop)
    topic = headers.get("X-WC-Webhook-Topic")
    if topic is not None and topic.strip().lower() not in endpoint.topics:
        return ignored("topic-not-handled-here", shop,
                       f"topic {topic[:60]!r} sent to an order endpoint: check the webhook's "
                       "topic in WooCommerce")
    return judge(doc, settings)


def judge(doc: dict[str, Any], settings: Shop) -> Outcome:
    """What a genuine order means (placed, paid, refunded, cancelled...):
    a delivery's body, or the same REST object read back from the shop's
    API (reconciliation), decided alike."""
    shop = normalize_source(settings.source)
    order_id = external_id(doc.get("id"))
    if order_id is None:
        return rejected(400, "order-id-missing", shop)
    status = str(doc.get("status") or "").strip().lower()[:40]
    extra = {"status": status or "-"}
    modified = _gmt(doc.get("date_modified_gmt"))
    if status in UNDONE:
        # Kept whatever unenroll_on_refund says: the order's items are never
        # enrolled, even one whose order.created arrives after this, until a
        # delivery modified later shows the order placed again (WooCommerce
        # can take a cancelled order's late payment).
        return Outcome(200, status if settings.unenroll_on_refund else f"order-{status}", shop,
                       _order(doc, order_id, shop, settings, modified=modified),
                       unenroll=Unenroll(PROVIDER, shop, order_id, None, status,
                                         act=settings.unenroll_on_refund, modified_at=modified),
                       extra=extra)

    warnings = []
    paid_at = doc.get("date_paid_gmt")
    paid = paid_at not in (None, "")
    if paid and _gmt(paid_at) is None:
        warnings.append(f"date_paid_gmt {str(paid_at)[:40]!r} of order {order_id} is not a "
                        "date; taken as paid")
    # Never 402 an unpaid order: WooCommerce disables a webhook after more
    # than five failed deliveries in a row, and every unpaid update would be
    # one. It is recorded and answered 200; the paid update enrolls it.
    if status in NOT_PLACED_STATUSES:
        hold = NOT_PLACED
    elif not paid and (settings.require_payment or status not in PLACED):
        hold = AWAITING_PAYMENT
    else:
        hold = None
    order = _order(doc, order_id, shop, settings, hold, modified)
    reason = hold or ("accepted" if order.items else "accepted-no-line-items")
    return Outcome(200, reason, shop, order, warnings=warnings, extra=extra)


def _signer(headers: Mapping[str, str], body: bytes, shops: Sequence[Shop]) -> Shop | Outcome:
    """The shop whose secret signed this delivery, or the rejection."""
    source = headers.get("X-WC-Webhook-Source")
    signature = headers.get("X-WC-Webhook-Signature")
    if not source:
        return rejected(400, "missing-source")
    shop = normalize_source(source)[:255]
    if not signature:
        return rejected(400, "missing-signature", shop)
    settings = next((s for s in shops if normalize_source(s.source) == shop), None)
    if settings is None:
        return rejected(403, "unknown-source", shop)
    if not signature_valid(body, [signing_key(s) for s in settings.secret], signature):
        return rejected(403, "bad-signature", shop)
    return settings


def verified(headers: Mapping[str, str], body: bytes, shops: Sequence[Shop]) -> bool:
    """Whether a configured shop signed this delivery."""
    return not isinstance(_signer(headers, body, shops), Outcome)


def _order(doc: dict[str, Any], order_id: str, shop: str, settings: Shop,
           hold: str | None = None, modified: dt.datetime | None = None) -> NewOrder:
    number = doc.get("number")
    name = f"#{number}" if isinstance(number, (str, int)) and str(number).strip() \
        else f"#{order_id}"
    names = settings.learner_email_properties
    billing = doc.get("billing")
    email = learner(lambda line: learner_email(line.get("meta_data"), names),
                    billing.get("email") if isinstance(billing, dict) else None,
                    settings.learner_email)
    where = EMAIL_HINT + ("" if names == ("email",) else
                          hint(", or a field or meta_data entry named", names, "property"))
    if settings.learner_email == "buyer":
        where += ", nor the buyer's email"
    return NewOrder(provider=PROVIDER, shop=shop, external_id=order_id, name=name, hold=hold,
                    modified_at=modified,
                    items=[] if hold else line_items(doc.get("line_items"), email, where))


def _ping(body: bytes) -> Outcome:
    """The activation ping: form-encoded ``webhook_id=<n>``, unsigned. Being
    unsigned, anyone can send one: a body larger than a ping's is refused, so
    that no forgery is kept whole as an accepted delivery."""
    if len(body) > PING_MAX_BYTES:
        return rejected(400, "form-too-large")
    try:
        form = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        form = {}
    webhook_id = (form.get("webhook_id") or [""])[0].strip()
    if not webhook_id:
        return rejected(400, "form-without-webhook-id")
    return Outcome(200, "ping", extra={"webhook_id": webhook_id[:40]}, event="delivery.ping")


def _gmt(value: Any) -> dt.datetime | None:
    """A WooCommerce ``*_gmt`` date as naive UTC; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when
    except (ValueError, OverflowError):  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        return None


def learner_email(meta_data: Any, names: tuple[str, ...] = ("email",)) -> Any:
    """The ``_value`` of the first field of type ``email`` in any meta_data
    entry whose value is a list of field dicts (Product Input Fields keeps its
    fields under ``_alg_wc_pif_global`` / ``_alg_wc_pif_local``). Other
    plugins' strings, numbers, dicts and lists of strings are passed over.
    Without such a field: a field titled, or a meta_data entry keyed (its
    ``key`` or ``display_key``), with one of ``names``, any case."""
    if not isinstance(meta_data, list):
        return None
    entries = [e for e in meta_data if isinstance(e, dict)]
    fields = [f for e in entries if isinstance(e.get("value"), list)
              for f in e["value"] if isinstance(f, dict)]
    for field in fields:
        if str(field.get("type", "")).lower() == "email":
            return field.get("_value")
    for name in names:
        for field in fields:
            if str(field.get("title", "")).strip().lower() == name and field.get("_value"):
                return field.get("_value")
        for entry in entries:
            keys = (str(entry.get("key", "")), str(entry.get("display_key", "")))
            if name in (k.strip().lower() for k in keys) and isinstance(entry.get("value"), str):
                return entry["value"]
    return None


STOREFRONT = Storefront(
    name=PROVIDER, receive=receive, verified=verified, settings=Shop, shop_key="source",
    normalize=normalize_source,
    endpoints=(
        # order.created and order.updated are handled alike: a shop that
        # enrolls only on payment subscribes order.updated, others order.created
        Endpoint("order/create", TOPICS, "enrolls a placed order (with require_payment, "
                 "once paid); refunded or cancelled: never enrolls, with "
                 "unenroll_on_refund unenrolls"),
        Endpoint("order/update", TOPICS, "the same as order/create: subscribe Order updated "
                 "here to enroll on payment"),
    ))
