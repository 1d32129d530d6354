"""Brute-force reference interpreter of the segment language (the test oracle).

It evaluates an AST (``processors.lang.ast``) directly from a customer's full event list, with
no incremental state, no compiler and no engine code: every call re-reads every event. It is
slow on purpose and written to follow the node docstrings literally, so that property tests can
compare the engine against it.

Semantics implemented (see each helper for the details):

- ``membership(seg, events, t)``: de-duplicate ``events`` by ``event_id`` (first occurrence in
  list order wins), keep those with ``timestamp <= t``, sort by timestamp (stable: equal
  timestamps keep list order) and evaluate the condition at ``now = t``. A disabled segment
  has no members.
- profile values are rebuilt by replaying that history in time order: traits are the merge of
  identify traits, the cart replays cart_add / cart_remove / purchase, purchases are lifetime.
- ``route(events)`` splits a delivered stream into per-profile histories the way
  ``processors.replay`` routes it (alias merges, forget erases); see its docstring.

Choices where the AST docstrings leave room (also listed in the engine-verify report):
booleans are not numbers; comparing values of different kinds is false for ``== < <= > >=``
and true for ``!=``; a non-boolean in a boolean position is false; a cart line's price is the
price of its latest cart_add; ``age_years`` of a Feb 29 date counts the birthday on Feb 28 in
non-leap years, like ``days_until_anniversary``.

>>> from processors.lang import ast as A
>>> ev = {"event_id": "e1", "type": "purchase", "timestamp": 1_000, "customer_id": "c",
...       "anonymous_id": None, "properties": {"order_id": "o", "amount": 5.0, "currency": "EUR"}}
>>> cond = A.Compare(0, ">=", A.Aggregate(0, "count", A.EventSet(0, ("purchase",), None), None,
...                  10_000), A.Literal(0, 1))
>>> [evaluate(cond, [ev], t) for t in (999, 1_000, 10_999, 11_000)]
[False, True, True, False]
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from processors.lang import ast as A

Event = dict[str, Any]
Value = Any  # str | int | float | bool | None

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_EPOCH = dt.date(1970, 1, 1)


# --- value helpers -----------------------------------------------------------------------
def is_number(x: Value) -> bool:
    """True for int/float, false for bool (booleans are not numbers here)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def _kind(x: Value) -> str:
    if isinstance(x, bool):
        return "bool"
    if is_number(x):
        return "num"
    if isinstance(x, str):
        return "str"
    return "other"


def values_equal(a: Value, b: Value) -> bool:
    """Type-aware equality: numbers compare numerically, otherwise same kind and equal."""
    ka, kb = _kind(a), _kind(b)
    return ka == kb and ka != "other" and a == b


def compare(op: str, a: Value, b: Value) -> bool:
    """``a op b`` with the language's rules: null on either side gives false."""
    if a is None or b is None:
        return False
    if op == "==":
        return values_equal(a, b)
    if op == "!=":
        return not values_equal(a, b)
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka not in ("num", "str"):
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    if op == ">=":
        return bool(a >= b)
    raise ValueError(f"unknown comparison operator {op!r}")


def truthy(x: Value) -> bool:
    """Boolean context: only ``true`` is true (null, numbers, strings are not)."""
    return x is True


# --- calendar helpers --------------------------------------------------------------------
def to_date(x: Value) -> dt.date | None:
    """A ``YYYY-MM-DD`` string or an epoch-ms instant as a UTC date; None if neither/invalid."""
    if isinstance(x, str):
        if not _DATE_RE.match(x):
            return None
        try:
            return dt.date.fromisoformat(x)
        except ValueError:
            return None
    if is_number(x):
        try:
            return _EPOCH + dt.timedelta(milliseconds=int(x))
        except OverflowError:
            return None
    return None


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _anniversary(d: dt.date, year: int) -> dt.date:
    """d's anniversary in ``year``; Feb 29 falls on Feb 28 in non-leap years."""
    if d.month == 2 and d.day == 29 and not _is_leap(year):
        return dt.date(year, 2, 28)
    return dt.date(year, d.month, d.day)


def days_until_anniversary(d: dt.date, today: dt.date) -> int:
    """Whole days from ``today`` to the next anniversary of ``d`` (0 on the day).

    >>> days_until_anniversary(dt.date(2000, 2, 29), dt.date(2027, 2, 27))
    1
    >>> days_until_anniversary(dt.date(1990, 1, 1), dt.date(2026, 12, 31))
    1
    """
    ann = _anniversary(d, today.year)
    if ann < today:
        ann = _anniversary(d, today.year + 1)
    return (ann - today).days


