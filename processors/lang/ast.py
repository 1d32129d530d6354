"""Abstract syntax tree of the segment language.

The parser (``processors.lang.parser``) produces these nodes; the compiler turns them into fast
evaluators and the test oracle interprets them directly, so the node set is the contract between
the two. Every node carries ``pos``: the 0-based character offset in the condition text, used by
validation messages ("segment 'x', condition column 17: ...").

Value domains (``None`` is the language's ``null``):
- instants are int epoch milliseconds; durations are int milliseconds;
- any comparison with a ``null`` side is false; arithmetic with ``null`` gives ``null``;
- ``count``/``sum`` of nothing are 0, ``avg``/``last``/``first``/``since`` of nothing are null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal as Lit

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Node:
    pos: int


# --- leaves -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A string, number, boolean or null literal."""

    value: Scalar


@dataclass(frozen=True, slots=True)
class Duration(Node):
    """A duration literal such as ``30d``; ``ms`` is its length in milliseconds."""

    ms: int


@dataclass(frozen=True, slots=True)
class Now(Node):
    """The evaluation instant (``now``)."""


@dataclass(frozen=True, slots=True)
class ProfileRef(Node):
    """A profile value: ``trait.<name>``, ``cart.<field>`` or ``purchases.<field>``.

    cart fields: ``items`` (total quantity), ``lines`` (distinct products), ``value`` (sum of
    price * quantity), ``last_change`` (instant of the last cart_add/cart_remove/purchase).
    purchases fields (lifetime): ``count``, ``total``, ``aov`` (total / count), ``first``,
    ``last`` (instants).
    """

    namespace: Lit["trait", "cart", "purchases"]
    field: str


@dataclass(frozen=True, slots=True)
class SegmentRef(Node):
    """``segment.<name>``: whether the customer is a member of segment ``name`` at the same
    instant (a boolean). The loader resolves the name and orders segments by dependency."""

    name: str


@dataclass(frozen=True, slots=True)
class PropRef(Node):
    """An event property inside a ``where`` filter, e.g. ``category``.

    ``extra`` is true for ``props.NAME``: a property the event type does not declare, so the
    loader does not check its name.
    """

    name: str
    extra: bool = False


# --- event selections and aggregates ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EventSet(Node):
    """Events of any of ``types`` (``email_open|email_click``) matching ``filter`` if given.

    A filter only uses PropRef, Literal, Compare, In, IsNull, And, Or, Not.
    """

    types: tuple[str, ...]
    filter: Expr | None


@dataclass(frozen=True, slots=True)
class Aggregate(Node):
    """``count(E, W)``, ``sum(E.prop, W)`` or ``avg(E.prop, W)`` over event time ``(now-W, now]``.

    ``prop`` is None for count. Events whose property is missing or not a number are skipped by
    sum and avg (and still counted by count). ``prop_extra`` is true for ``E.props.NAME`` (an
    undeclared property, not checked by the loader).
    """

    func: Lit["count", "sum", "avg"]
    events: EventSet
    prop: str | None
    window_ms: int
    prop_extra: bool = False


@dataclass(frozen=True, slots=True)
class Instant(Node):
    """``last(E)`` / ``first(E)``: the latest / earliest event time <= now of E, or null."""

    func: Lit["last", "first"]
    events: EventSet


@dataclass(frozen=True, slots=True)
class Since(Node):
    """``since(E)``: the duration ``now - last(E)``, or null. Only compared with a duration."""

    events: EventSet


@dataclass(frozen=True, slots=True)
class Within(Node):
    """``X within D``: X is an instant, not null, and ``now - D < X <= now``."""

    instant: Expr
    duration_ms: int


@dataclass(frozen=True, slots=True)
class ThenNo(Node):
    """``A then no B within T``: with ``ta`` the last A <= now, true iff ``ta + T <= now`` and no
    B has event time in ``[ta, now]``. (Abandoned cart: ``cart_add then no purchase within 1h``.)
    """

    first: EventSet
    then: EventSet
    within_ms: int


