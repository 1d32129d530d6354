"""Compile a catalogue's ASTs into fast evaluators over ``state.model.CustomerState``.

For each segment the compiler produces:

- ``fn(state, now) -> bool``: the condition at instant ``now`` (closures, no interpretation);
- ``types``: the event types whose events can change the value (apply() only re-evaluates
  segments affected by the event's type);
- ``next_change(state, now) -> int``: the earliest instant after ``now`` where the value may
  change with no new event (``NEVER`` if none), the minimum over the time-dependent atoms:
  window expiry ``ts + W`` of the oldest in-window event, ``X`` and ``X + D`` for
  ``X within D``, ``ta + T`` for ``then no``, the next UTC midnight for calendar functions, and
  the crossing instant of comparisons involving ``now``/``since`` (values linear in time).
  Candidates may be early (an evaluation that changes nothing), never late.

Distinct event selections (``types where filter``) become shared *series* in the state; the
catalogue also records which traits, cart and purchase facts it needs, so that the state keeps
nothing else.
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from processors.hashing import series_hash
from processors.lang import ast
from processors.lang.compile_ops import cmp_const, cmp_var, filter_fn
from processors.lang.unparse import unparse, unparse_events
from processors.lang.values import (
    DAY_MS,
    age_years_ms,
    anniversary,
    compare_values,
    date_instant,
    date_ms,
    days_until_anniversary_ms,
    is_number,
    next_midnight,
    to_date,
    utc_date,
    values_equal,
)
from processors.lang.vocab import CART_TYPES
from state.model import NEVER, CustomerState, SeriesState

Fn = Callable[[CustomerState, int], Any]
NextFn = Callable[[CustomerState, int], int]
Lin = tuple[float, float] | None  # (value at now, slope per ms) of a value linear in now
LinFn = Callable[[CustomerState, int], Lin]
Match = Callable[[dict[str, Any]], bool]


@dataclass
class SeriesSpec:
    """One distinct event selection kept in the state."""

    index: int
    key: int  # series_hash of ``text``: identifies the series in encoded states
    text: str
    types: tuple[str, ...]
    match: Match | None
    window_ms: int = 0  # largest window over it (0: no timestamps kept)
    props: list[str] = field(default_factory=list)  # summed/averaged properties
    hours: bool = False  # keeps a 24-hour histogram (hour_share)
    filter_props: frozenset[str] = frozenset()  # properties its filter reads

    @property
    def legacy_key(self) -> int:
        """The key of format-1 states written before series_hash (crc32 of the text)."""
        return zlib.crc32(self.text.encode())


@dataclass(frozen=True)
class CompiledSegment:
    index: int
    name: str
    definition: ast.SegmentDef
    fn: Callable[[CustomerState, int], bool]
    types: frozenset[str]
    inputs: frozenset[str]  # "#s<series>", "#cart", "#purchases", "#trait:<name>"
    time_dependent: bool
    next_change: NextFn
    constant_when_empty: bool  # same value at every instant for a customer with no data


class TypeHandler(NamedTuple):
    """What an event of one type touches: series (index, filter) and affected segments."""

    series: tuple[tuple[int, Match | None], ...]
    segments: tuple[int, ...]
    cart: bool
    purchases: bool
    traits: bool


@dataclass(frozen=True)
class CompiledCatalogue:
    version: str
    allowed_lateness_ms: int
    segments: tuple[CompiledSegment, ...]
    names: tuple[str, ...]
    series: tuple[SeriesSpec, ...]
    handlers: dict[str, TypeHandler]
    needs_cart: bool
    needs_purchases: bool
    traits: frozenset[str]
    time_segments: tuple[int, ...]
    fingerprint: int
    empty_series: tuple[SeriesState, ...]  # shared, never mutated: series nobody has used


#: evaluation epoch: the engine bumps it before each batch of evaluations of one state at one
#: instant; memoised shared sub-expressions are valid within an epoch only.
EPOCH = [0]
_MEMO_NODES = (ast.Arith, ast.Aggregate, ast.HourShare, ast.DateFunc, ast.Within)


def _worth_memo(node: ast.Expr) -> bool:
    """Plain counts are cheaper to recompute than to memoise."""
    return not (isinstance(node, ast.Aggregate) and node.func == "count")


def _memo(f: Callable[[CustomerState, int], Any]) -> Callable[[CustomerState, int], Any]:
    """``f`` computed once per epoch (for sub-expressions shared by several segments)."""
    cell: list[Any] = [-1, None]
    epoch = EPOCH

    def memo(st: CustomerState, now: int) -> Any:
        if cell[0] == epoch[0]:
            return cell[1]
        v = f(st, now)
        cell[0] = epoch[0]
        cell[1] = v
        return v

    return memo


def _walk(node: ast.Expr) -> list[ast.Expr]:
    out = [node]
    for c in ast.subexpressions(node):
        out += _walk(c)
    return out


_NULL_FIELDS = {("cart", "last_change"), ("purchases", "first"), ("purchases", "last"),
                ("purchases", "aov")}


def _null_on_empty(node: ast.Expr) -> bool:
    """Whether ``node`` is null for a customer with no data (whatever now is)."""
    match node:
        case ast.ProfileRef():
            return node.namespace == "trait" or (node.namespace, node.field) in _NULL_FIELDS
        case ast.Instant() | ast.Since() | ast.HourShare():
            return True
        case ast.Aggregate():
            return node.func == "avg"
        case ast.Literal():
            return node.value is None
        case ast.Arith():
            return _null_on_empty(node.left) or _null_on_empty(node.right)
        case ast.Neg():
            return _null_on_empty(node.item)
        case ast.DateFunc():
            return _null_on_empty(node.arg)
    return False


def constant_when_empty(node: ast.Expr) -> bool:
    """Whether the condition's value for a customer with no data is the same at every instant
    (no ``now``, no calendar or ``within`` of a value that is not null then)."""
    for n in _walk(node):
        if isinstance(n, ast.Now):
            return False
        if isinstance(n, ast.Within) and not _null_on_empty(n.instant):
            return False
        if isinstance(n, ast.DateFunc) and n.func != "date" and not _null_on_empty(n.arg):
            return False
    return True


def _number_predicate(op: str, a: float, b: float) -> Callable[[float], bool]:
    """``v op a`` (or ``a <= v <= b`` for between) over plain numbers."""
    preds: dict[str, Callable[[float], bool]] = {
        "==": lambda v: v == a, "!=": lambda v: v != a, "<": lambda v: v < a,
        "<=": lambda v: v <= a, ">": lambda v: v > a, ">=": lambda v: v >= a,
        "between": lambda v: a <= v <= b,
    }
    return preds[op]


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _num_literal(node: ast.Expr) -> float | None:
    if isinstance(node, ast.Literal) and is_number(node.value):
        return float(node.value)  # type: ignore[arg-type]
    return None


def _is_count(node: ast.Expr) -> bool:
    return isinstance(node, ast.Aggregate) and node.func == "count"


def _count_bounds(node: ast.Expr) -> tuple[float, float] | None:
    """(lo, hi) such that the comparison of a count with constants is ``lo <= count <= hi``
    or its negation; None when the node is not of that shape."""
    inf = math.inf
    if isinstance(node, ast.Between):
        lo, hi = _num_literal(node.low), _num_literal(node.high)
        if _is_count(node.value) and lo is not None and hi is not None:
            return lo, hi
        return None
    if not isinstance(node, ast.Compare):
        return None
    op: str = node.op
    k = _num_literal(node.right)
    if not (_is_count(node.left) and k is not None):
        k = _num_literal(node.left)
        if not (_is_count(node.right) and k is not None):
            return None
        op = _FLIP[op]
    if op in ("==", "!="):
        return (k, k) if k == math.floor(k) else (inf, -inf)
    if op == ">=":
        return k, inf
    if op == ">":
        return math.floor(k) + 1, inf
    if op == "<=":
        return -inf, k
    return -inf, math.ceil(k) - 1


Combo = tuple[list[tuple[ast.Aggregate, int]], int]


def _count_combo(node: ast.Expr) -> Combo | None:
    """``node`` as an integer-weighted sum of counts plus a constant, or None.

    >>> from processors.lang.parser import parse
    >>> e = parse("count(page_view, 1d) + 3 * count(purchase, 1d) - 2 > 0").left
    >>> terms, const = _count_combo(e)
    >>> [(a.events.types, w) for a, w in terms], const
    ([(('page_view',), 1), (('purchase',), 3)], -2)
    """
    match node:
        case ast.Aggregate() if node.func == "count":
            return [(node, 1)], 0
        case ast.Literal() if type(node.value) is int:
            return [], node.value
        case ast.Neg():
            inner = _count_combo(node.item)
            return None if inner is None else ([(a, -w) for a, w in inner[0]], -inner[1])
        case ast.Arith() if node.op in ("+", "-"):
            left, right = _count_combo(node.left), _count_combo(node.right)
            if left is None or right is None:
                return None
            sign = 1 if node.op == "+" else -1
            return left[0] + [(a, sign * w) for a, w in right[0]], left[1] + sign * right[1]
        case ast.Arith() if node.op == "*":
            for k, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(k, ast.Literal) and type(k.value) is int:
                    inner = _count_combo(other)
                    if inner is not None:
                        return [(a, k.value * w) for a, w in inner[0]], k.value * inner[1]
    return None


SCHEDULE_CAP = 64  # in-window events beyond which a count sum wakes at every expiry


def _expiry_schedule(terms: tuple[tuple[int, int, int], ...], const: int) -> Fn:
    """``(value now, expiry instants, cumulative weight expired)`` of a weighted sum of
    counts: after ``instants[j]`` the value is ``value - removed[j]`` (no new event).
    Past ``SCHEDULE_CAP`` events only the earliest expiry is given (``removed`` empty)."""

    def schedule(st: CustomerState, now: int) -> tuple[int, list[int], list[int]]:
        v = const
        live: list[tuple[list[int], int, int, int]] = []
        series = st.series
        for i, win, w in terms:
            ts = series[i].ts
            if ts:
                cut = now - win
                k = 0 if ts[0] > cut else bisect_right(ts, cut)
                if k < len(ts) and w:
                    v += w * (len(ts) - k)
                    live.append((ts, k, win, w))
        if sum(len(ts) - k for ts, k, _, _ in live) > SCHEDULE_CAP:
            # a very active customer: just wake at the earliest expiry (early, never late)
            return v, [min(ts[k] + win for ts, k, win, _ in live)], []
        if len(live) == 1:  # one series in its window: already in time order (an instant
            # shared by two events only adds a candidate that changes nothing)
            ts, k, win, w = live[0]
            return v, [t + win for t in ts[k:]], list(range(w, w * (len(ts) - k + 1), w))
        pairs: list[tuple[int, int]] = []
        for ts, k, win, w in live:
            pairs.extend([(t + win, w) for t in ts[k:]])
        pairs.sort()
        instants: list[int] = []
        removed: list[int] = []
        acc = 0
        for t, w in pairs:
            acc += w
            if instants and instants[-1] == t:
                removed[-1] = acc
            else:
                instants.append(t)
                removed.append(acc)
        return v, instants, removed

    return schedule


def _combo_of(node: ast.Expr) -> Combo | None:
    """A combination of at least two counts (single counts have their own fast path)."""
    combo = _count_combo(node)
    return combo if combo is not None and len(combo[0]) >= 2 else None


class V(NamedTuple):
    """A compiled value: evaluator, kind (num/bool/str/any), constant, linear form."""

    fn: Fn
    kind: str
    const: bool = False
    value: Any = None
    lin: LinFn | None = None  # set when the value varies linearly with now


def _const(v: Any) -> V:
    kind = "bool" if isinstance(v, bool) else "num" if is_number(v) else "str" \
        if isinstance(v, str) else "any"
    return V(lambda st, now: v, kind, True, v)


def _lin_of(v: V) -> LinFn:
    """The linear form of any value: its own, or (value, 0) for values constant in time."""
    if v.lin is not None:
        return v.lin
    f = v.fn

    def lin(st: CustomerState, now: int) -> Lin:
        x = f(st, now)
        return (x, 0) if is_number(x) else None

    return lin


def _root_next(lf: LinFn, rf: LinFn) -> NextFn:
    """Next instant where ``left op right`` may flip, both sides linear in now."""

    def nxt(st: CustomerState, now: int) -> int:
        a, b = lf(st, now), rf(st, now)
        if a is None or b is None:
            return NEVER
        s = a[1] - b[1]
        if s == 0:
            return NEVER
        r = now - (a[0] - b[0]) / s
        lo = math.floor(r)
        for c in (lo, lo + 1, lo + 2):
            if c > now:
                return c
        return NEVER

    return nxt


class _SegmentCompiler:
    def __init__(self, cat: _CatalogueBuilder) -> None:
        self.cat = cat
        # event types that can change the segment, plus its inputs as "#s<series index>",
        # "#cart", "#purchases", "#trait:<name>" (apply() re-evaluates on touched inputs only)
        self.types: set[str] = set()
        self.producers: list[NextFn] = []

    # --- event selections -----------------------------------------------------------------
    def series(self, es: ast.EventSet) -> SeriesSpec:
        self.types.update(es.types)
        spec = self.cat.series(es)
        self.types.add(f"#s{spec.index}")
        return spec

    # --- values ---------------------------------------------------------------------------
    def value(self, node: ast.Expr) -> V:
        """Compile ``node``; sub-expressions shared between segments are compiled once and
        memoised per evaluation epoch (with their next-change producers)."""
        if not isinstance(node, _MEMO_NODES):
            return self._value(node)
        key = unparse(node)
        hit = self.cat.cse.get(key)
        if hit is not None:
            v, prods, types = hit
            self.producers.extend(prods)
            self.types.update(types)
            return v
        outer_p, outer_t = self.producers, self.types
        self.producers, self.types = [], set()
        try:
            v = self._value(node)
            prods, types = self.producers, frozenset(self.types)
        finally:
            self.producers, self.types = outer_p, outer_t
        if self.cat.uses.get(key, 0) >= 2 and _worth_memo(node):
            lin = None if v.lin is None else _memo(v.lin)
            v = V(_memo(v.fn), v.kind, v.const, v.value, lin)
            prods = [_memo(p) for p in prods]
            self.cat.cse[key] = (v, prods, types)
        self.producers.extend(prods)
        self.types.update(types)
        return v

    def _value(self, node: ast.Expr) -> V:
        match node:
            case ast.Literal():
                return _const(node.value)
            case ast.Duration():
                return _const(node.ms)
            case ast.Now():
                return V(lambda st, now: now, "num", lin=lambda st, now: (now, 1))
            case ast.ProfileRef():
                return self.profile(node)
            case ast.Aggregate():
                return self.aggregate(node)
            case ast.Instant():
                i = self.series(node.events).index
                if node.func == "last":
                    return V(lambda st, now: st.series[i].last, "num")
                return V(lambda st, now: st.series[i].first, "num")
            case ast.Since():
                i = self.series(node.events).index

                def since(st: CustomerState, now: int) -> int | None:
                    last = st.series[i].last
                    return None if last is None else now - last

                def since_lin(st: CustomerState, now: int) -> Lin:
                    last = st.series[i].last
                    return None if last is None else (now - last, 1)

                return V(since, "num", lin=since_lin)
            case ast.Within():
                return self.within(node)
            case ast.ThenNo():
                return self.then_no(node)
            case ast.HourShare():
                return self.hour_share(node)
            case ast.DateFunc():
                return self.date_func(node)
            case ast.Arith():
                combo = _combo_of(node)
                if combo is not None:
                    return self.combo_value(combo, expiry_producers=True)
                return self.arith(node)
            case ast.Neg():
                return self.neg(node)
            case ast.Compare():
                bounds = _count_bounds(node)
                if bounds is not None:
                    return self.count_threshold(node, *bounds)
                if _num_literal(node.right) is not None and _combo_of(node.left) is not None:
                    return self.combo_compare(node.op, node.left, node.right)
                left, right = self._side(node.left, (node.right,)), \
                    self._side(node.right, (node.left,))
                return self.compare(node.op, left, right)
            case ast.Between():
                bounds = _count_bounds(node)
                if bounds is not None:
                    return self.count_threshold(node, *bounds)
                if (_num_literal(node.low) is not None and _num_literal(node.high) is not None
                        and _combo_of(node.value) is not None):
                    return self.combo_compare("between", node.value, node.low, node.high)
                v = self._side(node.value, (node.low, node.high))
                lo = self.compare(">=", v, self.value(node.low)).fn
                hi = self.compare("<=", v, self.value(node.high)).fn
                return V(lambda st, now: lo(st, now) and hi(st, now), "bool")
            case ast.In():
                return self.in_(node)
            case ast.IsNull():
                f, neg = self.value(node.value).fn, node.negate
                return V(lambda st, now: (f(st, now) is None) != neg, "bool")
            case ast.And() | ast.Or():
                parts = [self.capture(i) for i in node.items]
                fns = [v.fn for v, _ in parts]
                nexts = [nx for _, nx in parts]
                is_and = isinstance(node, ast.And)
                if any(nx is not None for nx in nexts):
                    self.producers.append(_junction_next(fns, nexts, is_and))
                return self.and_(fns) if is_and else self.or_(fns)
            case ast.Not():
                g = self.value(node.item).fn
                return V(lambda st, now: g(st, now) is not True, "bool")
            case ast.PropRef():
                raise TypeError("a property outside a where filter")
        raise TypeError(f"unknown AST node {type(node).__name__}")

    def capture(self, node: ast.Expr) -> tuple[V, NextFn | None]:
        """Compile ``node`` and return its own next-change function instead of adding its
        producers to the segment's (an enclosing and/or combines them)."""
        outer = self.producers
        self.producers = []
        try:
            v = self.value(node)
            prods = self.producers
        finally:
            self.producers = outer
        return v, (_next_of(prods) if prods else None)

    def _side(self, node: ast.Expr, others: tuple[ast.Expr, ...]) -> V:
        """A comparison operand; ``days_until_anniversary`` compared with numeric constants
        gets exact wake-up days instead of every midnight."""
        if isinstance(node, ast.DateFunc) and node.func == "days_until_anniversary":
            consts = [_num_literal(o) for o in others]
            if all(c is not None for c in consts):
                return self.date_func(node, tuple(c for c in consts if c is not None))
        return self.value(node)

    def profile(self, node: ast.ProfileRef) -> V:
        name = node.field
        if node.namespace == "trait":
            self.cat.traits.add(name)
            self.types.update(("identify", f"#trait:{name}"))

            def trait(st: CustomerState, now: int) -> Any:
                t = st.traits.get(name)
                return None if t is None else t[0]

            return V(trait, "any")
        if node.namespace == "cart":
            self.cat.needs_cart = True
            self.types.update(CART_TYPES)
            self.types.add("#cart")
            getters: dict[str, Fn] = {
                "items": lambda st, now: 0 if st.cart is None else st.cart.items(),
                "lines": lambda st, now: 0 if st.cart is None else len(st.cart.lines),
                "value": lambda st, now: 0 if st.cart is None else st.cart.value(),
                "last_change": lambda st, now: None if st.cart is None else st.cart.last_change,
            }
            return V(getters[name], "num")
        self.cat.needs_purchases = True
        self.types.update(("purchase", "#purchases"))
        pgetters: dict[str, Fn] = {
            "count": lambda st, now: st.p_count,
            "total": lambda st, now: st.p_total,
            "aov": lambda st, now: st.p_total / st.p_count if st.p_count else None,
            "first": lambda st, now: st.p_first,
            "last": lambda st, now: st.p_last,
        }
        return V(pgetters[name], "num")

    def count_threshold(self, node: ast.Compare | ast.Between, lo: float, hi: float) -> V:
        """A comparison of ``count(E, W)`` with constants: true iff lo <= count <= hi (maybe
        negated). Its next change is computed from the order statistics of the window: with
        no new event the count only falls, one expiry at a time, so the next flip is the
        expiry that takes the count out of (or into) [lo, hi] - not every expiry."""
        agg = node.left if isinstance(node, ast.Compare) else node.value
        if isinstance(node, ast.Compare) and not isinstance(agg, ast.Aggregate):
            agg = node.right
        assert isinstance(agg, ast.Aggregate)
        count_v = self.aggregate(agg, expiry_producer=False)
        spec = self.cat.series(agg.events)
        i, w = spec.index, agg.window_ms
        # integer bounds of the count (infinite bounds become huge integers)
        a = math.ceil(lo) if math.isfinite(lo) else (-NEVER if lo < 0 else NEVER)
        b = math.floor(hi) if math.isfinite(hi) else (NEVER if hi > 0 else -NEVER)

        def nxt(st: CustomerState, now: int) -> int:
            ts = st.series[i].ts
            if not ts:
                return NEVER
            cut = now - w
            k0 = 0 if ts[0] > cut else bisect_right(ts, cut)
            cnt = len(ts) - k0
            if cnt > b:
                j = cnt - b if b >= 0 else 0
            elif cnt >= a:
                j = cnt - a + 1 if a >= 1 else 0
            else:
                j = 0
            return ts[k0 + j - 1] + w if j else NEVER

        self.producers.append(nxt)
        if isinstance(node, ast.Between):
            lf = self.compare(">=", count_v, self.value(node.low)).fn
            hf = self.compare("<=", count_v, self.value(node.high)).fn
            return V(lambda st, now: lf(st, now) and hf(st, now), "bool")
        if node.left is agg:
            return self.compare(node.op, count_v, self.value(node.right))
        return self.compare(node.op, self.value(node.left), count_v)

    def combo_value(self, combo: Combo, expiry_producers: bool) -> V:
        """Value of ``const + sum(w * count(E_i, W_i))`` in one closure."""
        for a, _ in combo[0]:
            self.aggregate(a, expiry_producer=expiry_producers)  # registers the series
        terms = tuple((self.cat.series(a.events).index, a.window_ms, w) for a, w in combo[0])
        const = combo[1]

        def lin_count(st: CustomerState, now: int) -> int:
            v = const
            series = st.series
            for i, win, w in terms:
                ts = series[i].ts
                if ts:
                    cut = now - win
                    v += w * (len(ts) if ts[0] > cut else len(ts) - bisect_right(ts, cut))
            return v

        return V(lin_count, "num")

    def combo_compare(self, op: str, node: ast.Expr, *consts: ast.Expr) -> V:
        """A weighted sum of counts compared with constants. With no new event the sum only
        changes at expiries; the next change is found by walking the expiries in time order
        until the comparison flips (usually a few steps), instead of waking at each one."""
        combo = _combo_of(node)
        assert combo is not None
        value = self.combo_value(combo, expiry_producers=False)
        ks = [_num_literal(c) for c in consts]
        lo_k, hi_k = ks[0], ks[-1]
        assert lo_k is not None and hi_k is not None
        pred = _number_predicate(op, lo_k, hi_k)
        terms = tuple((self.cat.series(a.events).index, a.window_ms, w) for a, w in combo[0])
        const = combo[1]

        skey = (terms, const)
        schedule = self.cat.schedules.get(skey)
        if schedule is None:
            schedule = self.cat.schedules[skey] = _memo(_expiry_schedule(terms, const))

        monotone = all(w > 0 for _, _, w in terms)
        cuts = tuple({lo_k, hi_k})

        def nxt(st: CustomerState, now: int) -> int:
            sched: tuple[int, list[int], list[int]] = schedule(st, now)
            v, instants, removed = sched
            if not removed:
                return instants[0] if instants else NEVER
            p0 = pred(v)
            if monotone:  # the value only falls: the flip is where it reaches a constant
                cands = [j for c in cuts for j in (bisect_left(removed, v - c),
                                                   bisect_right(removed, v - c))]
                cands.sort()
                for j in cands:
                    if j < len(instants) and pred(v - removed[j]) != p0:
                        return instants[j]
                return NEVER
            for j, t in enumerate(instants):
                if pred(v - removed[j]) != p0:
                    return t
            return NEVER

        self.producers.append(nxt)
        f = value.fn
        return V(lambda st, now: pred(f(st, now)), "bool")

    def aggregate(self, node: ast.Aggregate, expiry_producer: bool = True) -> V:
        spec = self.series(node.events)
        i, w = spec.index, node.window_ms
        spec.window_ms = max(spec.window_ms, w)

        def expiry(st: CustomerState, now: int) -> int:
            ts = st.series[i].ts
            if not ts:
                return NEVER
            lo = now - w
            if ts[0] > lo:
                return ts[0] + w
            k = bisect_right(ts, lo)
            return ts[k] + w if k < len(ts) else NEVER

        if expiry_producer:
            self.producers.append(expiry)
        if node.func == "count":

            def count(st: CustomerState, now: int) -> int:
                ts = st.series[i].ts
                if not ts:
                    return 0
                lo = now - w
                if ts[0] > lo:
                    return len(ts)
                return len(ts) - bisect_right(ts, lo)

            return V(count, "num")
        assert node.prop is not None
        if node.prop not in spec.props:
            spec.props.append(node.prop)
        j = spec.props.index(node.prop)
        is_sum = node.func == "sum"

        def total(st: CustomerState, now: int) -> float | None:
            s = st.series[i]
            ts = s.ts
            k = bisect_right(ts, now - w) if ts and ts[0] <= now - w else 0
            xs = [v for v in s.vals[j][k:] if v is not None]
            # fsum: the correctly rounded sum of the exact values, whatever their order
            if is_sum:
                return math.fsum(xs) if xs else 0
            return math.fsum(xs) / len(xs) if xs else None

        return V(total, "num")

    def within(self, node: ast.Within) -> V:
        x = self.value(node.instant)
        f, d, checked = x.fn, node.duration_ms, x.kind == "num"

        def within(st: CustomerState, now: int) -> bool:
            v = f(st, now)
            if v is None or (not checked and not is_number(v)):
                return False
            return bool(now - d < v <= now)

        def nxt(st: CustomerState, now: int) -> int:
            v = f(st, now)
            if v is None or not is_number(v):
                return NEVER
            for c in (math.ceil(v), math.ceil(v + d)):
                if c > now:
                    return int(c)
            return NEVER

        self.producers.append(nxt)
        return V(within, "bool")

    def then_no(self, node: ast.ThenNo) -> V:
        a, b, t = self.series(node.first).index, self.series(node.then).index, node.within_ms

        def then_no(st: CustomerState, now: int) -> bool:
            ta = st.series[a].last
            if ta is None or ta + t > now:
                return False
            tb = st.series[b].last
            return tb is None or tb < ta

        def nxt(st: CustomerState, now: int) -> int:
            ta = st.series[a].last
            return ta + t if ta is not None and ta + t > now else NEVER

        self.producers.append(nxt)
        return V(then_no, "bool")

    def hour_share(self, node: ast.HourShare) -> V:
        spec = self.series(node.events)
        spec.hours = True
        i, lo, hi = spec.index, node.from_hour, node.to_hour
        inside = [h for h in range(24) if (lo <= h <= hi if lo <= hi else (h >= lo or h <= hi))]

        def share(st: CustomerState, now: int) -> float | None:
            hours = st.series[i].hours
            assert hours is not None
            total = sum(hours)
            if not total:
                return None
            return sum(hours[h] for h in inside) / total

        return V(share, "num")

    def date_func(self, node: ast.DateFunc, consts: tuple[float, ...] | None = None) -> V:
        """Calendar functions. ``age_years`` changes at the anniversary's midnight only;
        ``days_until_anniversary`` falls by one each midnight and jumps back after the
        anniversary, so when compared with constants ``consts`` it can only flip on the days
        it passes them (or the day after the anniversary); otherwise wake every midnight."""
        arg = self.value(node.arg)
        f = arg.fn
        if node.func == "date":
            if arg.const:  # date("2026-11-20"): fold at compile time
                return _const(date_ms(arg.value))
            return V(lambda st, now: date_ms(f(st, now)), "num")
        if node.func == "age_years":

            def next_birthday(st: CustomerState, now: int) -> int:
                d = to_date(f(st, now))
                if d is None:
                    return NEVER
                today = utc_date(now)
                try:
                    ann = anniversary(d, today.year)
                    if ann <= today:
                        ann = anniversary(d, today.year + 1)
                except ValueError:
                    return NEVER
                return date_instant(ann)

            self.producers.append(next_birthday)
            return V(lambda st, now: age_years_ms(f(st, now), now), "num")

        offsets: tuple[int, ...] = ()
        if consts is not None:
            offsets = tuple({-math.floor(c) + k for c in consts for k in (-1, 0, 1, 2)})

        def nxt(st: CustomerState, now: int) -> int:
            d0 = days_until_anniversary_ms(f(st, now), now)
            if d0 is None:
                return NEVER
            midnight = next_midnight(now)
            if consts is None:
                return midnight
            best = d0 + 1  # the day after the anniversary
            for k in offsets:
                j = d0 + k
                if 1 <= j < best:
                    best = j
            return midnight + (best - 1) * DAY_MS

        self.producers.append(nxt)
        return V(lambda st, now: days_until_anniversary_ms(f(st, now), now), "num")

    def arith(self, node: ast.Arith) -> V:
        lv, rv = self.value(node.left), self.value(node.right)
        lf, rf, op = lv.fn, rv.fn, node.op
        typed = lv.kind == "num" and rv.kind == "num"

        def arith(st: CustomerState, now: int) -> Any:
            a = lf(st, now)
            b = rf(st, now)
            if a is None or b is None:
                return None
            if not typed and not (is_number(a) and is_number(b)):
                return None
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            return None if b == 0 else a / b

        lin: LinFn | None = None
        if lv.lin is not None or rv.lin is not None:
            ll, rl = _lin_of(lv), _lin_of(rv)

            def lin(st: CustomerState, now: int) -> Lin:
                a, b = ll(st, now), rl(st, now)
                if a is None or b is None:
                    return None
                if op == "+":
                    return (a[0] + b[0], a[1] + b[1])
                if op == "-":
                    return (a[0] - b[0], a[1] - b[1])
                if op == "*":
                    return (a[0] * b[0], a[1] * b[0] + a[0] * b[1])
                return None if b[0] == 0 else (a[0] / b[0], a[1] / b[0])

        if lv.const and rv.const:  # constants only: fold at compile time
            return _const(arith(CustomerState("", 0), 0))
        return V(arith, "num" if typed else "any", lin=lin)

    def neg(self, node: ast.Neg) -> V:
        v = self.value(node.item)
        f = v.fn

        def neg(st: CustomerState, now: int) -> Any:
            x = f(st, now)
            return -x if x is not None and is_number(x) else None

        lin: LinFn | None = None
        if v.lin is not None:
            vl = v.lin

            def lin(st: CustomerState, now: int) -> Lin:
                a = vl(st, now)
                return None if a is None else (-a[0], -a[1])

        return V(neg, v.kind, lin=lin)

    def compare(self, op: str, lv: V, rv: V) -> V:
        if lv.lin is not None or rv.lin is not None:
            self.producers.append(_root_next(_lin_of(lv), _lin_of(rv)))
        typed = lv.kind == rv.kind and lv.kind in ("num", "str")
        if typed and rv.const:
            return V(cmp_const(op, lv.fn, rv.value), "bool")
        if typed:
            return V(cmp_var(op, lv.fn, rv.fn), "bool")
        lf, rf = lv.fn, rv.fn
        return V(lambda st, now: compare_values(op, lf(st, now), rf(st, now)), "bool")

    def in_(self, node: ast.In) -> V:
        f, opts = self.value(node.value).fn, node.options
        if all(isinstance(o, str) for o in opts):
            sset = frozenset(opts)
            return V(lambda st, now: type(v := f(st, now)) is str and v in sset, "bool")
        return V(lambda st, now: (v := f(st, now)) is not None
                 and any(values_equal(v, o) for o in opts), "bool")

    @staticmethod
    def and_(fs: list[Fn]) -> V:
        if len(fs) == 2:
            f1, f2 = fs
            return V(lambda st, now: f1(st, now) and f2(st, now), "bool")

        def all_(st: CustomerState, now: int) -> bool:
            for f in fs:  # noqa: SIM110 - a plain loop beats all() over a generator
                if not f(st, now):
                    return False
            return True

        return V(all_, "bool")

    @staticmethod
    def or_(fs: list[Fn]) -> V:
        def any_(st: CustomerState, now: int) -> bool:
            for f in fs:  # noqa: SIM110 - a plain loop beats any() over a generator
                if f(st, now):
                    return True
            return False

        return V(any_, "bool")


