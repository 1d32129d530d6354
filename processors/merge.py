"""Folding an anonymous profile into a known customer's state (alias events).

Both states are bound to the same compiled catalogue. The result is what the combined event
history gives. The cart: both profiles' cart operations within the allowed lateness are
replayed together in event-time order; what each cart held before those (operations folded
beyond the log's cap) is united line by line (quantities added, the later price kept)
after dropping, on each side, lines older than the other side's latest purchase. Events both
profiles took (same event id) were taken out of the anonymous side first (``Engine.absorb``).
Ties in event time count the anonymous profile's events as later (its history follows).
"""

from __future__ import annotations

import math
from typing import Any

from processors import sequences
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


def _kept(lines: dict[str, CartLine], cleared: int | None, later: bool) -> dict[str, CartLine]:
    """The lines not emptied by the other side's purchase at ``cleared``; on a tie in event time
    the ``later`` side's line (the anonymous profile's: its history follows) survives it."""
    if cleared is None:
        return {k: v.copy() for k, v in lines.items()}
    if later:
        return {k: v.copy() for k, v in lines.items() if v.ts >= cleared}
    return {k: v.copy() for k, v in lines.items() if v.ts > cleared}


def _union(a: dict[str, CartLine], b: dict[str, CartLine]) -> dict[str, CartLine]:
    lines = {k: v.copy() for k, v in a.items()}
    for pid, line in b.items():
        cur = lines.get(pid)
        if cur is None:
            lines[pid] = line.copy()
        else:
            cur.qty += line.qty
            if line.ts >= cur.ts:
                cur.price, cur.ts = line.price, line.ts
    return lines


def _merge_cart(a: CartState | None, b: CartState | None) -> CartState | None:
    """Both carts' logged operations are replayed together in event-time order (ties: ``a``'s
    first) over the union of what each had folded before them. A log holds every operation
    since the cart's last purchase (up to ``CART_LOG_CAP`` of them), so for carts within the cap
    the result is the replay of both histories interleaved: a purchase empties the other side's
    earlier lines, a remove takes out the other side's earlier add."""
    if b is None:
        return a
    if a is None:
        return b
    out = CartState()
    out.base = _union(_kept(a.base, b.cleared, False), _kept(b.base, a.cleared, True))
    out.log = sorted(a.log + b.log, key=lambda o: o[0])  # stable: a's ops first on ties
    out.rebuild()
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
    target.series = [_merge_series(a, b)
                     for a, b in zip(target.series, source.series, strict=True)]
    if target.seqs:
        target.seqs = [sequences.merge(a, b, len(q.steps), q.within_ms, q.on is not None,
                                       horizon)
                       for a, b, q in zip(target.seqs, source.seqs, catalogue.sequences,
                                          strict=True)]
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
    for k, rec in source.seen.items():  # shared events were taken out of source (absorb)
        target.seen.setdefault(k, rec)
    if source.pending:
        target.pending = sorted(target.pending + source.pending, key=lambda p: p[0])