def age_years(d: dt.date, today: dt.date) -> int:
    """Whole years from ``d`` to ``today`` (negative when d is in the future).

    >>> age_years(dt.date(2000, 2, 29), dt.date(2001, 2, 28))
    1
    >>> age_years(dt.date(1990, 6, 2), dt.date(2026, 6, 1))
    35
    """
    years = today.year - d.year
    if today < _anniversary(d, today.year):
        years -= 1
    return years


def date_instant(d: dt.date) -> int:
    """Epoch ms of d's midnight UTC."""
    return (d - _EPOCH).days * _DAY_MS


def utc_date(ms: int) -> dt.date:
    return _EPOCH + dt.timedelta(milliseconds=ms)


# --- history and profile -----------------------------------------------------------------
def history(events: Iterable[Event], t: int) -> list[Event]:
    """Events de-duplicated by event_id (first wins), with timestamp <= t, in time order."""
    seen: set[str] = set()
    kept: list[Event] = []
    for ev in events:
        eid = ev["event_id"]
        if eid in seen:
            continue
        seen.add(eid)
        if ev["timestamp"] <= t:
            kept.append(ev)
    kept.sort(key=lambda e: e["timestamp"])  # stable: ties keep list (delivery) order
    return kept


@dataclass
class Context:
    """One evaluation: a customer's ordered history at instant ``now``."""

    events: list[Event]
    now: int
    current: Event | None = None  # the event a ``where`` filter is looking at
    #: the catalogue's segments by name, for ``segment.NAME`` (a member at the same instant)
    segments: Mapping[str, A.SegmentDef] = field(default_factory=dict)

    @cached_property
    def traits(self) -> dict[str, Value]:
        traits: dict[str, Value] = {}
        for ev in self.events:
            if ev["type"] == "identify":
                traits.update((ev.get("properties") or {}).get("traits") or {})
        return traits

    @cached_property
    def cart(self) -> dict[str, Value]:
        lines: dict[str, list[Any]] = {}  # product_id -> [quantity, price]
        last_change: int | None = None
        for ev in self.events:
            typ, props = ev["type"], ev.get("properties") or {}
            if typ == "cart_add":
                pid, qty = props["product_id"], props.get("quantity", 1)
                line = lines.setdefault(pid, [0, 0.0])
                line[0] += qty
                line[1] = props["price"]
            elif typ == "cart_remove":
                pid, qty = props["product_id"], props.get("quantity")
                if pid in lines:
                    if qty is None:
                        del lines[pid]
                    else:
                        lines[pid][0] -= qty
                        if lines[pid][0] <= 0:
                            del lines[pid]
            elif typ == "purchase":
                lines.clear()
            else:
                continue
            last_change = ev["timestamp"]
        return {
            "items": sum(q for q, _ in lines.values()),
            "lines": len(lines),
            "value": math.fsum(q * p for q, p in lines.values()),
            "last_change": last_change,
        }

    @cached_property
    def purchases(self) -> dict[str, Value]:
        buys = [ev for ev in self.events if ev["type"] == "purchase"]
        amounts = [a for ev in buys if is_number(a := (ev.get("properties") or {}).get("amount"))]
        total = math.fsum(amounts) if amounts else 0  # exact, rounded once
        return {
            "count": len(buys),
            "total": total,
            "aov": total / len(buys) if buys else None,
            "first": buys[0]["timestamp"] if buys else None,
            "last": buys[-1]["timestamp"] if buys else None,
        }


def _matching(es: A.EventSet, ctx: Context) -> list[Event]:
    out = []
    for ev in ctx.events:
        if ev["type"] not in es.types:
            continue
        if es.filter is not None:
            sub = Context(ctx.events, ctx.now, current=ev)
            if not truthy(evaluate_node(es.filter, sub)):
                continue
        out.append(ev)
    return out


def _arith(op: str, a: Value, b: Value) -> Value:
    if not (is_number(a) and is_number(b)):
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return None if b == 0 else a / b
    raise ValueError(f"unknown arithmetic operator {op!r}")


def _profile(node: A.ProfileRef, ctx: Context) -> Value:
    if node.namespace == "trait":
        return ctx.traits.get(node.field)
    table = ctx.cart if node.namespace == "cart" else ctx.purchases
    if node.field not in table:
        raise ValueError(f"unknown field {node.namespace}.{node.field}")
    return table[node.field]


def _aggregate(node: A.Aggregate, ctx: Context) -> Value:
    lo = ctx.now - node.window_ms
    inside = [ev for ev in _matching(node.events, ctx) if lo < ev["timestamp"] <= ctx.now]
    if node.func == "count":
        return len(inside)
    assert node.prop is not None
    nums = [v for ev in inside if is_number(v := (ev.get("properties") or {}).get(node.prop))]
    if node.func == "sum":
        return math.fsum(nums) if nums else 0  # the exact sum, rounded once
    return math.fsum(nums) / len(nums) if nums else None