class _CatalogueBuilder:
    def __init__(self) -> None:
        self.specs: dict[str, SeriesSpec] = {}
        self.traits: set[str] = set()
        self.needs_cart = False
        self.needs_purchases = False
        self.cse: dict[str, tuple[V, list[NextFn], frozenset[str]]] = {}
        self.schedules: dict[Any, Fn] = {}  # shared expiry schedules of count combinations
        self.uses: dict[str, int] = {}  # canonical text -> occurrences across segments

    def count_uses(self, node: ast.Expr) -> None:
        for n in _walk(node):
            if isinstance(n, _MEMO_NODES):
                key = unparse(n)
                self.uses[key] = self.uses.get(key, 0) + 1

    def series(self, es: ast.EventSet) -> SeriesSpec:
        text = unparse_events(es)
        spec = self.specs.get(text)
        if spec is None:
            key = series_hash(text)
            if any(s.key == key for s in self.specs.values()):  # 64-bit: never in practice
                raise ValueError(f"series key collision for {text!r}; rename a filter value")
            match = None if es.filter is None else filter_fn(es.filter)
            spec = SeriesSpec(len(self.specs), key, text, es.types, match,
                              filter_props=_prop_names(es.filter))
            self.specs[text] = spec
        return spec


def _prop_names(node: ast.Expr | None) -> frozenset[str]:
    """The event properties a ``where`` filter reads (iterative: filters may be deep)."""
    names: set[str] = set()
    todo = [] if node is None else [node]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.PropRef):
            names.add(n.name)
        todo.extend(ast.subexpressions(n))
    return frozenset(names)


