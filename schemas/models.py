"""Typed models of the public event: the envelope and the properties of each of the 13 types.

These :class:`msgspec.Struct` classes are the single source of truth for the event contract:
the validator (:mod:`schemas.validation`) converts every incoming event through them, and the
published JSON Schema files (:mod:`schemas.jsonschema`) are generated from them. Rules that a
static schema cannot say (timestamp bounds relative to now, "customer_id or anonymous_id",
reserved property names, size and nesting limits of extra properties) live in the validator and
are documented in ``docs/events.md``.

Conventions:

* optional fields accept ``null`` (read as "absent"), except where a default is declared
  (``quantity`` defaults to 1 and must be an integer >= 1 when given);
* a bool is never accepted where a number is expected;
* extra (undeclared) properties are allowed and kept unchanged in the canonical event;
  extra *envelope* fields are ignored and dropped.

>>> import msgspec
>>> ev = msgspec.convert({"event_id": "e1", "type": "cart_add", "customer_id": "c1",
...     "timestamp": 1, "properties": {"product_id": "p1", "price": 9.5}}, AnyEvent)
>>> type(ev).__name__, ev.properties.quantity
('CartAddEvent', 1)
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Final, Literal, TypeAlias

import msgspec
from msgspec import Meta, Struct, field

# --- constrained scalar types -------------------------------------------------------------
# Patterns end in ``$(?!\n)``: msgspec matches with Python's ``re.search``, where a bare ``$``
# also matches before a trailing newline ("EUR\n"); JSON Schema (ECMA-262) reads it the same.

#: Identifier: 1..128 characters, no control characters (C0, DEL or C1).
Id: TypeAlias = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]+$(?!\n)",
        description="1..128 characters, no control characters",
    ),
]
#: Short label (category, product id, campaign, ...): up to 256 characters.
Label: TypeAlias = Annotated[str, Meta(max_length=256)]
#: URL or referrer: up to 8192 characters.
Url: TypeAlias = Annotated[str, Meta(max_length=8192)]
#: Free text (forget reason): up to 1024 characters.
Text: TypeAlias = Annotated[str, Meta(max_length=1024)]
#: A money amount or price: a number >= 0 (integers accepted).
Money: TypeAlias = Annotated[float, Meta(ge=0)]
#: A count of items: an integer >= 1.
Quantity: TypeAlias = Annotated[int, Meta(ge=1)]
#: ISO 4217 currency code: three upper-case letters.
Currency: TypeAlias = Annotated[
    str, Meta(pattern=r"^[A-Z]{3}$(?!\n)", description="ISO 4217 code")
]
#: ISO 3166-1 alpha-2 country code: two upper-case letters.
Country: TypeAlias = Annotated[
    str, Meta(pattern=r"^[A-Z]{2}$(?!\n)", description="ISO 3166-1 alpha-2")
]
#: RFC 3339 date-time with an offset ("Z" or "+02:00"); naive date-times are rejected.
Rfc3339: TypeAlias = Annotated[_dt.datetime, Meta(tz=True)]
#: Epoch milliseconds (integer) or an RFC 3339 string with an offset.
Timestamp: TypeAlias = Annotated[
    int | Rfc3339,
    Meta(description="integer epoch milliseconds, or RFC 3339 date-time with an offset"),
]
#: The value of an extra (not well-known) trait: a JSON scalar.
TraitValue: TypeAlias = str | int | float | bool | None


class _Props(Struct, kw_only=True, omit_defaults=True, gc=False):
    """Base of every properties model (keyword-only; undeclared keys are allowed)."""


# --- properties of each type --------------------------------------------------------------


class PageViewProperties(_Props):
    """A page was viewed. ``device`` is e.g. iphone, ipad, mac, android, windows, linux, other."""

    url: Url
    category: Label | None = None
    product_id: Label | None = None
    price: Money | None = None
    device: Label | None = None
    os: Label | None = None
    referrer: Url | None = None
    campaign: Label | None = None


class CartAddProperties(_Props):
    """A product was added to the cart (``quantity`` defaults to 1)."""

    product_id: Label
    price: Money
    quantity: Quantity = 1
    category: Label | None = None
    currency: Label | None = None


class CartRemoveProperties(_Props):
    """A product was removed from the cart; no ``quantity`` means all of that product."""

    product_id: Label
    quantity: Quantity | None = None


class CheckoutProperties(_Props):
    """A checkout step was reached."""

    cart_value: Money | None = None
    step: Label | None = None


class PurchaseItem(_Props):
    """One line of a purchase (``quantity`` defaults to 1)."""

    product_id: Label
    quantity: Quantity = 1
    price: Money | None = None
    category: Label | None = None


class PurchaseProperties(_Props):
    """An order was placed; it empties the customer's cart."""

    order_id: Label
    amount: Money
    currency: Currency
    items: list[PurchaseItem] = []


class EmailProperties(_Props):
    """An email was sent or opened."""

    campaign_id: Label
    email_id: Label | None = None


class EmailClickProperties(EmailProperties):
    """A link in an email was clicked."""

    url: Url | None = None


class EmailUnsubscribeProperties(_Props):
    """The customer unsubscribed from a campaign or list."""

    campaign_id: Label | None = None
    list_id: Label | None = None


