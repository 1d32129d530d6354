"""Offline replay: drive the pure engine over a stream of canonical events, deterministically.

"now" during replay is the stream **watermark**: the largest event timestamp seen so far. Before
an event that moves the watermark forward to ``ts``, every customer whose next-due instant is
``< ts`` is advanced to that instant, in due order (ties: first scheduled first), so time-driven
changes come out at their exact instants and in time order. Then the event is applied with
``now = watermark``; a due instant equal to ``ts`` is left for later, so that the event's own
customer evaluates it together with the event (the engine's rule: the purchase at the deadline
of ``cart_add then no purchase within 1h`` is in ``[ta, now]``, no ENTER/EXIT pair is emitted),
and other customers' instants at ``ts`` fire before the watermark moves past it. An event
older than ``watermark - allowed_lateness`` is refused by the engine (``Step.late``), counted
and left out. At the end every pending timer up to ``until``
(default: the final watermark) fires; events after ``until`` are not applied (counted in
``after_until``), so ``until`` gives the memberships "as of" that instant.

Identity, decided here and mirrored by the test oracle (``tests/oracle.py: route``):

- routing id = ``customer_id``, else ``anonymous_id``; an anonymous-only event whose anonymous
  id was already aliased goes to that customer (also when it arrives late or out of order);
- the first ``alias`` of an anonymous id merges its profile into the customer's
  (``engine.merge``: the anonymous profile exits its segments and ends). An alias of an id that
  is already aliased (a re-send, or to another customer) is applied to its customer as an
  ordinary event: first link wins;
- ``forget`` at ``T`` erases what the profile did up to ``T`` (``engine.forget``): what is
  kept is a tombstone (its version counters, so a later ENTER never reuses a version) or,
  when newer events arrived before the forget, the profile rebuilt from them; an older event
  arriving after the forget is dropped. The aliases pointing to it are erased; later events of
  the id continue from there. A merged-away anonymous id keeps a tombstone too.

The module is pure: no I/O, no clock; the same events give the same changes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from processors.types import Change


class Engine(Protocol):
    """What the driver needs of an engine (``processors.engine.Engine``, whose methods return
    ``processors.types.Step``). Tests drive it with a small fake whose states are plain
    dicts, so the steps are typed ``Any`` here: the compiled module then checks no types."""

    def apply(self, state: Any, event: dict[str, Any], now: int) -> Any: ...
    def advance(self, state: Any, now: int) -> Any: ...
    def forget(self, state: Any, event: dict[str, Any], now: int) -> Any: ...
    def merge(self, target: Any, source: Any, alias_event: dict[str, Any],
              now: int) -> tuple[Any, Any]: ...
    def tombstone(self, state: Any) -> Any: ...
    def reevaluate(self, state: Any, now: int, cause: str) -> Any: ...

SWEEP_EVERY = 1 << 16  # events between sweeps of the event records older than the lateness
COMPACT_SLACK = 4096  # superseded timer entries tolerated beyond the live ones before compacting
LATE_IDS_KEPT = 10_000  # event ids of late events kept in the result (the count is exact)


@dataclass
class ReplayResult:
    """What a replay did, and the final state of every profile."""

    events: int = 0  # events read (including late and after-until ones)
    applied: int = 0  # events the engine took (not late); duplicates are dropped inside it
    late: int = 0
    late_ids: list[str] = field(default_factory=list)  # the first LATE_IDS_KEPT of them
    rate_limited: int = 0  # refused: the customer had RATE_CAP events within the lateness
    after_until: int = 0
    merges: int = 0
    forgets: int = 0
    timer_runs: int = 0  # engine.advance calls
    changes: int = 0
    watermark: int | None = None
    until: int | None = None
    # routing id -> CustomerState (a dict, or processors.replay_states.CompactStates)
    states: MutableMapping[str, Any] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # anonymous id -> customer id
    members: dict[str, set[str]] = field(default_factory=dict)  # segment -> customer ids
    due: dict[str, int] = field(default_factory=dict)  # routing id -> next due instant

    def sizes(self) -> dict[str, int]:
        """Segment name -> number of members at the end."""
        return {seg: len(ids) for seg, ids in sorted(self.members.items())}

    def segments_of(self, customer_id: str) -> frozenset[str]:
        """Segments ``customer_id`` is in at the end."""
        return frozenset(s for s, ids in self.members.items() if customer_id in ids)


class _Replayer:
    """The loop's state; one instance per replay call."""

    def __init__(self, engine: Engine, on_change: Callable[[Change], None] | None,
                 resume: ReplayResult | None = None) -> None:
        self.engine = engine
        self.on_change = on_change
        self.result = resume if resume is not None else ReplayResult()
        self.due = self.result.due  # routing id -> its live heap entry's due instant
        # (due, routing id): profiles due at one instant fire in routing-id order, whatever
        # order their due instants were set in (a profile kept encoded, processors.
        # replay_states, recomputes its candidates when decoded: same instants, other pushes)
        self.heap: list[tuple[int, str]] = sorted((a, r) for r, a in self.due.items())

    def take(self, rid: str, step: Any) -> None:  # a Step (see Engine)
        """Record a step's state, changes and next due instant for ``rid``."""
        res = self.result
        if step.state is None:
            res.states.pop(rid, None)
        else:
            res.states[rid] = step.state
        if step.changes:
            res.changes += len(step.changes)
            for ch in step.changes:
                ids = res.members.setdefault(ch.segment, set())
                if ch.action == "enter":
                    ids.add(ch.customer_id)
                else:
                    ids.discard(ch.customer_id)
                if self.on_change is not None:
                    self.on_change(ch)
        nxt = step.next_due if step.state is not None else None
        if nxt is None:
            self.due.pop(rid, None)
        elif self.due.get(rid) != nxt:
            self.due[rid] = nxt
            heapq.heappush(self.heap, (nxt, rid))
            if len(self.heap) > 2 * len(self.due) + COMPACT_SLACK:
                self.compact()

    def sweep(self, horizon: int) -> None:
        """Drop every profile's event records older than ``horizon`` (watermark - allowed
        lateness). The engine drops them itself on a profile's next event; a profile that gets
        none would keep its last session's records to the end (2.1 of 5 KB per final profile
        on the default catalogue). They serve nothing: a copy of such an event is refused as
        late before it is looked up, and a forget that old erases everything."""
        states = self.result.states
        hot = getattr(states, "hot_values", None)  # CompactStates: its encoded ones are swept
        if hot is not None:
            setattr(states, "horizon", horizon)  # noqa: B010 - not every mapping has it
        for st in hot() if hot is not None else states.values():
            if st.seen:
                st.forget_seen_before(horizon)

    def compact(self) -> None:
        """Drop the superseded heap entries (a profile's due instant moved since it was
        pushed). Every entry that ``fire`` would act on is kept, so the firing order is
        unchanged; the heap stays within twice the live profiles
        (1M events: 73 -> 18 MB)."""
        due = self.due
        self.heap = [e for e in self.heap if due.get(e[1]) == e[0]]
        heapq.heapify(self.heap)

    def fire(self, upto: int) -> None:
        """Advance every profile whose due instant is <= upto, in due order."""
        heap, due, states = self.heap, self.due, self.result.states
        while heap and heap[0][0] <= upto:
            at, rid = heapq.heappop(heap)
            if due.get(rid) != at:
                continue  # superseded entry
            del due[rid]
            state = states.get(rid)
            if state is None:
                continue
            step = self.engine.advance(state, at)
            self.result.timer_runs += 1
            if step.next_due is not None and step.next_due <= at:
                raise RuntimeError(
                    f"engine.advance({rid!r}, {at}) returned next_due {step.next_due} <= now")
            self.take(rid, step)

    def event(self, ev: dict[str, Any], now: int) -> None:
        res = self.result
        typ = ev["type"]
        anon: str = ev.get("anonymous_id") or ""
        rid: str = ev.get("customer_id") or res.aliases.get(anon, anon)
        engine, states = self.engine, res.states
        if typ == "alias" and anon and anon not in res.aliases and anon != rid:
            source = states.get(anon)
            if source is None:  # nothing to merge: the link is all there is
                step = engine.apply(states.get(rid), ev, now)
                if self.count(step, ev):
                    res.aliases[anon] = rid
                    self.take(rid, step)
                return
            target_step, source_step = engine.merge(states.get(rid), source, ev, now)
            if self.count(target_step, ev):
                res.aliases[anon] = rid
                res.merges += 1
                # the anonymous id keeps its version counters (a tombstone), as in the worker
                self.take(anon, source_step._replace(state=engine.tombstone(source)))
                self.take(rid, target_step)
            return
        if typ == "forget":
            step = engine.forget(states.get(rid), ev, now)
            if self.count(step, ev):
                res.forgets += 1
                for a in [a for a, c in res.aliases.items() if c == rid]:
                    del res.aliases[a]
                self.take(rid, step)
            return
        step = engine.apply(states.get(rid), ev, now)
        if self.count(step, ev):
            self.take(rid, step)

    def count(self, step: Any, ev: dict[str, Any]) -> bool:
        """Count the event as applied or late; True when applied."""
        res = self.result
        if step.late and step.reason == "rate_limited":
            res.rate_limited += 1
            return False
        if step.late:
            res.late += 1
            if len(res.late_ids) < LATE_IDS_KEPT:
                res.late_ids.append(ev["event_id"])
            return False
        res.applied += 1
        return True