def _junction_next(fns: list[Fn], nexts: list[NextFn | None], is_and: bool) -> NextFn:
    """Next change of ``and``/``or`` from its items' values and next changes.

    An ``and`` with false items stays false until every false item may have changed (the
    latest of their next changes); with all items true it may change at the earliest of
    theirs. ``or`` likewise with true items. A constant item (no next change) never changes.
    So a customer without purchases never wakes for ``now >= X and count(purchase, 30d) >= 1``.
    """
    pairs = list(zip(fns, nexts, strict=True))
    decisive = not is_and  # the item value that fixes the result: false for and, true for or

    def nxt(st: CustomerState, now: int) -> int:
        stuck = -1  # latest next change among decisive items (-1: none decisive)
        soonest = NEVER
        for f, nx in pairs:
            if (f(st, now) is True) == decisive:
                c = NEVER if nx is None else nx(st, now)
                if c > stuck:  # noqa: PLR1730 - hot loop
                    stuck = c
            elif nx is not None:
                c = nx(st, now)
                if c < soonest:  # noqa: PLR1730 - hot loop
                    soonest = c
        return soonest if stuck < 0 else stuck

    return nxt


def _next_of(producers: list[NextFn]) -> NextFn:
    if not producers:
        return lambda st, now: NEVER
    if len(producers) == 1:
        return producers[0]

    def nxt(st: CustomerState, now: int) -> int:
        best = NEVER
        for p in producers:
            c = p(st, now)
            if c < best:  # noqa: PLR1730 - faster than min() in this hot loop
                best = c
        return best

    return nxt