def _then_no(node: A.ThenNo, ctx: Context) -> bool:
    firsts = _matching(node.first, ctx)
    if not firsts:
        return False
    ta = firsts[-1]["timestamp"]
    if ta + node.within_ms > ctx.now:
        return False
    return not any(ta <= ev["timestamp"] <= ctx.now for ev in _matching(node.then, ctx))


def _last_completion(seq: A.Sequence, ctx: Context) -> int | None:
    """The latest ``tn <= now`` such that distinct events e1..en (ek in step k) have
    ``t1 <= t2 <= ... <= tn <= t1 + T`` and, with ``on``, all the same non-null ``on``
    property. Brute force: every final event, every choice of the earlier steps."""
    steps = [_matching(es, ctx) for es in seq.steps]

    def prop(ev: Event) -> Value:
        return (ev.get("properties") or {}).get(seq.on) if seq.on is not None else None

    def chain(k: int, after: int, used: list[str], final: Event, t1: int | None) -> bool:
        """Steps k..n-2 chosen at or after ``after``, the final event ``final`` last."""
        tn = final["timestamp"]
        if k == len(steps) - 1:
            return t1 is not None and tn <= t1 + seq.within_ms
        for ev in steps[k]:
            ts = ev["timestamp"]
            if ev["event_id"] in used or not after <= ts <= tn:
                continue
            if seq.on is not None and not values_equal(prop(ev), prop(final)):
                continue
            if chain(k + 1, ts, [*used, ev["event_id"]], final, ts if t1 is None else t1):
                return True
        return False

    best: int | None = None
    for final in steps[-1]:
        tn = final["timestamp"]
        if best is not None and tn <= best:
            continue
        if seq.on is not None and prop(final) is None:
            continue
        if chain(0, tn - seq.within_ms, [final["event_id"]], final, None):
            best = tn
    return best


