"""Compilers of the time-dependent atoms: counts and sums over windows, count thresholds and
weighted count sums with their exact next changes, ``within``, ``then no``, ``hour_share`` and
the calendar functions. :class:`AtomCompiler` is the base of the segment compiler
(``segment.py``), which adds the expression forms that do not depend on time by themselves."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING

from processors.lang import ast
from processors.lang.compile.analysis import num_literal
from processors.lang.compile.counts import (
    Combo,
    combo_of,
    expiry_schedule,
    monotone_next,
    number_predicate,
)
from processors.lang.compile.model import (
    Lin,
    NextFn,
    SeqInput,
    SeriesInput,
    SeriesSpec,
    V,
    const,
)
from processors.lang.compile.timing import memo
from processors.lang.values import (
    DAY_MS,
    age_years_ms,
    anniversary,
    date_instant,
    date_ms,
    days_until_anniversary_ms,
    is_number,
    next_midnight,
    to_date,
    utc_date,
)
from state.model import NEVER, CustomerState

if TYPE_CHECKING:
    from processors.lang.compile.catalogue import CatalogueBuilder
    from processors.lang.compile.model import Input


class AtomCompiler:
    """State of one segment's compilation and the compilers of its time-dependent atoms."""

    def __init__(self, cat: CatalogueBuilder) -> None:
        self.cat = cat
        # event types that can change the segment, and the state parts it reads (apply()
        # re-evaluates a segment only on events of its types that touch its inputs)
        self.types: set[str] = set()
        self.inputs: set[Input] = set()
        self.producers: list[NextFn] = []

    def value(self, node: ast.Expr) -> V:  # the segment compiler's
        raise NotImplementedError

    def compare(self, op: str, lv: V, rv: V) -> V:  # the segment compiler's
        raise NotImplementedError

    def series(self, es: ast.EventSet) -> SeriesSpec:
        self.types.update(es.types)
        spec = self.cat.series(es)
        self.inputs.add(SeriesInput(spec.index))
        return spec

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
        combo = combo_of(node)
        assert combo is not None
        value = self.combo_value(combo, expiry_producers=False)
        ks = [num_literal(c) for c in consts]
        lo_k, hi_k = ks[0], ks[-1]
        assert lo_k is not None and hi_k is not None
        pred = number_predicate(op, lo_k, hi_k)
        terms = tuple((self.cat.series(a.events).index, a.window_ms, w) for a, w in combo[0])
        const = combo[1]

        monotone = all(w > 0 for _, _, w in terms)  # the sum only falls with time
        nxt = self._scheduled_next(terms, const, pred, (lo_k, hi_k), monotone)
        if monotone:
            nxt = monotone_next(terms, const, pred, (lo_k, hi_k), nxt)
        self.producers.append(nxt)
        f = value.fn
        return V(lambda st, now: pred(f(st, now)), "bool")

    def _scheduled_next(self, terms: tuple[tuple[int, int, int], ...], const: int,
                        pred: Callable[[float], bool], cuts: tuple[float, float],
                        monotone: bool) -> NextFn:
        """Next change of a weighted count sum compared with constants: the first expiry in
        the shared, memoised schedule where ``pred`` flips (with positive weights only the
        expiries where the sum reaches a constant are candidates)."""
        skey = (terms, const)
        schedule = self.cat.schedules.get(skey)
        if schedule is None:
            schedule = self.cat.schedules[skey] = memo(expiry_schedule(terms, const),
                                                       self.cat.epoch)

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

        return nxt

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

    def completion(self, node: ast.Completion) -> V:
        """``last(SEQ)``: the sequence's latest completion (kept in the state, raised by the
        engine as events arrive); ``since(SEQ)``: now minus it, linear in now."""
        spec = self.cat.sequence(node.seq)
        self.types.update(spec.types)
        self.inputs.add(SeqInput(spec.index))
        k = spec.index
        if node.func == "last":
            return V(lambda st, now: st.seqs[k].done, "num")

        def since(st: CustomerState, now: int) -> int | None:
            done = st.seqs[k].done
            return None if done is None else now - done

        def since_lin(st: CustomerState, now: int) -> Lin:
            done = st.seqs[k].done
            return None if done is None else (now - done, 1)

        return V(since, "num", lin=since_lin)

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
                return const(date_ms(arg.value))
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