def compile_catalogue(catalogue: ast.Catalogue) -> CompiledCatalogue:
    """Compile the enabled segments of ``catalogue`` (disabled ones have no members)."""
    builder = _CatalogueBuilder()
    segments: list[CompiledSegment] = []
    for seg in catalogue.segments:
        if seg.enabled:
            builder.count_uses(seg.condition)
    for seg in catalogue.segments:
        if not seg.enabled:
            continue
        sc = _SegmentCompiler(builder)
        v = sc.value(seg.condition)
        fn = v.fn
        if v.kind != "bool":
            raise TypeError(f"segment {seg.name!r}: condition is not a boolean")
        segments.append(CompiledSegment(
            len(segments), seg.name, seg, fn,
            frozenset(t for t in sc.types if not t.startswith("#")),
            frozenset(t for t in sc.types if t.startswith("#")), bool(sc.producers),
            _next_of(sc.producers), constant_when_empty(seg.condition),
        ))
    specs = tuple(builder.specs.values())
    handlers: dict[str, TypeHandler] = {}
    all_types = {t for s in specs for t in s.types} | {t for s in segments for t in s.types}
    for typ in sorted(all_types):
        handlers[typ] = TypeHandler(
            tuple((s.index, s.match) for s in specs if typ in s.types),
            tuple(s.index for s in segments if typ in s.types),
            builder.needs_cart and typ in CART_TYPES,
            builder.needs_purchases and typ == "purchase",
            typ == "identify" and bool(builder.traits),
        )
    text = "\n".join(f"{s.name}:{unparse(s.definition.condition)}" for s in segments)
    fingerprint = zlib.crc32(f"{catalogue.allowed_lateness_ms}\n{text}".encode())
    return CompiledCatalogue(
        catalogue.version, catalogue.allowed_lateness_ms, tuple(segments),
        tuple(s.name for s in segments), specs, handlers, builder.needs_cart,
        builder.needs_purchases, frozenset(builder.traits),
        tuple(s.index for s in segments if s.time_dependent), fingerprint,
        tuple(SeriesState(s.key, tuple(s.props), s.hours) for s in specs),
    )


__all__ = [
    "DAY_MS", "EPOCH", "CompiledCatalogue", "CompiledSegment", "SeriesSpec", "compile_catalogue",
]
