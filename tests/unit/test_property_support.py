"""Shared pieces of the engine property tests: event strategies, delivery models, log checks.

Holds no tests (helpers only); imported by the other tests/unit/test_property_*.py files.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import strategies as st

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
MIDNIGHT = 1_795_478_400_000  # 2026-11-24T00:00:00Z
T0 = MIDNIGHT - 20 * MIN  # streams start 20 minutes before midnight (date functions flip)
SLOT = 15_000  # timestamps sit on a 15 s grid (plus a few ms) so that boundaries coincide
SLOTS = 160  # 40 minutes
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: multiply every property test's example count, e.g. SEGSTREAM_PROPERTY_SCALE=20 for a deep run
SCALE = float(os.environ.get("SEGSTREAM_PROPERTY_SCALE", "1"))


def examples(n: int) -> int:
    """``n`` examples times SEGSTREAM_PROPERTY_SCALE."""
    return max(1, int(n * SCALE))

CUSTOMERS = ("c1", "c2", "c3")
ANONS = ("a1", "a2")
PRODUCT_PRICE = {"p1": 8.0, "p2": 25.0, "p3": 45.5}
TRAIT_VALUES: dict[str, tuple[Any, ...]] = {
    "country": ("FR", "DE", "US", None),
    "birthday": ("1996-11-24", "1990-11-25", "1987-11-23", "2000-02-29", "1993-13-40", None,
                 "2008-03-10", "2001-12-01"),
    "signup_date": ("2026-11-22", "2026-11-21", "2026-11-23", "soon", None),
    "satisfaction": (0, 3, 6, 7, 10, None),
}
# event types and whether an anonymous visitor may send them
BEHAVIOUR = ("page_view", "page_view", "page_view", "cart_add", "cart_add", "cart_remove",
             "checkout", "purchase", "purchase", "email_sent", "email_open", "email_click",
             "identify")
ANON_OK = frozenset({"page_view", "cart_add", "cart_remove", "identify"})


def maybe(key: str, values: Sequence[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``{}`` or ``{key: one of values}``."""
    return st.one_of(st.just({}), st.sampled_from(values).map(lambda v: {key: v}))


