"""Next-change combinators: memoisation per epoch, linear values (roots), and/or and
minimum of producers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from processors.lang import ast
from processors.lang.compile.model import Epoch, Fn, Lin, LinFn, NextFn, V
from processors.lang.values import is_number
from state.model import NEVER, CustomerState

MEMO_NODES = (ast.Arith, ast.Aggregate, ast.HourShare, ast.DateFunc, ast.Within)


def worth_memo(node: ast.Expr) -> bool:
    """Plain counts are cheaper to recompute than to memoise."""
    return not (isinstance(node, ast.Aggregate) and node.func == "count")


def memo(f: Callable[[CustomerState, int], Any], epoch: Epoch
         ) -> Callable[[CustomerState, int], Any]:
    """``f`` computed once per ``epoch`` value (sub-expressions shared by several segments)."""
    cell: list[Any] = [-1, None]

    def memoised(st: CustomerState, now: int) -> Any:
        if cell[0] == epoch.value:
            return cell[1]
        v = f(st, now)
        cell[0] = epoch.value
        cell[1] = v
        return v

    return memoised



def lin_of(v: V) -> LinFn:
    """The linear form of any value: its own, or (value, 0) for values constant in time."""
    if v.lin is not None:
        return v.lin
    f = v.fn

    def lin(st: CustomerState, now: int) -> Lin:
        x = f(st, now)
        return (x, 0) if is_number(x) else None

    return lin


def root_next(lf: LinFn, rf: LinFn) -> NextFn:
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



def junction_next(fns: list[Fn], nexts: list[NextFn | None], is_and: bool) -> NextFn:
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


def next_of(producers: list[NextFn]) -> NextFn:
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