def _hour_share(node: A.HourShare, ctx: Context) -> Value:
    evs = _matching(node.events, ctx)
    if not evs:
        return None
    lo, hi = node.from_hour, node.to_hour

    def inside(h: int) -> bool:
        return lo <= h <= hi if lo <= hi else (h >= lo or h <= hi)

    hits = sum(1 for ev in evs if inside((ev["timestamp"] // _HOUR_MS) % 24))
    return hits / len(evs)


def _date_func(node: A.DateFunc, ctx: Context) -> Value:
    d = to_date(evaluate_node(node.arg, ctx))
    if d is None:
        return None
    if node.func == "date":
        return date_instant(d)
    today = utc_date(ctx.now)
    if node.func == "age_years":
        return age_years(d, today)
    return days_until_anniversary(d, today)


def evaluate_node(node: A.Expr, ctx: Context) -> Value:  # noqa: C901 - one case per AST node
    """The value of ``node`` in ``ctx`` (None is null)."""
    match node:
        case A.Literal():
            return node.value
        case A.Duration():
            return node.ms
        case A.Now():
            return ctx.now
        case A.ProfileRef():
            return _profile(node, ctx)
        case A.SegmentRef():
            seg = ctx.segments[node.name]  # the same history and instant, no filter event
            return seg.enabled and truthy(evaluate_node(seg.condition, Context(
                ctx.events, ctx.now, segments=ctx.segments)))
        case A.PropRef():
            if ctx.current is None:
                raise ValueError(f"property {node.name!r} used outside a where filter")
            return (ctx.current.get("properties") or {}).get(node.name)
        case A.Aggregate():
            return _aggregate(node, ctx)
        case A.Instant():
            evs = _matching(node.events, ctx)
            if not evs:
                return None
            return evs[-1]["timestamp"] if node.func == "last" else evs[0]["timestamp"]
        case A.Since():
            evs = _matching(node.events, ctx)
            return ctx.now - evs[-1]["timestamp"] if evs else None
        case A.Within():
            x = evaluate_node(node.instant, ctx)
            return is_number(x) and ctx.now - node.duration_ms < x <= ctx.now
        case A.ThenNo():
            return _then_no(node, ctx)
        case A.Completion():
            done = _last_completion(node.seq, ctx)
            if done is None or node.func == "last":
                return done
            return ctx.now - done
        case A.HourShare():
            return _hour_share(node, ctx)
        case A.DateFunc():
            return _date_func(node, ctx)
        case A.Arith():
            return _arith(node.op, evaluate_node(node.left, ctx), evaluate_node(node.right, ctx))
        case A.Neg():
            x = evaluate_node(node.item, ctx)
            return -x if is_number(x) else None
        case A.Compare():
            return compare(node.op, evaluate_node(node.left, ctx), evaluate_node(node.right, ctx))
        case A.Between():
            v = evaluate_node(node.value, ctx)
            return compare(">=", v, evaluate_node(node.low, ctx)) and compare(
                "<=", v, evaluate_node(node.high, ctx)
            )
        case A.In():
            v = evaluate_node(node.value, ctx)
            return v is not None and any(values_equal(v, o) for o in node.options)
        case A.IsNull():
            return (evaluate_node(node.value, ctx) is None) != node.negate
        case A.And():
            return all(truthy(evaluate_node(i, ctx)) for i in node.items)
        case A.Or():
            return any(truthy(evaluate_node(i, ctx)) for i in node.items)
        case A.Not():
            return not truthy(evaluate_node(node.item, ctx))
    raise TypeError(f"unknown AST node {type(node).__name__}")


def evaluate(condition: A.Expr, events: Iterable[Event], t: int) -> bool:
    """Whether ``condition`` holds at ``now = t`` over ``events`` (deduped, <= t, ordered)."""
    return truthy(evaluate_node(condition, Context(history(events, t), t)))


def membership(segment: A.SegmentDef, events: Iterable[Event], t: int) -> bool:
    """Whether a customer with ``events`` is in ``segment`` at instant ``t``."""
    return segment.enabled and evaluate(segment.condition, events, t)


def memberships(catalogue: A.Catalogue, events: Iterable[Event], t: int) -> frozenset[str]:
    """Names of the catalogue's segments the customer is in at ``t``."""
    ctx = Context(history(events, t), t,  # one history, shared profile caches
                  segments={s.name: s for s in catalogue.segments})
    return frozenset(s.name for s in catalogue.segments
                     if s.enabled and truthy(evaluate_node(s.condition, ctx)))


# --- routing of a delivered stream (mirrors processors.replay) ----------------------------
def routing_id(ev: Event) -> str:
    rid = ev.get("customer_id") or ev.get("anonymous_id")
    assert isinstance(rid, str)
    return rid


def route(events: Sequence[Event], skip: Container[int] = ()) -> dict[str, list[Event]]:
    """Per-profile event lists for a stream in delivery order, as replay routes it.

    - an event goes to its routing id (customer_id, else anonymous_id); an event that only has
      an anonymous id already aliased to a customer goes to that customer;
    - ``alias`` (first one for an anonymous id, to a different id): the anonymous profile's
      events move to the customer (the alias event is part of the customer's history); the
      anonymous profile ends. A later alias of an already-aliased id is an ordinary event;
    - ``forget`` at ``T`` erases what the profile did up to ``T`` whatever the delivery order:
      its events with time ``<= T`` (those with a later time stay), every event of that id
      delivered later with time ``<= T``, and the aliases that point to it. The forget event
      itself is not kept;
    - positions in ``skip`` (late events the engine refused) are ignored.
    """
    alias_of: dict[str, str] = {}
    profiles: dict[str, list[Event]] = {}
    erased: dict[str, int] = {}  # routing id -> latest forget time
    for i, ev in enumerate(events):
        if i in skip:
            continue
        rid = ev.get("customer_id") or alias_of.get(ev["anonymous_id"], ev["anonymous_id"])
        typ = ev["type"]
        if typ != "forget" and ev["timestamp"] <= erased.get(rid, -1 << 62) and not (
                typ == "alias" and ev["anonymous_id"] not in alias_of
                and ev["anonymous_id"] != rid):
            continue
        if typ == "alias" and ev["anonymous_id"] not in alias_of and ev["anonymous_id"] != rid:
            anon = ev["anonymous_id"]
            alias_of[anon] = rid
            profiles[rid] = profiles.get(rid, []) + profiles.pop(anon, []) + [ev]
        elif typ == "forget":
            t_forget = ev["timestamp"]
            erased[rid] = max(erased.get(rid, t_forget), t_forget)
            kept = [e for e in profiles.pop(rid, []) if e["timestamp"] > erased[rid]]
            if kept:
                profiles[rid] = kept
            for anon in [a for a, c in alias_of.items() if c == rid]:
                del alias_of[anon]
        else:
            profiles.setdefault(rid, []).append(ev)
    return profiles


def expected_members(
    catalogue: A.Catalogue,
    events: Sequence[Event],
    t: int,
    skip: Container[int] = (),
    keep: Callable[[Event], bool] | None = None,
) -> dict[str, frozenset[str]]:
    """``{profile id: segments}`` at ``t`` for the delivered stream (non-empty entries only).

    ``keep`` optionally restricts the delivered events (e.g. to a prefix in time order).
    """
    chosen = [ev for ev in events if keep is None or keep(ev)]
    if keep is not None and skip:
        raise ValueError("use either keep or skip")
    out: dict[str, frozenset[str]] = {}
    for rid, evs in route(chosen, skip).items():
        segs = memberships(catalogue, evs, t)
        if segs:
            out[rid] = segs
    return out
