"""The fixed vocabulary of the segment language: event types, functions, fields, units."""

from __future__ import annotations

#: every canonical event type (schemas/ validates the same list)
ALL_EVENT_TYPES: tuple[str, ...] = (
    "page_view", "cart_add", "cart_remove", "checkout", "purchase", "email_sent", "email_open",
    "email_click", "email_unsubscribe", "email_bounce", "identify", "alias", "forget",
)
#: types an event set may name: alias and forget change identity, they are not behaviour
EVENT_TYPES: frozenset[str] = frozenset(ALL_EVENT_TYPES) - {"alias", "forget"}
#: types that change the cart (cart.* fields)
CART_TYPES: frozenset[str] = frozenset({"cart_add", "cart_remove", "purchase"})

CART_FIELDS: frozenset[str] = frozenset({"items", "lines", "value", "last_change"})
PURCHASE_FIELDS: frozenset[str] = frozenset({"count", "total", "aov", "first", "last"})
PROFILE_NAMESPACES: frozenset[str] = frozenset({"trait", "cart", "purchases"})

AGGREGATES: frozenset[str] = frozenset({"count", "sum", "avg"})
INSTANT_FUNCS: frozenset[str] = frozenset({"last", "first"})
DATE_FUNCS: frozenset[str] = frozenset({"days_until_anniversary", "age_years", "date"})
FUNCTIONS: frozenset[str] = AGGREGATES | INSTANT_FUNCS | DATE_FUNCS | {"since", "hour_share"}

KEYWORDS: frozenset[str] = frozenset(
    {"and", "or", "not", "between", "in", "within", "is", "null", "true", "false", "now",
     "then", "no", "where"}
)

#: duration units in milliseconds
UNITS: dict[str, int] = {
    "ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
}