@dataclass(frozen=True, slots=True)
class Sequence(Node):
    """``A then B [then C ...] within T [on PROP]``: the completion instants of a positive
    sequence (not a value by itself: the argument of ``last(...)`` / ``since(...)``).

    A completion at ``tn`` is a choice of *distinct* events ``e1 .. en``, ``ek`` in
    ``steps[k]``, with ``t1 <= t2 <= ... <= tn <= t1 + T`` (equal times count); with ``on``,
    every step's property ``on`` is equal to (and, like ``==``, not null in) the first's.
    ``on_extra`` is true for ``on props.NAME`` (an undeclared property).
    """

    steps: tuple[EventSet, ...]
    within_ms: int
    on: str | None = None
    on_extra: bool = False


@dataclass(frozen=True, slots=True)
class Completion(Node):
    """``last(SEQ)``: the latest completion instant ``<= now`` of the sequence, or null;
    ``since(SEQ)``: ``now - last(SEQ)`` (a duration, only compared), or null."""

    func: Lit["last", "since"]
    seq: Sequence


@dataclass(frozen=True, slots=True)
class HourShare(Node):
    """``hour_share(E, FROM, TO)``: share (0..1) of all E events whose UTC hour of day h has
    ``FROM <= h <= TO`` (a range wrapping midnight when FROM > TO), null when no E event."""

    events: EventSet
    from_hour: int
    to_hour: int


@dataclass(frozen=True, slots=True)
class DateFunc(Node):
    """Functions of a calendar date given as ``YYYY-MM-DD`` (or an instant), at ``now`` (UTC):

    - ``days_until_anniversary(d)``: whole days from today to the next anniversary of d
      (0 on the day; Feb 29 is celebrated on Feb 28 in non-leap years);
    - ``age_years(d)``: whole years since d;
    - ``date(d)``: the instant of d's midnight UTC (for ``date(trait.signup_date) within 30d``).
    Null when the argument is null or not a valid date.
    """

    func: Lit["days_until_anniversary", "age_years", "date"]
    arg: Expr


# --- operators ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Arith(Node):
    """``left op right`` for op in + - * /; division by zero gives null."""

    op: Lit["+", "-", "*", "/"]
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Neg(Node):
    item: Expr


@dataclass(frozen=True, slots=True)
class Compare(Node):
    """``left op right``, op in == != < <= > >=; false if either side is null (also for !=)."""

    op: Lit["==", "!=", "<", "<=", ">", ">="]
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Between(Node):
    """``value between low and high``: inclusive on both ends; false on null."""

    value: Expr
    low: Expr
    high: Expr


@dataclass(frozen=True, slots=True)
class In(Node):
    """``value in ["a", "b"]``: false when value is null."""

    value: Expr
    options: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class IsNull(Node):
    """``value is null`` (negate=False) / ``value is not null`` (negate=True)."""

    value: Expr
    negate: bool


@dataclass(frozen=True, slots=True)
class And(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not(Node):
    item: Expr


Expr = (
    Literal | Duration | Now | ProfileRef | SegmentRef | PropRef | Aggregate | Instant | Since
    | Within | ThenNo | Completion | HourShare | DateFunc | Arith | Neg | Compare | Between | In
    | IsNull | And | Or | Not
)


# --- definitions --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SegmentDef:
    """One segment of the definitions file."""

    name: str
    description: str
    condition_text: str
    condition: Expr
    enabled: bool = True
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Catalogue:
    """A whole definitions file. ``version`` is the definitions version stamped on changes."""

    version: str
    allowed_lateness_ms: int
    segments: tuple[SegmentDef, ...]


def subexpressions(node: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of ``node``, not the filters of its event sets."""
    match node:
        case Compare() | Arith():
            return (node.left, node.right)
        case Between():
            return (node.value, node.low, node.high)
        case In() | IsNull():
            return (node.value,)
        case And() | Or():
            return node.items
        case Not() | Neg():
            return (node.item,)
        case Within():
            return (node.instant,)
        case DateFunc():
            return (node.arg,)
    return ()


def children(node: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of ``node``, the filters of its event sets included."""
    match node:
        case Aggregate() | Instant() | Since() | HourShare():
            return (node.events.filter,) if node.events.filter is not None else ()
        case ThenNo():
            return tuple(es.filter for es in (node.first, node.then) if es.filter is not None)
        case Completion():
            return tuple(es.filter for es in node.seq.steps if es.filter is not None)
    return subexpressions(node)
