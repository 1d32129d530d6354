"""The segmentation engine: pure functions from (state, input, now) to (state, changes, due).

``Engine(compiled).apply(state, event, now)`` de-duplicates the event, refuses it when late,
defers it when stamped ahead of ``now``, first processes every due instant before the event's
time (time-driven changes at their exact instants, in order), then applies it and evaluates the
segments its type can change at ``t = max(event time, state clock)``. ``advance`` processes the
due instants up to ``now``. Everything is deterministic: the same state and inputs give the same
changes, so a re-processed bundle re-emits identical (customer, segment, version) changes.

See docs/time-semantics.md for the rules and their reasons.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from processors import sequences
from processors.hashing import DEFAULT_ID_KEY, id_hash
from processors.lang.compile import (
    CART,
    PURCHASES,
    CompiledCatalogue,
    Input,
    SeqInput,
    SeriesInput,
    TraitInput,
)
from processors.lang.compile.model import Match
from processors.lang.values import HOUR_MS, is_number
from processors.merge import merge_states
from processors.types import Change, Step
from state.model import (
    NEVER,
    OP_ADD,
    OP_CLEAR,
    OP_REMOVE,
    PENDING_CAP,
    RATE_CAP,
    CartOp,
    CartState,
    CustomerState,
    Record,
    SeqState,
    SeriesState,
    record_props,
)

Event = dict[str, Any]
# Typed (fixed-length) tuples: the compiled build unpacks them without generic iteration.
# One series an event type feeds: (index, filter, window, summed props, hours, segments to
# add when the filter matched).
SeriesEntry = tuple[int, Match | None, int, tuple[str, ...], bool, tuple[int, ...]]
# What an event type touches: (series entries, base affected segments as a tuple and a set,
# cart, purchases, per trait the segments to add).
Handler = tuple[tuple[SeriesEntry, ...], tuple[int, ...], frozenset[int], bool, bool,
                dict[str, tuple[int, ...]]]
# One sequence an event type may feed: (sequence, steps, T, on property, (bit, filter) of the
# steps naming the type).
SeqEntry = tuple[int, int, int, str | None, tuple[tuple[int, Match | None], ...]]
_NONE: frozenset[int] = frozenset()
TOO_LATE, RATE_LIMITED = "too_late", "rate_limited"


def event_key(event_id: str, key: bytes = DEFAULT_ID_KEY) -> int:
    """Stable 64-bit keyed hash of an event id (de-duplication; process-independent).

    >>> event_key("e1") == event_key("e1") != event_key("e2")
    True
    """
    return id_hash(event_id, key)


def routing_id(event: Event) -> str:
    rid = event.get("customer_id") or event.get("anonymous_id")
    if not isinstance(rid, str):
        raise ValueError("event has neither customer_id nor anonymous_id")
    return rid


class Engine:
    """Applies events and time to customer states for one compiled catalogue."""

    def __init__(self, catalogue: CompiledCatalogue, id_key: bytes = DEFAULT_ID_KEY) -> None:
        """``id_key``: the deployment's key of the event-id hash (processors.hashing)."""
        self.catalogue = catalogue
        self.id_key = id_key
        self.lateness = catalogue.allowed_lateness_ms
        self.definitions_cause = f"definitions:{catalogue.version}"
        segs = catalogue.segments
        self._n = len(segs)
        self._names = catalogue.names
        self._fns = [s.fn for s in segs]
        self._nexts = [s.next_change for s in segs]
        self._timed = [s.time_dependent for s in segs]
        self._time_segs = catalogue.time_segments
        self._all = tuple(range(self._n))
        specs = catalogue.series
        self._win = [s.window_ms for s in specs]
        self._nprops = [tuple(s.props) for s in specs]
        self._hours = [s.hours for s in specs]
        self._keys = [s.key for s in specs]
        self._legacy_keys = [s.legacy_key for s in specs]  # states encoded before series_hash
        # shared read-only empty series (one set per compiled catalogue, whatever the number
        # of engines): a state gets its own object on the series' first event
        self._empty_series = catalogue.empty_series
        # per event type: (series entries, affected segments as a tuple and a set, flags)
        # Per event type: the series it feeds, and the segments to re-evaluate: ``base``
        # (inputs every event of the type touches: unfiltered series, cart, purchases), plus
        # per filtered series / per trait the segments to add when that input is touched.
        def users(key: Input) -> set[int]:
            return {s.index for s in segs if key in s.inputs}

        # per event type: the sequences it may feed, (index, steps, T, on name, [(bit,
        # filter) of the steps naming the type]); a sequence's users are re-evaluated when an
        # event raises its latest completion (their only input)
        seqs = catalogue.sequences
        self._seq_keys = tuple(q.key for q in seqs)
        self._empty_seqs = catalogue.empty_seqs  # shared like _empty_series, never mutated
        seq_lists: dict[str, list[SeqEntry]] = {}
        for q in seqs:
            for typ in sorted(q.types):
                steps = tuple((1 << s, m) for s, (types, m) in enumerate(q.steps)
                              if typ in types)
                seq_lists.setdefault(typ, []).append(
                    (q.index, len(q.steps), q.within_ms, q.on, steps))
        self._seq_handlers: dict[str, tuple[SeqEntry, ...]] = {
            t: tuple(v) for t, v in seq_lists.items()}
        self._seq_users = tuple(tuple(sorted(users(SeqInput(q.index)))) for q in seqs)
        self._handlers: dict[str, Handler] = {}
        for typ, h in catalogue.handlers.items():
            base: set[int] = set()
            for i, m in h.series:
                if m is None:
                    base |= users(SeriesInput(i))
            if h.cart:
                base |= users(CART)
            if h.purchases:
                base |= users(PURCHASES)
            entries = tuple(
                (i, m, self._win[i], self._nprops[i], self._hours[i],
                 tuple(sorted(users(SeriesInput(i)) - base)) if m is not None else ())
                for i, m in h.series)
            trait_segs = {n: tuple(sorted(users(TraitInput(n)) - base))
                          for n in catalogue.traits} if h.traits else {}
            ordered = tuple(sorted(base))
            self._handlers[typ] = (entries, ordered, frozenset(ordered), h.cart, h.purchases,
                                   trait_segs)
        self._traits = tuple(sorted(catalogue.traits))
        # per event type: the properties its record keeps (what re-adding the event needs:
        # filters, summed values, cart and purchase fields, identify's traits)
        self._record_props: dict[str, tuple[str, ...]] = {}
        for typ, h in catalogue.handlers.items():
            need: set[str] = set()
            for i, _m in h.series:
                need |= specs[i].filter_props | set(specs[i].props)
            if h.cart:
                need |= {"product_id", "quantity", "price"}
            if h.purchases:
                need.add("amount")
            if h.traits:
                need.add("traits")
            for q in seqs:
                if typ in q.types:
                    need |= q.filter_props
            self._record_props[typ] = tuple(sorted(need))
        # A fresh state (first event) needs evaluating only the segments the event's type
        # affects, plus those whose value on an empty profile is true or varies with time.
        empty = self.new_state("", 0)
        self._epoch = catalogue.epoch
        self._epoch.value += 1
        eager = {s.index for s in segs
                 if not s.constant_when_empty or s.fn(empty, 0) is True}
        self._fresh = {typ: tuple(sorted(eager.union(h.segments)))
                       for typ, h in catalogue.handlers.items()}
        self._fresh_default = tuple(sorted(eager))

    # --- public API -------------------------------------------------------------------------
    def new_state(self, cid: str, clock: int) -> CustomerState:
        """An empty state bound to this catalogue (no segment evaluated yet)."""
        st = CustomerState(cid, clock)
        st.layout = self.catalogue
        st.series = list(self._empty_series)
        if self._seq_keys:
            st.seqs = list(self._empty_seqs)
        st.versions = [0] * self._n
        st.due = [NEVER] * self._n
        st.due_min = NEVER
        st.fresh = True
        return st

    def apply(self, state: CustomerState | None, event: Event, now: int) -> Step:
        """Apply one canonical event with processing clock ``now`` (see the module doc)."""
        ts: int = event["timestamp"]
        if ts < now - self.lateness:
            return Step(state, [], self._next_due(state), True, TOO_LATE)
        changes: list[Change] = []
        if state is None:
            state = self.new_state(routing_id(event), min(ts, now))
        elif state.layout is not self.catalogue:
            self._bind(state, changes)
        key = id_hash(event["event_id"], self.id_key)
        seen = state.seen
        if key in seen or ts <= state.erased:  # a duplicate, or erased by a later forget
            return Step(state, changes, self._next_due(state), False)
        horizon = min(state.clock, now) - self.lateness
        # records older than now - lateness serve nothing: a copy of such an event is refused
        # as late, and a forget that old erases everything
        keep_from = now - self.lateness
        if seen and (seen[next(iter(seen))][0] < keep_from or len(seen) >= RATE_CAP):
            state.forget_seen_before(keep_from)
            if len(seen) >= RATE_CAP:
                return Step(state, changes, self._next_due(state), True, RATE_LIMITED)
        typ = event["type"]
        need = self._record_props.get(typ)
        props = event.get("properties")
        flat: list[Any] = []  # the record's properties as (name, value, ...): compact
        if need and props:
            for k in need:
                if k in props:
                    flat.append(k)
                    flat.append(props[k])
        rec = (ts, typ, tuple(flat) if flat else None)
        if ts > now:  # ahead of the clock: enters at its own time
            pending = state.pending
            if len(pending) >= PENDING_CAP:
                return Step(state, changes, self._next_due(state), True, TOO_LATE)
            seen[key] = rec
            pending.insert(bisect_right([p[0] for p in pending], ts), (ts, event))
            return Step(state, changes, self._next_due(state), False)
        seen[key] = rec
        t = ts if ts > state.clock else state.clock
        if state.due_min < t or (state.pending and state.pending[0][0] < t):
            self._advance(state, t, False, horizon, changes)
        self._ingest(state, event, ts, t, horizon, changes)
        return Step(state, changes, self._next_due(state), False)

    def advance(self, state: CustomerState, now: int) -> Step:
        """Process every due instant <= ``now`` (time-driven changes, deferred events)."""
        changes: list[Change] = []
        if state.layout is not self.catalogue:
            self._bind(state, changes)
        self._advance(state, now, True, min(state.clock, now) - self.lateness, changes)
        return Step(state, changes, self._next_due(state), False)

    def forget(self, state: CustomerState | None, event: Event, now: int) -> Step:
        """Erase what the customer did up to the forget's time ``T``, whatever the arrival
        order. ``Step.state`` is what to store: a tombstone (version counters only, all at
        EXIT, and ``erased = T`` so that an older event arriving later is dropped too), or,
        when events newer than ``T`` arrived before the forget, the profile rebuilt from
        them (their records, ``state.seen``), with the changes relative to the memberships
        before. A forget older than the records kept (``now - allowed lateness``) erases
        everything the profile holds."""
        ts: int = event["timestamp"]
        if state is None:
            stone = self.new_state(routing_id(event), min(ts, now))
            stone.erased = ts
            return Step(stone, [], None, False)
        changes: list[Change] = []
        if state.layout is not self.catalogue:
            self._bind(state, changes)
        t = self._instant(state, event, now)
        horizon = min(state.clock, now) - self.lateness
        self._advance(state, t, True, horizon, changes)
        t = max(t, state.clock)
        cause = f"forget:{event['event_id']}"
        newer = [r for r in state.seen.items() if r[1][0] > ts] if ts >= now - self.lateness else []
        if newer:
            return self._rebuild(state, ts, t, newer, horizon, cause, changes)
        for i, v in enumerate(state.versions):
            if v & 1:
                changes.append(Change(state.cid, self._names[i], "exit", t, v + 1, cause))
        stone = self.tombstone(state)
        stone.clock = t
        stone.erased = max(ts, state.erased)
        return Step(stone, changes, None, False)

    def _rebuild(  # noqa: PLR0917
        self, state: CustomerState, erased: int, t: int, newer: list[tuple[int, Record]],
        horizon: int, cause: str, changes: list[Change],
    ) -> Step:
        """The profile after a forget at ``erased`` that arrived after newer events: a fresh
        state holding only those (in time order, ties by arrival), evaluated at ``t`` against
        the memberships before (no EXIT/ENTER pair for a segment the customer stays in)."""
        st = self.new_state(state.cid, t)
        st.fresh = False
        st.versions = list(state.versions)
        st.orphans = dict(state.orphans)
        st.erased = max(erased, state.erased)
        pending_keys = {id_hash(ev["event_id"], self.id_key) for _, ev in state.pending}
        st.pending = [p for p in state.pending if p[0] > erased]
        for key, rec in sorted(newer, key=lambda kr: kr[1][0]):  # stable: arrival on ties
            st.seen[key] = rec
            if key not in pending_keys and rec[1] in self._handlers:
                self._add(st, {"type": rec[1], "properties": record_props(rec)}, rec[0], t,
                          horizon)
        self._evaluate(st, self._all, t, cause, None, changes)
        return Step(st, changes, self._next_due(st), False)

    def tombstone(self, state: CustomerState) -> CustomerState:
        """What may be kept of a profile that ended (forget, or an anonymous profile merged
        away): only its segment version counters, all at EXIT (even), no events or traits.

        Storing this instead of deleting lets a later profile under the same id continue the
        counters, so (customer, segment, version) is never reused. Apply events to it like
        to any state; it is evaluated from scratch on its first event.
        """
        st = self.new_state(state.cid, state.clock)
        counts = {n: v + (v & 1) for n, v in state.all_versions().items()}
        st.versions = [counts.pop(name, 0) for name in self._names]
        st.orphans = counts
        st.erased = state.erased
        return st

    def reevaluate(self, state: CustomerState, now: int, cause: str) -> Step:
        """Bind ``state`` to this catalogue and evaluate every segment at max(clock, now).

        A state that has taken no event (a tombstone: a forgotten or merged-away profile) is
        only rebound: it has no memberships to gain, even in a segment true of an empty
        profile (``not segment.lapsed``), until its next event."""
        changes: list[Change] = []
        if state.layout is not self.catalogue:
            self._remap(state)
        self._exit_orphans(state, state.clock, cause, changes)
        if state.fresh:
            return Step(state, changes, None, False)
        self._advance(state, now, True, min(state.clock, now) - self.lateness, changes)
        t = max(state.clock, now)
        state.clock = t
        self._evaluate(state, self._all, t, cause, None, changes)
        return Step(state, changes, self._next_due(state), False)

    def merge(self, target: CustomerState | None, source: CustomerState, alias_event: Event,
              now: int) -> tuple[Step, Step]:
        """Alias: fold the anonymous profile ``source`` into the known customer ``target``.

        Returns (step of the known customer, step of the anonymous profile, whose state is
        None): ``release`` then ``absorb``, which the streaming worker runs in two places when
        the two profiles live in different partitions (a hand-off record carries the released
        state), with the same result.
        """
        gone = self.release(source, alias_event, now)
        if gone.late:
            return Step(target, [], self._next_due(target), True), gone
        released = gone.state
        assert released is not None
        return self.absorb(target, released, alias_event, now), gone._replace(state=None)

    def release(self, source: CustomerState, alias_event: Event, now: int) -> Step:
        """The anonymous side of an alias: ``source`` processes its due instants before
        ``t = max(source clock, min(alias time, now))`` and EXITs every segment it is in at
        ``t`` (cause ``alias:<event_id>``). ``Step.state`` is the released profile, to hand to
        :meth:`absorb` (the anonymous profile itself ends: store nothing under its id). A late
        alias (older than now - allowed lateness) is refused like any late event: ``Step.late``
        and ``source`` untouched.
        """
        if alias_event["timestamp"] < now - self.lateness:
            return Step(source, [], self._next_due(source), True)
        changes: list[Change] = []
        if source.layout is not self.catalogue:
            self._bind(source, changes)
        t = self._instant(source, alias_event, now)
        self._advance(source, t, False, min(t, now) - self.lateness, changes)
        cause = f"alias:{alias_event['event_id']}"
        for i, v in enumerate(source.versions):
            if v & 1:
                source.versions[i] = v + 1
                changes.append(Change(source.cid, self._names[i], "exit", t, v + 1, cause))
        source.clock = max(source.clock, t)
        return Step(source, changes, None, False)

    def absorb(self, target: CustomerState | None, released: CustomerState, alias_event: Event,
               now: int) -> Step:
        """The known side of an alias: fold the ``released`` profile (from :meth:`release`)
        into ``target`` at ``t = max(released clock, target clock)``; changes are relative to
        the known customer's own memberships (no duplicate ENTER), cause ``alias:<event_id>``.
        """
        changes: list[Change] = []
        if released.layout is not self.catalogue:
            self._bind(released, [])
        if target is not None and target.layout is not self.catalogue:
            self._bind(target, changes)
        t = released.clock
        if target is not None:
            t = max(t, target.clock)
        horizon = min(t, now) - self.lateness
        cid = alias_event.get("customer_id")
        if not isinstance(cid, str):
            raise ValueError("alias event needs a customer_id")
        if target is None:
            target = self.new_state(cid, t)
            target.fresh = False
        else:
            self._advance(target, t, False, horizon, changes)
        self._drop_shared(target, released)
        merge_states(target, released, self.catalogue, horizon)
        target.seen[id_hash(alias_event["event_id"], self.id_key)] = (
            alias_event["timestamp"], "alias", None)
        target.clock = t
        self._evaluate(target, self._all, t, f"alias:{alias_event['event_id']}", None, changes)
        return Step(target, changes, self._next_due(target), False)

    def has_seen(self, state: CustomerState, event_id: str) -> bool:
        """Whether ``state`` already took the event ``event_id`` (a re-delivered hand-off)."""
        return id_hash(event_id, self.id_key) in state.seen

    # --- internals ------------------------------------------------------------------------
    @staticmethod
    def _instant(state: CustomerState, event: Event, now: int) -> int:
        ts: int = event["timestamp"]
        return max(state.clock, min(ts, now))

    @staticmethod
    def _next_due(state: CustomerState | None) -> int | None:
        if state is None:
            return None
        d = state.due_min
        if state.pending and state.pending[0][0] < d:
            d = state.pending[0][0]
        return None if d >= NEVER else d

    def _advance(self, state: CustomerState, target: int, inclusive: bool, horizon: int,
                 changes: list[Change]) -> None:
        """Process due instants and deferred events before (or up to) ``target``, in order."""
        pending = state.pending
        while True:
            d = state.due_min
            p = pending[0][0] if pending else NEVER
            nxt = d if d < p else p
            if nxt > target or (nxt == target and not inclusive) or nxt >= NEVER:
                return
            if p <= d:
                ts, ev = pending.pop(0)
                self._ingest(state, ev, ts, max(ts, state.clock), horizon, changes)
                continue
            due = state.due
            idxs = [i for i in self._time_segs if due[i] <= d]
            n = len(changes)
            self._evaluate(state, idxs, d, "timer", None, changes)
            if len(changes) > n:
                # only a real change moves the clock: an early candidate that changed nothing
                # leaves it, so a decoded state (which recomputes its candidates) agrees
                state.clock = d

    def _ingest(  # noqa: PLR0917 - hot path: positional on purpose
        self, state: CustomerState, event: Event, ts: int, t: int, horizon: int,
        changes: list[Change],
    ) -> None:
        """Add an accepted event to the state and evaluate what it affects at instant ``t``."""
        affected, affected_set = self._add(state, event, ts, t, horizon)
        cause = event["event_id"]
        if state.fresh:
            state.fresh = False
            idxs = self._fresh.get(event["type"], self._fresh_default)
            self._evaluate(state, idxs, t, cause, None, changes)
        elif state.due_min <= t:
            due = state.due
            due_now = sorted(set(affected).union(i for i in self._time_segs if due[i] <= t))
            self._evaluate(state, due_now, t, cause, affected_set, changes)
        elif affected:
            self._evaluate(state, affected, t, cause, None, changes)

    def _add(
        self, state: CustomerState, event: Event, ts: int, t: int, horizon: int,
    ) -> tuple[tuple[int, ...], frozenset[int]]:
        """Add an event's data to the state (clock ``t``); the segments it may change."""
        typ = event["type"]
        handler = self._handlers.get(typ)
        state.clock = t
        if handler is None:
            return (), _NONE
        series_entries, affected, affected_set, cart, purchases, trait_segs = handler
        props = event.get("properties") or {}
        series = state.series
        empties = self._empty_series
        extra: list[int] | None = None  # segments of touched filtered series / traits
        for i, match, win, pnames, hours, when_matched in series_entries:
            if match is not None:
                if not match(props):
                    continue
                if when_matched:
                    extra = [*extra, *when_matched] if extra else list(when_matched)
            s = series[i]
            if s is empties[i]:
                s = series[i] = SeriesState(s.key, s.props, hours)
            if s.last is None or ts > s.last:
                s.last = ts
            if s.first is None or ts < s.first:
                s.first = ts
            if win and ts > t - win:
                tl = s.ts
                if not tl or ts >= tl[-1]:
                    tl.append(ts)
                    for j, name in enumerate(pnames):
                        v = props.get(name)
                        s.vals[j].append(v if is_number(v) else None)
                else:
                    k = bisect_right(tl, ts)
                    tl.insert(k, ts)
                    for j, name in enumerate(pnames):
                        v = props.get(name)
                        s.vals[j].insert(k, v if is_number(v) else None)
                if tl[0] <= t - win:
                    s.drop_before(t - win)
                if len(tl) > 4096:
                    s.cap()
            if hours:
                assert s.hours is not None
                s.hours[(ts // HOUR_MS) % 24] += 1
        if cart:
            self._cart(state, typ, props, ts, horizon)
        if purchases:
            state.p_count += 1
            amount = props.get("amount")
            if amount is not None and is_number(amount):
                state.add_amount(amount)
            if state.p_first is None or ts < state.p_first:
                state.p_first = ts
            if state.p_last is None or ts > state.p_last:
                state.p_last = ts
        seq_entries = self._seq_handlers.get(typ)
        if seq_entries is not None:
            raised = self._add_seqs(state, seq_entries, props, ts, horizon)
            if raised is not None:
                extra = [*extra, *raised] if extra else list(raised)
        if trait_segs:
            given = props.get("traits") or {}
            for name in self._traits:
                if name in given:
                    cur = state.traits.get(name)
                    if cur is None or ts >= cur[1]:
                        state.traits[name] = [given[name], ts]
                        if trait_segs[name]:
                            extra = [*extra, *trait_segs[name]] if extra \
                                else list(trait_segs[name])
        if extra:
            affected = tuple(sorted(set(affected).union(extra)))
            affected_set = frozenset(affected)
        return affected, affected_set

    def _seq_entries(self, typ: str, props: dict[str, Any]
                     ) -> list[tuple[int, int, int, bool, int, Any]]:
        """(sequence, steps, T, on, step mask, on value) of the sequences an event feeds."""
        out: list[tuple[int, int, int, bool, int, Any]] = []
        for k, n, within, on, steps in self._seq_handlers.get(typ, ()):
            mask = 0
            for bit, match in steps:
                if match is None or match(props):
                    mask |= bit
            val = None
            if on is not None:
                val = props.get(on)
                if val is None:
                    mask = 0  # null never equals: this event completes no chain
            if mask:
                out.append((k, n, within, on is not None, mask, val))
        return out

    def _add_seqs(self, state: CustomerState, entries: tuple[SeqEntry, ...],
                  props: dict[str, Any], ts: int, horizon: int) -> tuple[int, ...] | None:
        """Feed the event to its sequences (``entries``: its type's ``_seq_handlers``); the
        segments of those whose completion rose (None: none rose)."""
        raised: tuple[int, ...] | None = None
        for k, n, within, on, steps in entries:  # as _seq_entries
            mask = 0
            for bit, match in steps:
                if match is None or match(props):
                    mask |= bit
            val = None
            if on is not None:
                val = props.get(on)
                if val is None:
                    continue  # null never equals: this event completes no chain
            if not mask:
                continue
            q = state.seqs[k]
            if q is self._empty_seqs[k]:
                q = state.seqs[k] = SeqState(q.key)
            before = q.done
            sequences.add(q, ts, mask, val, n, within, on is not None, horizon)
            if q.done != before:
                raised = self._seq_users[k] if raised is None else raised + self._seq_users[k]
        return raised

    def _drop_shared(self, target: CustomerState, released: CustomerState) -> None:
        """Take out of ``released`` the events ``target`` took too (an event re-sent after
        login with both ids reaches both profiles): merged, it must count once. The target's
        copy is kept (its history comes first); last/first instants need no change since the
        target holds the same instant."""
        tseen, rseen = target.seen, released.seen
        shared = [k for k in rseen if k in tseen]
        if not shared:
            return
        pending = {id_hash(ev["event_id"], self.id_key): i
                   for i, (_, ev) in enumerate(released.pending)}
        drop_pending: set[int] = set()
        for k in shared:
            rec = rseen.pop(k)
            ts, typ = rec[0], rec[1]
            if k in pending:  # not applied yet: just drop the copy
                drop_pending.add(pending[k])
                continue
            handler = self._handlers.get(typ)
            if handler is not None:
                self._subtract(released, handler, ts, typ, record_props(rec))
        if drop_pending:
            released.pending = [p for i, p in enumerate(released.pending)
                                if i not in drop_pending]

    def _subtract(
        self, st: CustomerState, handler: Handler, ts: int, typ: str, props: dict[str, Any],
    ) -> None:
        """Undo what ``_add`` added for one event (its series rows, hour, cart op, purchase)."""
        series_entries, _, _, cart, purchases, _ = handler
        for i, match, win, _pn, hours, _w in series_entries:
            if match is not None and not match(props):
                continue
            s = st.series[i]
            if s is self._empty_series[i]:
                continue
            if win:
                k = bisect_left(s.ts, ts)
                if k < len(s.ts) and s.ts[k] == ts:
                    del s.ts[k]
                    for col in s.vals:
                        del col[k]
            if hours and s.hours is not None:
                s.hours[(ts // HOUR_MS) % 24] -= 1
        if cart and st.cart is not None:
            kind = OP_ADD if typ == "cart_add" else OP_REMOVE if typ == "cart_remove" else OP_CLEAR
            pid = "" if kind == OP_CLEAR else str(props.get("product_id", ""))
            log = st.cart.log
            for j, op in enumerate(log):
                if op[0] == ts and op[1] == kind and op[2] == pid:
                    del log[j]
                    st.cart.rebuild()
                    break
        if purchases:
            st.p_count -= 1
            amount = props.get("amount")
            if amount is not None and is_number(amount):
                st.add_amount(-amount)
        if self._seq_handlers:
            for k, _n, _t, _on, mask, val in self._seq_entries(typ, props):
                sequences.subtract(st.seqs[k], ts, mask, val)

    @staticmethod
    def _cart(state: CustomerState, typ: str, props: dict[str, Any], ts: int,
              horizon: int) -> None:
        pid = props.get("product_id", "")
        op: CartOp
        if typ == "cart_add":
            qty = props.get("quantity")
            price = props.get("price")
            op = (ts, OP_ADD, str(pid), qty if type(qty) is int else 1,
                  float(price) if price is not None and is_number(price) else 0.0)
        elif typ == "cart_remove":
            qty = props.get("quantity")
            op = (ts, OP_REMOVE, str(pid), qty if type(qty) is int else None, 0.0)
        else:
            op = (ts, OP_CLEAR, "", None, 0.0)
        if state.cart is None:
            state.cart = CartState()
        state.cart.apply(op, horizon)

    def _evaluate(  # noqa: PLR0917 - hot path: positional on purpose
        self, state: CustomerState, idxs: Any, t: int, cause: str,
        cause_set: frozenset[int] | None, changes: list[Change],
    ) -> None:
        """Evaluate segments ``idxs`` at ``t``; with ``cause_set``, indices outside it are
        time-driven (cause "timer")."""
        fns, nexts, timed, names = self._fns, self._nexts, self._timed, self._names
        versions, due = state.versions, state.due
        self._epoch.value += 1
        dmin = state.due_min
        stale = False  # the old minimum was raised: recompute it
        for i in idxs:
            v = fns[i](state, t)
            ver = versions[i]
            if v != (ver & 1):
                ver += 1
                versions[i] = ver
                c = cause if cause_set is None or i in cause_set else "timer"
                changes.append(Change(state.cid, names[i], "enter" if v else "exit", t, ver, c))
            if timed[i]:
                d = nexts[i](state, t)
                old = due[i]
                if d != old:
                    due[i] = d
                    if d < dmin:
                        dmin = d
                    elif old == dmin:
                        stale = True
        state.due_min = (min(due) if due else NEVER) if stale else dmin

    def _bind(self, state: CustomerState, changes: list[Change]) -> None:
        """Bind a decoded state (or one of another catalogue) to this catalogue; when the
        definitions differ, re-evaluate every segment (cause ``definitions:<version>``)."""
        old = state.layout
        same = (old == self.catalogue.fingerprint if isinstance(old, int)
                else old is not None and old.fingerprint == self.catalogue.fingerprint)
        self._remap(state)
        if same:
            self._recompute_due(state)
            return
        self._exit_orphans(state, state.clock, self.definitions_cause, changes)
        self._evaluate(state, self._all, state.clock, self.definitions_cause, None, changes)

    def _recompute_due(self, state: CustomerState) -> None:
        due = state.due
        self._epoch.value += 1
        for i in self._time_segs:
            due[i] = self._nexts[i](state, state.clock)
        state.due_min = min(due) if due else NEVER

    def _exit_orphans(self, state: CustomerState, t: int, cause: str,
                      changes: list[Change]) -> None:
        for name in sorted(state.orphans):
            v = state.orphans[name]
            if v & 1:
                state.orphans[name] = v + 1
                changes.append(Change(state.cid, name, "exit", t, v + 1, cause))

    def _remap(self, state: CustomerState) -> None:
        """Re-index series (by key) and versions (by name) to this catalogue."""
        versions = state.all_versions()
        # empty series may be another engine's shared sentinels: never take their lists
        by_key = {s.key: s for s in state.series if s.last is not None}
        new_series: list[SeriesState] = []
        for i, key in enumerate(self._keys):
            old = by_key.get(key) or by_key.get(self._legacy_keys[i])
            if old is None:
                new_series.append(self._empty_series[i])
                continue
            props, hours = self._nprops[i], self._hours[i]
            s = SeriesState(key, props, hours)
            s.last, s.first, s.ts = old.last, old.first, old.ts
            s.vals = [old.vals[old.props.index(p)] if p in old.props else [None] * len(old.ts)
                      for p in props]
            if hours and old.hours is not None:
                s.hours = old.hours
            new_series.append(s)
        state.series = new_series
        if self._seq_keys or state.seqs:
            # an empty one may be another catalogue's shared sentinel: never keep it
            by_seq = {q.key: q for q in state.seqs if q.ts or q.done is not None}
            state.seqs = [by_seq.get(k) or self._empty_seqs[i]
                          for i, k in enumerate(self._seq_keys)]
        state.versions = [versions.pop(name, 0) for name in self._names]
        state.orphans = {k: v for k, v in versions.items() if v}
        state.due = [NEVER] * self._n
        state.due_min = NEVER
        state.layout = self.catalogue