def props_for(typ: str) -> st.SearchStrategy[dict[str, Any]]:
    """Properties of one event of type ``typ`` from small domains (so values collide)."""
    def merge(*parts: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in parts:
            out.update(p)
        return out

    if typ == "page_view":
        return st.tuples(maybe("category", ("shoes", "bags", "books")),
                         maybe("price", (3, 12.5, 25, 40)),
                         st.sampled_from(({"device": "iphone"}, {"device": "android"}, {},
                                          {"os": "macos"}, {"device": "mac", "os": "macos"})),
                         maybe("product_id", ("p1", "p2"))
                         ).map(lambda t: merge({"url": "/x"}, *t))
    if typ == "cart_add":
        return st.tuples(st.sampled_from(sorted(PRODUCT_PRICE)), maybe("quantity", (1, 2, 3)),
                         maybe("category", ("shoes", "bags", "books"))).map(
            lambda t: merge({"product_id": t[0], "price": PRODUCT_PRICE[t[0]]}, t[1], t[2]))
    if typ == "cart_remove":
        return st.tuples(st.sampled_from(sorted(PRODUCT_PRICE)), maybe("quantity", (1, 2))).map(
            lambda t: merge({"product_id": t[0]}, t[1]))
    if typ == "checkout":
        return st.just({"cart_value": 10.0})
    if typ == "purchase":
        return st.sampled_from((5.0, 30.0, 80.0)).map(
            lambda a: {"order_id": "o", "amount": a, "currency": "EUR"})
    if typ.startswith("email_"):
        return st.just({"campaign_id": "k"})
    if typ == "identify":
        return st.fixed_dictionaries({}, optional={
            k: st.sampled_from(v) for k, v in TRAIT_VALUES.items()}).map(
            lambda tr: {"traits": tr})
    raise ValueError(typ)


@st.composite
def raw_events(draw: st.DrawFn, max_events: int = 24, alias: bool = True,
               forget: bool = False, slot: int = SLOT, slots: int = SLOTS,
               t0: int = T0) -> list[dict[str, Any]]:
    """A small list of canonical events in time order (ties keep generation order)."""
    n = draw(st.integers(1, max_events))
    kinds = list(BEHAVIOUR)
    if alias:
        kinds += ["alias"]
    if forget:
        kinds += ["forget"]
    out = []
    for i in range(n):
        typ = draw(st.sampled_from(kinds))
        ts = t0 + draw(st.integers(0, slots)) * slot + draw(st.sampled_from((0, 0, 0, 1, -1)))
        cid: str | None = draw(st.sampled_from(CUSTOMERS))
        anon: str | None = None
        if typ == "alias":
            anon = draw(st.sampled_from(ANONS))
            props: dict[str, Any] = {}
        elif typ == "forget":
            if draw(st.booleans()):
                cid, anon = None, draw(st.sampled_from(ANONS))
            props = {"reason": "test"}
        else:
            if typ in ANON_OK and draw(st.integers(0, 2)) == 0:
                cid, anon = None, draw(st.sampled_from(ANONS))
            props = draw(props_for(typ))
        out.append({"event_id": f"e{i}", "type": typ, "customer_id": cid, "anonymous_id": anon,
                    "timestamp": ts, "source": "prop", "schema_version": 1,
                    "properties": props})
    out.sort(key=lambda e: e["timestamp"])
    return out


@st.composite
def deliveries(draw: st.DrawFn, events: list[dict[str, Any]], max_delay: int,
               dup_share: int = 4, late_delay: int | None = None) -> list[dict[str, Any]]:
    """``events`` in a delivery order: each delayed by 0..max_delay (ms), some duplicated
    (a copy with its own delay; about 1 in ``dup_share``) and, with ``late_delay``, a few
    delayed by that much more. Ties in delivery time keep time order."""
    keyed: list[tuple[int, int, dict[str, Any]]] = []
    seq = 0
    for ev in events:
        copies = 2 if draw(st.integers(0, dup_share - 1)) == 0 else 1
        for _ in range(copies):
            delay = draw(st.integers(0, max_delay // SLOT)) * SLOT if max_delay else 0
            if late_delay is not None and draw(st.integers(0, 5)) == 0:
                delay += late_delay
            keyed.append((ev["timestamp"] + delay, seq, ev))
            seq += 1
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [dict(k[2]) for k in keyed]


def expected_late(events: Sequence[dict[str, Any]], lateness: int,
                  clock: Sequence[int] | None = None) -> list[int]:
    """Positions refused as late: timestamp < now - lateness, now = watermark (or ``clock``)."""
    late, wm = [], None
    for i, ev in enumerate(events):
        ts = ev["timestamp"]
        wm = ts if wm is None else max(wm, ts)
        now = wm if clock is None else clock[i]
        if ts < now - lateness:
            late.append(i)
    return late


# --- change log ---------------------------------------------------------------------------
class Forgotten(NamedTuple):
    """Marker put in a change log when a profile was forgotten (see mark_forgets)."""

    rid: str


def check_change_log(changes: Iterable[Any]) -> None:
    """Per (customer, segment): versions 1, 2, 3... and actions enter, exit, enter...

    Counters never restart, not even after a ``Forgotten(customer)`` marker (see
    ``mark_forgets``): a forgotten or merged-away profile keeps its counters (a tombstone)."""
    last: dict[tuple[str, str], int] = {}
    for ch in changes:
        if isinstance(ch, Forgotten):
            continue
        key = (ch.customer_id, ch.segment)
        v = last.get(key, 0) + 1
        assert ch.version == v, f"{key}: version {ch.version} after {v - 1} ({ch})"
        assert ch.action == ("enter" if v % 2 else "exit"), f"{key}: {ch}"
        assert isinstance(ch.at, int), ch
        last[key] = v


class _MarkForgets:
    """The engine, with ``forget`` and ``merge`` wrapped (a wrapper, not attributes set on the
    engine: the mypyc-compiled Engine has read-only methods)."""

    def __init__(self, engine: Any, log: list[Any]) -> None:
        self._engine = engine
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def forget(self, state: Any, event: dict[str, Any], now: int) -> Any:
        step = self._engine.forget(state, event, now)
        if not step.late:
            rid = state.cid if state is not None else (
                event.get("customer_id") or event.get("anonymous_id"))
            self._log.append(Forgotten(rid))
        return step

    def merge(self, target: Any, source: Any, event: dict[str, Any], now: int) -> Any:
        known, anon = self._engine.merge(target, source, event, now)
        if not known.late:
            self._log.append(Forgotten(source.cid))
        return known, anon


def mark_forgets(engine: Any, log: list[Any]) -> Any:
    """Wrap ``engine.forget`` and ``engine.merge`` so that a ``Forgotten(routing id)`` marker
    enters ``log`` when a profile ends (erased, or merged away as the anonymous side): its
    version counters end with it (see check_change_log)."""
    return _MarkForgets(engine, log)


def fold_log(changes: Iterable[Any], t: int | None = None,
             until: Callable[[Any], bool] | None = None) -> dict[str, frozenset[str]]:
    """Membership implied by the changes with ``at <= t`` (all when t is None), in order."""
    members: dict[str, set[str]] = defaultdict(set)
    for ch in changes:
        if isinstance(ch, Forgotten):
            continue
        if t is not None and ch.at > t:
            continue
        if until is not None and not until(ch):
            continue
        if ch.action == "enter":
            members[ch.customer_id].add(ch.segment)
        else:
            members[ch.customer_id].discard(ch.segment)
    return {c: frozenset(s) for c, s in members.items() if s}


def result_members(result: Any) -> dict[str, frozenset[str]]:
    """``{customer: segments}`` from a ReplayResult."""
    out: dict[str, set[str]] = defaultdict(set)
    for seg, ids in result.members.items():
        for c in ids:
            out[c].add(seg)
    return {c: frozenset(s) for c, s in out.items() if s}


def boundary_instants(events: Sequence[dict[str, Any]], durations: Iterable[int],
                      extra: Iterable[int] = ()) -> list[int]:
    """Event times (and 1 ms before), each event time + D - 1, + D, + D + 1 for every
    duration D, and the midpoints between successive event times."""
    out = set(extra)
    durs = sorted(set(durations))
    times = sorted({ev["timestamp"] for ev in events})
    out.update((a + b) // 2 for a, b in itertools.pairwise(times))
    for ev in events:
        ts = ev["timestamp"]
        out.add(ts)
        out.add(ts - 1)
        for d in durs:
            out.update((ts + d - 1, ts + d, ts + d + 1))
    return sorted(out)


def durations_of(catalogue: Any) -> list[int]:
    """Every window / duration literal of a catalogue (to aim sampled instants at edges)."""
    from dataclasses import fields, is_dataclass  # noqa: PLC0415

    from processors.lang import ast as A  # noqa: PLC0415

    found: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, A.Duration):
            found.add(node.ms)
        if isinstance(node, A.Aggregate):
            found.add(node.window_ms)
        if isinstance(node, A.Within):
            found.add(node.duration_ms)
        if isinstance(node, A.ThenNo | A.Sequence):
            found.add(node.within_ms)
        if is_dataclass(node):
            for f in fields(node):
                v = getattr(node, f.name)
                for x in v if isinstance(v, tuple) else (v,):
                    if isinstance(x, A.Node):
                        walk(x)

    for seg in catalogue.segments:
        walk(seg.condition)
    return sorted(found)


def live_run(engine: Any, events: Sequence[dict[str, Any]], clock: Sequence[int],
             end: int) -> tuple[dict[str, Any], list[Any], list[int]]:
    """A minimal live-worker loop: ``now`` is a processing clock (``clock[i]`` when event i
    arrives, non-decreasing), timers fire when the clock passes them, then advance to ``end``.
    Anonymous ids and aliases are ignored (callers use customer-only streams).
    Returns (states, changes, late positions)."""
    states: dict[str, Any] = {}
    due: dict[str, int] = {}
    heap: list[tuple[int, str]] = []
    changes: list[Any] = []
    late: list[int] = []

    def take(rid: str, step: Any) -> None:
        changes.extend(step.changes)
        if step.state is None:
            states.pop(rid, None)
            due.pop(rid, None)
            return
        states[rid] = step.state
        if step.next_due is not None and due.get(rid) != step.next_due:
            due[rid] = step.next_due
            heapq.heappush(heap, (step.next_due, rid))

    def fire(upto: int) -> None:
        while heap and heap[0][0] <= upto:
            at, rid = heapq.heappop(heap)
            if due.get(rid) != at or rid not in states:
                continue
            del due[rid]
            take(rid, engine.advance(states[rid], at))

    for i, ev in enumerate(events):
        now = clock[i]
        fire(now)
        rid = ev["customer_id"]
        if ev["type"] == "forget":
            step = engine.forget(states.get(rid), ev, now)
        else:
            step = engine.apply(states.get(rid), ev, now)
        if step.late:
            late.append(i)
            continue
        take(rid, step)
    fire(end)
    return states, changes, late