class EmailBounceProperties(_Props):
    """An email bounced."""

    campaign_id: Label | None = None
    kind: Literal["hard", "soft"] | None = None


class Traits(_Props):
    """Profile traits; the well-known ones are typed, any other trait is a JSON scalar."""

    email: Annotated[str, Meta(max_length=320)] | None = None
    first_name: Label | None = None
    country: Country | None = None
    city: Label | None = None
    gender: Label | None = None
    birthday: _dt.date | None = None
    signup_date: _dt.date | None = None
    satisfaction: Annotated[float, Meta(ge=0, le=10)] | None = None


class IdentifyProperties(_Props):
    """Profile traits were set."""

    traits: Traits


class AliasProperties(_Props):
    """No properties: the envelope's anonymous_id becomes its customer_id."""


class ForgetProperties(_Props):
    """Erase everything known about the routing id (GDPR)."""

    reason: Text | None = None


# --- envelope -----------------------------------------------------------------------------


class Envelope(Struct, kw_only=True, tag_field="type", gc=False):
    """Fields common to every event; ``type`` is the tag that selects the subclass."""

    event_id: Id
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    timestamp: Timestamp
    source: Annotated[str, Meta(min_length=1, max_length=128)] = "unknown"
    schema_version: Literal[1] = 1


class PageViewEvent(Envelope, tag="page_view"):
    """A page (or product page) was viewed."""

    properties: PageViewProperties


class CartAddEvent(Envelope, tag="cart_add"):
    """A product was added to the cart."""

    properties: CartAddProperties


class CartRemoveEvent(Envelope, tag="cart_remove"):
    """A product was removed from the cart."""

    properties: CartRemoveProperties


class CheckoutEvent(Envelope, tag="checkout"):
    """A checkout step was reached."""

    properties: CheckoutProperties = field(default_factory=CheckoutProperties)


class PurchaseEvent(Envelope, tag="purchase"):
    """An order was placed (it empties the cart)."""

    properties: PurchaseProperties


class EmailSentEvent(Envelope, tag="email_sent"):
    """A marketing email was sent."""

    properties: EmailProperties


class EmailOpenEvent(Envelope, tag="email_open"):
    """A marketing email was opened."""

    properties: EmailProperties


class EmailClickEvent(Envelope, tag="email_click"):
    """A link in a marketing email was clicked."""

    properties: EmailClickProperties


class EmailUnsubscribeEvent(Envelope, tag="email_unsubscribe"):
    """The customer unsubscribed from a campaign or list."""

    properties: EmailUnsubscribeProperties = field(default_factory=EmailUnsubscribeProperties)


class EmailBounceEvent(Envelope, tag="email_bounce"):
    """A marketing email bounced."""

    properties: EmailBounceProperties = field(default_factory=EmailBounceProperties)


class IdentifyEvent(Envelope, tag="identify"):
    """Profile traits were set."""

    properties: IdentifyProperties


class AliasEvent(Envelope, tag="alias"):
    """The anonymous visitor (``anonymous_id``) becomes the known customer (``customer_id``).

    Both ids are required and must differ (checked by the validator).
    """

    properties: AliasProperties = field(default_factory=AliasProperties)


class ForgetEvent(Envelope, tag="forget"):
    """Erase everything known about the routing id (GDPR)."""

    properties: ForgetProperties = field(default_factory=ForgetProperties)


EVENT_CLASSES: Final[tuple[type[Envelope], ...]] = (
    PageViewEvent, CartAddEvent, CartRemoveEvent, CheckoutEvent, PurchaseEvent,
    EmailSentEvent, EmailOpenEvent, EmailClickEvent, EmailUnsubscribeEvent, EmailBounceEvent,
    IdentifyEvent, AliasEvent, ForgetEvent,
)  # fmt: skip

AnyEvent: TypeAlias = (
    PageViewEvent | CartAddEvent | CartRemoveEvent | CheckoutEvent | PurchaseEvent
    | EmailSentEvent | EmailOpenEvent | EmailClickEvent | EmailUnsubscribeEvent
    | EmailBounceEvent | IdentifyEvent | AliasEvent | ForgetEvent
)  # fmt: skip


def type_name(cls: type[Envelope]) -> str:
    """The ``type`` tag of an event class (``type_name(PurchaseEvent) == "purchase"``)."""
    tag = msgspec.inspect.type_info(cls).tag  # type: ignore[attr-defined]
    assert isinstance(tag, str)
    return tag


#: type tag -> event class, in the documented order
EVENT_TYPES: Final[dict[str, type[Envelope]]] = {type_name(c): c for c in EVENT_CLASSES}

#: envelope field names; a property may not use one (see docs/events.md, "reserved names")
RESERVED_NAMES: Final[frozenset[str]] = frozenset(
    {"event_id", "type", "customer_id", "anonymous_id", "timestamp", "source", "schema_version",
     "properties"}
)  # fmt: skip


def properties_class(cls: type[Envelope]) -> type[_Props]:
    """The properties model of an event class."""
    hint = msgspec.inspect.type_info(cls).fields  # type: ignore[attr-defined]
    for f in hint:
        if f.name == "properties":
            return f.type.cls  # type: ignore[no-any-return]
    raise TypeError(f"{cls.__name__} has no properties field")  # pragma: no cover