def replay(
    engine: Engine,
    events: Iterable[dict[str, Any]],
    until: int | None = None,
    on_change: Callable[[Change], None] | None = None,
    resume: ReplayResult | None = None,
    *,
    sweep_every: int = SWEEP_EVERY,
) -> ReplayResult:
    """Replay canonical ``events`` (in delivery order) through ``engine``; see the module doc.

    ``on_change`` is called with every Change in emission order. ``resume`` continues a
    previous replay (its profiles, links, timers and watermark; it is updated in place), e.g.
    after ``reevaluate_all`` switched to new definitions. Every ``sweep_every`` events the
    records older than the lateness are dropped from every profile (``_Replayer.sweep``).
    """
    r = _Replayer(engine, on_change, resume)
    res = r.result
    watermark: int | None = res.watermark
    lateness: int | None = getattr(engine, "lateness", None)  # None: a test's fake engine
    for ev in events:
        res.events += 1
        if lateness is not None and watermark is not None and res.events % sweep_every == 0:
            r.sweep(watermark - lateness)
        ts = ev["timestamp"]
        if until is not None and ts > until:
            res.after_until += 1
            continue
        if watermark is None or ts > watermark:
            # instants before ts fire first; one equal to ts is evaluated with the event
            # (engine.apply), so a timer and an event at one instant give no false pair
            r.fire(ts - 1)
            watermark = ts
        r.event(ev, watermark)
    end = until if until is not None else watermark
    if end is not None:
        r.fire(end)
    res.watermark, res.until = watermark, end
    return res


def reevaluate_all(
    engine: Engine,
    result: ReplayResult,
    now: int,
    cause: str,
    on_change: Callable[[Change], None] | None = None,
) -> ReplayResult:
    """Re-bind every profile of ``result`` to ``engine``'s definitions and evaluate them at
    ``now`` (``engine.reevaluate``), as the worker does when definitions change; profiles are
    visited in routing-id order. Timers due before ``now`` fire first, with the old engine's
    state layout rebound on the way. ``result`` is updated in place and returned."""
    r = _Replayer(engine, on_change, result)
    r.fire(now)
    for rid in sorted(result.states):
        r.take(rid, engine.reevaluate(result.states[rid], now, cause))
    if result.watermark is None or now > result.watermark:
        result.watermark = now
    return result
