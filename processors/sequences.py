"""Positive sequences ``A then B [then C ...] within T [on P]`` over one customer's events.

The state of one sequence (``state.model.SeqState``) holds its latest completion ``done`` and
the recent events matching some step. A completion at ``tn`` is a choice of distinct events
``e1 .. en`` (``ek`` matching step ``k``) with ``t1 <= ... <= tn <= t1 + T`` and, with ``on``,
every step's property equal to the final step's (null never equal). An event that matches
several steps may play any one of them in a completion, never two.

Exactness: ``done`` is the latest completion over every event ever added. A new event (in
order or late) can only create completions that involve it, so their final step is in
``[ts, ts + T]``: those final events are re-checked, latest first. Every accepted later
event has ``ts >= horizon`` (the allowed lateness), so an event older than ``horizon - T`` can
be in no new completion and is dropped. Merges (alias) unite both histories' kept events and
re-check the final events after the larger ``done``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from processors.lang.values import values_equal
from state.model import SEQ_CAP, SeqState


def completes(ss: SeqState, j: int, n: int, within: int, on: bool) -> bool:
    """Whether the kept event ``j`` (matching the final step) completes a chain of ``n``
    steps with distinct kept events."""
    tl, masks, vals = ss.ts, ss.masks, ss.vals
    lo = tl[j] - within
    pv = vals[j]
    if n == 2:  # the common case, without the search's closure and used list
        k = bisect_right(tl, tl[j]) - 1
        while k >= 0 and tl[k] >= lo:
            if masks[k] & 1 and k != j and (not on or values_equal(vals[k], pv)):
                return True
            k -= 1
        return False
    used = [j]

    def search(step: int, upto: int) -> bool:
        bit = 1 << step
        k = bisect_right(tl, upto) - 1
        while k >= 0 and tl[k] >= lo:
            if masks[k] & bit and k not in used and (not on or values_equal(vals[k], pv)):
                if step == 0:
                    return True
                used.append(k)
                if search(step - 1, tl[k]):
                    return True
                used.pop()
            k -= 1
        return False

    return search(n - 2, tl[j])


def _recheck(ss: SeqState, lo: int, hi: int, n: int, within: int, on: bool) -> None:  # noqa: PLR0917
    """Raise ``done`` to the latest final-step event in ``[lo, hi]`` that completes."""
    tl, masks = ss.ts, ss.masks
    final = 1 << (n - 1)
    if ss.done is not None and ss.done >= lo:
        lo = ss.done + 1
    j = bisect_right(tl, hi) - 1
    while j >= 0 and tl[j] >= lo:
        if masks[j] & final and completes(ss, j, n, within, on):
            ss.done = tl[j]
            return
        j -= 1


def prune(ss: SeqState, within: int, horizon: int) -> None:
    """Drop the events no accepted event can complete a chain with (older than
    ``horizon - T``), and the oldest beyond ``SEQ_CAP``."""
    tl = ss.ts
    if tl and tl[0] < horizon - within:
        k = bisect_left(tl, horizon - within)
        del tl[:k], ss.vals[:k], ss.masks[:k]
    extra = len(tl) - SEQ_CAP
    if extra > 0:
        del tl[:extra], ss.vals[:extra], ss.masks[:extra]


def add(ss: SeqState, ts: int, mask: int, val: Any, n: int, within: int, on: bool,  # noqa: PLR0917
        horizon: int) -> None:
    """Add one event (``mask``: the steps it matches, ``val``: its ``on`` property)."""
    tl = ss.ts
    last = len(tl) - 1
    if last < 0 or ts >= tl[last]:  # in order: append; only events at ``ts`` can complete
        tl.append(ts)
        ss.vals.append(val)
        ss.masks.append(mask)
        if mask >> (n - 1) or (last >= 0 and tl[last] == ts):
            _recheck(ss, ts, ts, n, within, on)
    else:
        k = bisect_right(tl, ts)
        tl.insert(k, ts)
        ss.vals.insert(k, val)
        ss.masks.insert(k, mask)
        _recheck(ss, ts, ts + within, n, within, on)
    prune(ss, within, horizon)


def subtract(ss: SeqState, ts: int, mask: int, val: Any) -> None:
    """Take one kept event out (an event the other profile of a merge also took). ``done``
    stays: the other profile holds the same event, so the completion exists in the union."""
    tl = ss.ts
    k = bisect_left(tl, ts)
    while k < len(tl) and tl[k] == ts:
        if ss.masks[k] == mask and (val is None or values_equal(ss.vals[k], val)):
            del tl[k], ss.vals[k], ss.masks[k]
            return
        k += 1


def merge(a: SeqState, b: SeqState, n: int, within: int, on: bool,  # noqa: PLR0917
          horizon: int) -> SeqState:
    """The sequence state of the union of two histories: both kept events, the larger
    ``done``, and the chains formed across both."""
    if not b.ts and b.done is None:
        return a
    out = SeqState(a.key)
    rows = sorted(zip(a.ts + b.ts, a.vals + b.vals, a.masks + b.masks, strict=True),
                  key=lambda r: r[0])  # stable: a's events first on ties
    out.ts = [r[0] for r in rows]
    out.vals = [r[1] for r in rows]
    out.masks = [r[2] for r in rows]
    out.done = b.done if a.done is None or (b.done is not None and b.done > a.done) else a.done
    if out.ts:
        _recheck(out, out.ts[0], out.ts[-1], n, within, on)
    prune(out, within, horizon)
    return out
