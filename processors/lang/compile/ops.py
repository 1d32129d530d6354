"""Specialised comparison closures and ``where`` filter compilation (hot paths).

``cmp_const``/``cmp_var`` are for sides whose kinds are statically equal (both numbers or both
strings, or null): one closure per operator, so the hot path is a call and a comparison.

>>> from processors.lang.parser import parse
>>> node = parse('count(page_view where category in ["a", "b"] and price >= 10, 1d) > 0')
>>> f = filter_fn(node.left.events.filter)
>>> f({"category": "a", "price": 12}), f({"category": "a", "price": "12"}), f({})
(True, False, False)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processors.lang import ast
from processors.lang.values import arith_numbers, compare_values, is_number, values_equal

Fn = Callable[[Any, int], Any]
Pred = Callable[[Any, int], bool]
Match = Callable[[dict[str, Any]], bool]


def cmp_const(op: str, f: Fn, c: Any) -> Pred:
    """``f(...) op c`` where ``f`` returns the kind of ``c`` or None."""
    if op == "==":
        return lambda st, now: f(st, now) == c
    if op == "!=":
        return lambda st, now: (v := f(st, now)) is not None and v != c
    if op == "<":
        return lambda st, now: (v := f(st, now)) is not None and v < c
    if op == "<=":
        return lambda st, now: (v := f(st, now)) is not None and v <= c
    if op == ">":
        return lambda st, now: (v := f(st, now)) is not None and v > c
    if op == ">=":
        return lambda st, now: (v := f(st, now)) is not None and v >= c
    raise ValueError(op)


def cmp_var(op: str, f: Fn, g: Fn) -> Pred:
    """``f(...) op g(...)`` where both return the same kind or None."""

    def pred(st: Any, now: int) -> bool:
        a = f(st, now)
        if a is None:
            return False
        b = g(st, now)
        if b is None:
            return False
        if op == "==":
            return bool(a == b)
        if op == "!=":
            return bool(a != b)
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)

    return pred


# --- where filters: closures over an event's properties ------------------------------------
PFn = Callable[[dict[str, Any]], Any]


def _fvalue(node: ast.Expr) -> PFn:
    match node:
        case ast.PropRef():
            name = node.name
            return lambda p: p.get(name)
        case ast.Literal():
            v = node.value
            return lambda p: v
        case ast.Duration():
            ms = node.ms
            return lambda p: ms
        case ast.Arith():
            lf, rf, op = _fvalue(node.left), _fvalue(node.right), node.op

            def arith(p: dict[str, Any]) -> Any:
                a, b = lf(p), rf(p)
                if not (is_number(a) and is_number(b)):
                    return None
                return arith_numbers(op, a, b)

            return arith
        case ast.Neg():
            g = _fvalue(node.item)
            return lambda p: -x if is_number(x := g(p)) else None
        case _:
            return filter_fn(node)


def filter_fn(node: ast.Expr) -> Match:
    """A predicate over an event's ``properties`` dict (only ``true`` is true)."""
    match node:
        case ast.Compare():
            op = node.op
            if isinstance(node.left, ast.PropRef) and isinstance(node.right, ast.Literal):
                name, c = node.left.name, node.right.value
                if isinstance(c, str) and op == "==":
                    return lambda p: p.get(name) == c
                if is_number(c) and op in ("<", "<=", ">", ">="):
                    return lambda p: is_number(v := p.get(name)) and compare_values(op, v, c)
            lf, rf = _fvalue(node.left), _fvalue(node.right)
            return lambda p: compare_values(op, lf(p), rf(p))
        case ast.Between():
            vf, lo, hi = _fvalue(node.value), _fvalue(node.low), _fvalue(node.high)
            return lambda p: compare_values(">=", v := vf(p), lo(p)) and compare_values(
                "<=", v, hi(p))
        case ast.In():
            vf, opts = _fvalue(node.value), node.options
            if all(isinstance(o, str) for o in opts):
                sset = frozenset(opts)
                return lambda p: type(v := vf(p)) is str and v in sset
            return lambda p: (v := vf(p)) is not None and any(values_equal(v, o) for o in opts)
        case ast.IsNull():
            vf, neg = _fvalue(node.value), node.negate
            return lambda p: (vf(p) is None) != neg
        case ast.And():
            fs = [filter_fn(i) for i in node.items]
            if len(fs) == 2:
                f1, f2 = fs
                return lambda p: f1(p) and f2(p)
            return lambda p: all(f(p) for f in fs)
        case ast.Or():
            fs = [filter_fn(i) for i in node.items]
            if len(fs) == 2:
                g1, g2 = fs
                return lambda p: g1(p) or g2(p)
            return lambda p: any(f(p) for f in fs)
        case ast.Not():
            g = filter_fn(node.item)
            return lambda p: not g(p)
        case ast.Literal():
            truth = node.value is True
            return lambda p: truth
        case ast.PropRef():
            name = node.name
            return lambda p: p.get(name) is True
    raise TypeError(f"{type(node).__name__} is not allowed in a where filter")
