"""Folding an anonymous profile into a known customer's state (alias events).

Both states are bound to the same compiled catalogue. The result is what the combined event
history gives, with one documented approximation for the cart: lines are united (quantities
added, the later price kept) after dropping, on each side, lines older than the other side's
latest purchase; the cart's late-event log is folded (no re-ordering across the two profiles).
Ties in event time count the anonymous profile's events as later (its history follows).
"""

from __future__ import annotations

import math
from typing import Any

from state.model import CartLine, CartState, CustomerState, SeriesState, exact_add


def _merge_series(a: SeriesState, b: SeriesState) -> SeriesState:
    if b.last is None and (b.hours is None or not any(b.hours)):
        return a
    if a.last is None:  # possibly a shared empty series: take a copy of b instead
        a = SeriesState(b.key, a.props, a.hours is not None)
    if b.last is not None and (a.last is None or b.last >= a.last):
        a.last = b.last
    if b.first is not None and (a.first is None or b.first < a.first):
        a.first = b.first
    if b.ts:
        rows = list(zip(a.ts, *a.vals, strict=True)) + list(zip(b.ts, *b.vals, strict=True))
        rows.sort(key=lambda r: r[0])  # stable: a's rows first on ties
        a.ts = [r[0] for r in rows]
        a.vals = [[r[j + 1] for r in rows] for j in range(len(a.vals))]
    if a.hours is not None and b.hours is not None:
        a.hours = [x + y for x, y in zip(a.hours, b.hours, strict=True)]
    return a


def _kept(lines: dict[str, CartLine], cleared: int | None) -> dict[str, CartLine]:
    return {k: v.copy() for k, v in lines.items() if cleared is None or v.ts > cleared}


def _merge_cart(a: CartState | None, b: CartState | None) -> CartState | None:
    if b is None:
        return a
    if a is None:
        return b
    lines = _kept(a.lines, b.cleared)
    for pid, line in _kept(b.lines, a.cleared).items():
        cur = lines.get(pid)
        if cur is None:
            lines[pid] = line
        else:
            cur.qty += line.qty
            if line.ts >= cur.ts:
                cur.price, cur.ts = line.price, line.ts
    out = CartState()
    out.set_lines(lines)
    out.base = {k: v.copy() for k, v in lines.items()}
    out.last_change = _max(a.last_change, b.last_change)
    out.cleared = _max(a.cleared, b.cleared)
    return out


def _max(x: int | None, y: int | None) -> int | None:
    if x is None:
        return y
    return x if y is None else max(x, y)


def _min(x: int | None, y: int | None) -> int | None:
    if x is None:
        return y
    return x if y is None else min(x, y)


def merge_states(target: CustomerState, source: CustomerState, catalogue: Any,
                 horizon: int) -> None:
    """Fold ``source`` into ``target`` in place (memberships are re-evaluated by the caller)."""
    del catalogue, horizon  # both states are already bound to it
    target.series = [_merge_series(a, b)
                     for a, b in zip(target.series, source.series, strict=True)]
    target.cart = _merge_cart(target.cart, source.cart)
    target.p_count += source.p_count
    for x in source.p_sum:
        exact_add(target.p_sum, x)
    target.p_total = math.fsum(target.p_sum)
    target.p_first = _min(target.p_first, source.p_first)
    target.p_last = _max(target.p_last, source.p_last)
    for name, (value, ts) in source.traits.items():
        cur = target.traits.get(name)
        if cur is None or ts >= cur[1]:
            target.traits[name] = [value, ts]
    for k, ts in source.seen.items():
        target.seen.setdefault(k, ts)
    if source.pending:
        target.pending = sorted(target.pending + source.pending, key=lambda p: p[0])
