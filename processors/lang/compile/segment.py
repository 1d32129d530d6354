"""The segment compiler: one condition AST into an evaluator and its next-change function
(expression forms; the time-dependent atoms are compiled by ``temporal.AtomCompiler``)."""

from __future__ import annotations

from typing import Any

from processors.lang import ast
from processors.lang.compile.analysis import num_literal
from processors.lang.compile.counts import combo_of, count_bounds
from processors.lang.compile.model import (
    CART,
    PURCHASES,
    Fn,
    Lin,
    LinFn,
    NextFn,
    TraitInput,
    V,
    const,
)
from processors.lang.compile.ops import cmp_const, cmp_var
from processors.lang.compile.temporal import AtomCompiler
from processors.lang.compile.timing import (
    MEMO_NODES,
    junction_next,
    lin_of,
    memo,
    next_of,
    root_next,
    worth_memo,
)
from processors.lang.unparse import unparse
from processors.lang.values import arith_numbers, compare_values, is_number, values_equal
from processors.lang.vocab import CART_TYPES
from state.model import CustomerState


class SegmentCompiler(AtomCompiler):
    """Compiles one segment's condition (``value``); shared sub-expressions come from the
    catalogue builder's cache."""

    def value(self, node: ast.Expr) -> V:
        """Compile ``node``; sub-expressions shared between segments are compiled once and
        memoised per evaluation epoch (with their next-change producers)."""
        if not isinstance(node, MEMO_NODES):
            return self._value(node)
        key = unparse(node)
        hit = self.cat.cse.get(key)
        if hit is not None:
            v, prods, types, inputs = hit
            self.producers.extend(prods)
            self.types.update(types)
            self.inputs.update(inputs)
            return v
        outer_p, outer_t, outer_i = self.producers, self.types, self.inputs
        self.producers, self.types, self.inputs = [], set(), set()
        try:
            v = self._value(node)
            prods, types, inputs = self.producers, frozenset(self.types), frozenset(self.inputs)
        finally:
            self.producers, self.types, self.inputs = outer_p, outer_t, outer_i
        if self.cat.uses.get(key, 0) >= 2 and worth_memo(node):
            epoch = self.cat.epoch
            lin = None if v.lin is None else memo(v.lin, epoch)
            v = V(memo(v.fn, epoch), v.kind, v.const, v.value, lin)
            prods = [memo(p, epoch) for p in prods]
            self.cat.cse[key] = (v, prods, types, inputs)
        self.producers.extend(prods)
        self.types.update(types)
        self.inputs.update(inputs)
        return v

    def _value(self, node: ast.Expr) -> V:
        match node:
            case ast.Literal():
                return const(node.value)
            case ast.Duration():
                return const(node.ms)
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
            case ast.Completion():
                return self.completion(node)
            case ast.HourShare():
                return self.hour_share(node)
            case ast.DateFunc():
                return self.date_func(node)
            case ast.Arith():
                combo = combo_of(node)
                if combo is not None:
                    return self.combo_value(combo, expiry_producers=True)
                return self.arith(node)
            case ast.Neg():
                return self.neg(node)
            case ast.Compare():
                bounds = count_bounds(node)
                if bounds is not None:
                    return self.count_threshold(node, *bounds)
                if num_literal(node.right) is not None and combo_of(node.left) is not None:
                    return self.combo_compare(node.op, node.left, node.right)
                left, right = self._side(node.left, (node.right,)), \
                    self._side(node.right, (node.left,))
                return self.compare(node.op, left, right)
            case ast.Between():
                bounds = count_bounds(node)
                if bounds is not None:
                    return self.count_threshold(node, *bounds)
                if (num_literal(node.low) is not None and num_literal(node.high) is not None
                        and combo_of(node.value) is not None):
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
                    self.producers.append(junction_next(fns, nexts, is_and))
                return self.and_(fns) if is_and else self.or_(fns)
            case ast.Not():
                g = self.value(node.item).fn
                return V(lambda st, now: g(st, now) is not True, "bool")
            case ast.PropRef():
                raise TypeError("a property outside a where filter")
            case ast.SegmentRef():
                raise TypeError(f"segment.{node.name} was not expanded (processors.lang.refs)")
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
        return v, (next_of(prods) if prods else None)

    def _side(self, node: ast.Expr, others: tuple[ast.Expr, ...]) -> V:
        """A comparison operand; ``days_until_anniversary`` compared with numeric constants
        gets exact wake-up days instead of every midnight."""
        if isinstance(node, ast.DateFunc) and node.func == "days_until_anniversary":
            consts = [num_literal(o) for o in others]
            if all(c is not None for c in consts):
                return self.date_func(node, tuple(c for c in consts if c is not None))
        return self.value(node)

    def profile(self, node: ast.ProfileRef) -> V:
        name = node.field
        if node.namespace == "trait":
            self.cat.traits.add(name)
            self.types.add("identify")
            self.inputs.add(TraitInput(name))

            def trait(st: CustomerState, now: int) -> Any:
                t = st.traits.get(name)
                return None if t is None else t[0]

            return V(trait, "any")
        if node.namespace == "cart":
            self.cat.needs_cart = True
            self.types.update(CART_TYPES)
            self.inputs.add(CART)
            getters: dict[str, Fn] = {
                "items": lambda st, now: 0 if st.cart is None else st.cart.items(),
                "lines": lambda st, now: 0 if st.cart is None else len(st.cart.lines),
                "value": lambda st, now: 0 if st.cart is None else st.cart.value(),
                "last_change": lambda st, now: None if st.cart is None else st.cart.last_change,
            }
            return V(getters[name], "num")
        self.cat.needs_purchases = True
        self.types.add("purchase")
        self.inputs.add(PURCHASES)
        pgetters: dict[str, Fn] = {
            "count": lambda st, now: st.p_count,
            "total": lambda st, now: st.p_total,
            "aov": lambda st, now: st.p_total / st.p_count if st.p_count else None,
            "first": lambda st, now: st.p_first,
            "last": lambda st, now: st.p_last,
        }
        return V(pgetters[name], "num")


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
            return arith_numbers(op, a, b)

        lin: LinFn | None = None
        if lv.lin is not None or rv.lin is not None:
            ll, rl = lin_of(lv), lin_of(rv)

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
            return const(arith(CustomerState("", 0), 0))
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
            self.producers.append(root_next(lin_of(lv), lin_of(rv)))
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


