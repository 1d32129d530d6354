"""Segmentation of one bundle-topic partition: engine + state store, without Faust.

:class:`PartitionSegmenter` owns one partition for one worker (between an assignment and a
revocation). ``process(records, now)`` runs the pure engine over bundle records and returns an
:class:`Outcome`; ``tick(now)`` does the same for due instants (time-driven changes). The caller
(the Faust agent) produces ``outcome.changes`` and ``outcome.late`` and awaits their
acknowledgements *before* ``commit(outcome)`` writes the states, the due index, the membership
and the applied offset in one atomic store commit: a crash in between re-emits identical
changes (same versions: deterministic engine), never loses one.

Exactly-once state, at-least-once changes:

- a record at an offset <= the stored applied offset is skipped (re-delivery after a crash or a
  rebalance: Kafka's committed offset may lag Redis);
- ``next_offset`` tells the agent where to seek when Kafka's committed offset ran *ahead* of
  the stored one (Redis lost writes): the first record seen beyond it means a gap;
- the store's epoch fences a previous owner of the partition (a zombie after a rebalance).

Identity. Ingest routes an ``alias`` to the partition of its *anonymous* id, where the
anonymous profile lives (``schemas.validation.partition_key``). There the segmenter records the
link (anonymous id -> customer id, committed with the partition) and, when the customer lives
in another partition, runs ``engine.release`` (the anonymous profile EXITs its segments and
ends) and sends a hand-off record with the released state to the customer's partition, whose
segmenter runs ``engine.absorb`` (``release`` + ``absorb`` = the replay's ``merge``). Later
anonymous-only events of a linked id are forwarded to the customer's partition with the
customer id set. Forwards and hand-offs are produced before the commit, like the changes: a
crash re-sends them, and the receiver drops the repeats (event ids; a hand-off whose alias
event the customer's state has already seen). As in replay, the first link wins; an alias of
an id already linked is an ordinary event of its customer. ``forget`` erases the profile
(events, traits, cart, memberships: EXIT everywhere) down to its version counters
(``engine.tombstone``), so a returning customer's changes never reuse a version a consumer has
seen; the same holds for an anonymous id merged away. A forget also records its time (the
*erasure*, kept for the allowed lateness): an event or hand-off of that customer older than the
forget that arrives after it (a hand-off or forwarded event racing the forget across
partitions) is erased too, as in the time-ordered semantics. Links stored in other partitions
stay (see docs/time-semantics.md).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.engine import Engine
from processors.types import Change, Step
from schemas.bundle import (
    BundleError,
    EventsRecord,
    HandoffRecord,
    decode_record,
    encode_bundle,
    encode_handoff,
)
from schemas.partitioner import partition_for
from state.codec import decode_state, encode_state
from state.model import CustomerState
from state.store import Commit, CommitResult, MemberOp, StateStore
from stream.logs import event_context

log = logging.getLogger(__name__)

Event = dict[str, Any]


@dataclass(slots=True)
class Outcome:
    """What one ``process``/``tick`` produced, to publish and then commit."""

    changes: list[Change] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)  # refused as too late: dead-letter them
    rate_limited: list[Event] = field(default_factory=list)  # refused: over RATE_CAP
    # items the engine failed on (a bug, or an event it cannot handle): (the item as bundle
    # bytes, reason); dead-lettered as internal_error, the rest of the batch goes on
    failed: list[tuple[bytes, str]] = field(default_factory=list)
    bad_records: list[tuple[int, str]] = field(default_factory=list)  # (offset, reason)
    events: int = 0
    duplicates_skipped: int = 0  # records at or below the applied offset
    handoffs_sent: int = 0
    handoffs_received: int = 0
    forwarded: int = 0  # events sent on to the customer's partition
    erased: int = 0  # events or hand-offs older than their customer's forget: dropped
    forwards: dict[int, list[bytes]] = field(default_factory=dict)  # partition -> records
    offset: int | None = None  # highest offset processed (None for a timer pass)
    now: int | None = None  # the engine's "now" (epoch ms) of this batch or timer pass
    commit: Commit | None = None
    # accumulated while processing, turned into ``commit`` and ``forwards`` at the end
    dirty: dict[str, CustomerState | None] = field(default_factory=dict)
    due: dict[str, int | None] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    erasures: dict[str, int] = field(default_factory=dict)
    pending: dict[int, list[Any]] = field(default_factory=dict)  # partition -> events | bytes


class PartitionSegmenter:
    """One owned partition: its state cache and its engine loop (see the module doc)."""

    def __init__(
        self,
        partition: int,
        engine: Engine,
        store: StateStore,
        *,
        partitions: int,
        epoch: int,
        applied_offset: int | None,
        erasures: dict[str, int] | None = None,
        cache_max: int = 200_000,
    ) -> None:
        self.partition = partition
        self.partitions = partitions
        self.engine = engine
        self.store = store
        self.epoch = epoch
        self.applied_offset = applied_offset
        self.cache_max = cache_max
        self.cache: OrderedDict[str, CustomerState] = OrderedDict()
        # anonymous id -> customer id (None: no link), a bounded cache of the stored links
        self.links: OrderedDict[str, str | None] = OrderedDict()
        # customer id -> time of its last forget: all the partition keeps (pruned after the
        # allowed lateness), read at the claim; only this owner writes them
        self.erasures: dict[str, int] = dict(erasures or {})
        self.cache_hits = 0
        self.cache_misses = 0
        self.fenced = False

    @classmethod
    async def claim(
        cls, partition: int, engine: Engine, store: StateStore, *, partitions: int,
        cache_max: int = 200_000,
    ) -> PartitionSegmenter:
        """Take ownership of ``partition`` (of ``partitions``) in the store and read where it
        stands."""
        epoch = await store.claim(partition)
        applied = await store.applied_offset(partition)
        erasures = await store.erasures(partition)
        return cls(partition, engine, store, partitions=partitions, epoch=epoch,
                   applied_offset=applied, erasures=erasures, cache_max=cache_max)

    @property
    def next_offset(self) -> int:
        """The first bundle offset not applied yet."""
        return 0 if self.applied_offset is None else self.applied_offset + 1

    # --- state cache --------------------------------------------------------------------------
    async def _load(self, ids: set[str]) -> None:
        missing = [cid for cid in ids if cid not in self.cache]
        self.cache_hits += len(ids) - len(missing)
        self.cache_misses += len(missing)
        if not missing:
            return
        blobs = await self.store.load(self.partition, missing)
        for cid, blob in zip(missing, blobs, strict=True):
            if blob is not None:
                self.cache[cid] = decode_state(blob)

    async def _load_batch(self, ids: set[str], anons: set[str]) -> None:
        """Cache what a batch touches: the links of ``anons``, then the states of ``ids`` and of
        the customers those anonymous ids are linked to (added to ``ids``)."""
        await self._load_links(anons)
        ids.update(c for a in anons if (c := self.links.get(a)) is not None)
        await self._load(ids)

    def _trim(self) -> None:
        while len(self.cache) > self.cache_max:
            self.cache.popitem(last=False)
        while len(self.links) > self.cache_max:
            self.links.popitem(last=False)

    # --- event processing ---------------------------------------------------------------------
    async def process(self, records: Sequence[tuple[int, bytes]], now: int) -> Outcome:
        """Run the engine over bundle ``records`` ((offset, value), in offset order)."""
        out = Outcome(now=now)
        items: list[Event | HandoffRecord] = []
        for offset, value in records:
            if self.applied_offset is not None and offset <= self.applied_offset:
                out.duplicates_skipped += 1
                continue
            out.offset = offset
            try:
                record = decode_record(value)
            except BundleError as err:
                out.bad_records.append((offset, str(err)))
                continue
            if isinstance(record, EventsRecord):
                items.extend(record.events)
            else:  # a hand-off from another partition's worker
                items.append(record)
        ids: set[str] = set()
        anons: set[str] = set()
        for item in items:
            if isinstance(item, HandoffRecord):
                ids.add(item.customer_id)
                continue
            anon = item.get("anonymous_id")
            cid = item.get("customer_id")
            if anon and (not cid or item["type"] == "alias"):
                anons.add(anon)
                ids.add(anon)
            if cid:
                ids.add(cid)
        await self._load_batch(ids, anons)
        try:
            for item in items:
                self._item(item, now, out)
        except Exception:  # any engine failure: isolate the failing item, go on
            log.exception("partition %d: the engine failed on a batch at offset %s; running it "
                          "again item by item", self.partition, out.offset)
            out = await self._isolate(items, ids, anons, now, out)
        out.forwards = {p: [r if isinstance(r, bytes) else encode_bundle(r) for r in records]
                        for p, records in out.pending.items()}
        out.commit = self._commit(out, offset=out.offset)
        # an erasure matters while older events can still arrive: for the allowed lateness
        horizon = now - self.engine.lateness
        out.commit.prune_erasures_before = horizon
        if self.erasures and min(self.erasures.values()) < horizon:
            self.erasures = {c: t for c, t in self.erasures.items() if t >= horizon}
        return out

    def _item(self, item: Event | HandoffRecord, now: int, out: Outcome) -> None:
        if isinstance(item, HandoffRecord):
            self._absorb(item, now, out)
        else:
            out.events += 1
            self._event(item, now, out)

    async def _isolate(self, items: Sequence[Event | HandoffRecord], ids: set[str],
                       anons: set[str], now: int, first: Outcome) -> Outcome:
        """The slow path after the engine raised in a batch (a bug, or an input it cannot
        handle; the states of the batch may be half-updated in the cache): reload the batch's
        customers, links and erasures from the store (nothing of the batch is committed), then
        run each item on its own, against a snapshot: an item that fails is rolled back and
        reported in ``failed`` (dead-lettered), the others are applied as usual. The same
        input gives the same result after a restart (deterministic engine), so a poison event
        never stops the partition."""
        for rid in ids:
            self.cache.pop(rid, None)
        for anon in anons:
            self.links.pop(anon, None)
        self.erasures = dict(await self.store.erasures(self.partition))
        await self._load_batch(ids, anons)
        out = Outcome(bad_records=first.bad_records, duplicates_skipped=first.duplicates_skipped,
                      offset=first.offset, now=first.now)
        for item in items:
            touched = self._touched(item)
            states = {rid: encode_state(st) if (st := self.cache.get(rid)) else None
                      for rid in touched}
            links = {rid: self.links[rid] for rid in touched if rid in self.links}
            erasures = {rid: self.erasures[rid] for rid in touched if rid in self.erasures}
            scratch = Outcome()
            try:
                self._item(item, now, scratch)
            except Exception as err:  # roll the item back, dead-letter it
                for rid, blob in states.items():
                    if blob is None:
                        self.cache.pop(rid, None)
                    else:
                        self.cache[rid] = decode_state(blob)
                for rid in touched:
                    self.links.pop(rid, None)
                    self.erasures.pop(rid, None)
                self.links.update(links)
                self.erasures.update(erasures)
                out.failed.append((_item_bytes(item), f"the engine failed: {err!r}"))
                event = item.event if isinstance(item, HandoffRecord) else item
                context = event_context(event, partition=self.partition)
                log.error("partition %d: dead-lettering event %s (customer %s) the engine "
                          "failed on (%r)", self.partition, context.get("event_id", "?"),
                          context.get("customer_id") or context.get("anonymous_id", "?"), err,
                          extra=context)
                continue
            _merge(out, scratch)
        return out

    def _touched(self, item: Event | HandoffRecord) -> set[str]:
        """The routing ids whose cache, link or erasure entries ``item`` may change."""
        if isinstance(item, HandoffRecord):
            return {item.customer_id, item.anonymous_id}
        ids = {item.get("customer_id") or "", item.get("anonymous_id") or ""}
        if (linked := self.links.get(item.get("anonymous_id") or "")) is not None:
            ids.add(linked)
        ids.discard("")
        return ids

    def _erased(self, cid: str, ts: int, out: Outcome) -> bool:
        """Whether an event (or hand-off) at ``ts`` belongs to ``cid``'s erased history: older
        than its last ``forget``, e.g. a hand-off or a forwarded event that arrived after it."""
        at = self.erasures.get(cid)
        if at is not None and ts <= at:
            out.erased += 1
            return True
        return False

    async def _load_links(self, anons: set[str]) -> None:
        missing = [a for a in anons if a not in self.links]
        if missing:
            for anon, cid in zip(missing, await self.store.aliases(self.partition, missing),
                                 strict=True):
                self.links[anon] = cid

    def _event(self, ev: Event, now: int, out: Outcome) -> None:
        engine, cache = self.engine, self.cache
        typ = ev["type"]
        anon = ev.get("anonymous_id") or ""
        cid = ev.get("customer_id") or ""
        if typ == "alias" and anon and cid and self.links.get(anon) is None:
            self._alias(ev, anon, cid, now, out)
            return
        if not cid and (linked := self.links.get(anon)) is not None:
            ev = {**ev, "customer_id": linked}  # a linked visitor: it is the customer now
            cid = linked
        rid = cid or anon
        if cid and partition_for(cid, self.partitions) != self.partition:
            _forward(out, partition_for(cid, self.partitions), ev)
            return
        if typ != "forget" and self._erased(rid, ev["timestamp"], out):
            return
        if typ == "forget":
            # the state to keep: a tombstone (version counters only) or, when newer events
            # arrived before the forget, the profile rebuilt from them (engine.forget)
            step = engine.forget(cache.get(rid), ev, now)
            if not step.late:
                at = max(ev["timestamp"], self.erasures.get(rid, 0))
                self.erasures[rid] = out.erasures[rid] = at
        else:
            step = engine.apply(cache.get(rid), ev, now)
        if step.late:
            (out.rate_limited if step.reason == "rate_limited" else out.late).append(ev)
            return
        self._take(rid, step, out)

    def _alias(self, ev: Event, anon: str, cid: str, now: int, out: Outcome) -> None:
        """The first alias of ``anon``: link it, and merge or hand over its profile."""
        engine = self.engine
        source = self.cache.get(anon)
        target_p = partition_for(cid, self.partitions)
        if ev["timestamp"] < now - engine.lateness:
            out.late.append(ev)  # refused: no link, no merge (as in replay)
            return
        self.links[anon] = out.links[anon] = cid
        if source is None:  # nothing to merge: the link is all there is
            if target_p == self.partition:
                self._take(cid, engine.apply(self.cache.get(cid), ev, now), out)
            else:
                _forward(out, target_p, ev)
            return
        if target_p == self.partition:
            known, gone = engine.merge(self.cache.get(cid), source, ev, now)
            self._take(anon, gone._replace(state=engine.tombstone(source)), out)
            self._take(cid, known, out)
            return
        gone = engine.release(source, ev, now)
        released = gone.state
        assert released is not None
        # the anonymous id keeps only its version counters (never reused downstream)
        self._take(anon, gone._replace(state=engine.tombstone(released), next_due=None), out)
        records = out.pending.setdefault(target_p, [])
        if records and isinstance(records[-1], list):  # keep order: events first
            records[-1] = encode_bundle(records[-1])
        records.append(encode_handoff(cid, anon, encode_state(released), ev))
        out.handoffs_sent += 1

    def _absorb(self, rec: HandoffRecord, now: int, out: Outcome) -> None:
        """A hand-off from the anonymous id's partition (dropped when already absorbed)."""
        if self._erased(rec.customer_id, rec.event["timestamp"], out):
            return
        target = self.cache.get(rec.customer_id)
        if target is not None and self.engine.has_seen(target, rec.event["event_id"]):
            out.duplicates_skipped += 1
            return
        step = self.engine.absorb(target, decode_state(rec.state), rec.event, now)
        self._take(rec.customer_id, step, out)
        out.handoffs_received += 1

    def _take(self, rid: str, step: Step, out: Outcome) -> None:
        if step.state is None:
            self.cache.pop(rid, None)
        else:
            self.cache[rid] = step.state
            self.cache.move_to_end(rid)
        out.dirty[rid] = step.state
        out.due[rid] = step.next_due
        out.changes.extend(step.changes)

    def _commit(self, out: Outcome, offset: int | None) -> Commit:
        states = {cid: encode_state(st) for cid, st in out.dirty.items() if st is not None}
        forgotten = [cid for cid, st in out.dirty.items() if st is None]
        members = [MemberOp(c.customer_id, c.segment, c.version) for c in out.changes]
        return Commit(self.partition, self.epoch, offset=offset, states=states,
                      due={cid: at for cid, at in out.due.items() if cid not in forgotten},
                      forgotten=forgotten, members=members, aliases=out.links,
                      erasures=out.erasures)

    # --- timers -------------------------------------------------------------------------------
    async def tick(self, now: int, limit: int = 1_000) -> Outcome:
        """Advance the customers whose due instant is <= ``now`` (time-only changes)."""
        out = Outcome(now=now)
        rows = await self.store.due(self.partition, now, limit)
        if not rows:
            return out
        await self._load({cid for cid, _ in rows})
        for cid, _ in rows:
            state = self.cache.get(cid)
            if state is None:  # erased meanwhile: drop the stale index entry
                out.due[cid] = None
                continue
            self._take(cid, self.engine.advance(state, now), out)
        out.commit = self._commit(out, offset=None)
        return out

    # --- definitions change -------------------------------------------------------------------
    async def reevaluate(self, engine: Engine, now: int,
                         count: int = 500) -> AsyncIterator[Outcome]:
        """Switch to ``engine`` (new definitions) and evaluate every stored customer of the
        partition with it, yielding one outcome per scan step to publish and commit; then
        record the definitions version with the partition. Re-running it (a crash midway) is
        harmless: a state already evaluated with ``engine`` gives no change."""
        self.engine = engine
        cause = engine.definitions_cause
        cursor = 0
        while True:
            cursor, rows = await self.store.scan_states(self.partition, cursor, count)
            out = Outcome()
            for cid, blob in rows:
                state = self.cache.get(cid) or decode_state(blob)
                self._take(cid, engine.reevaluate(state, now, cause), out)
            out.commit = self._commit(out, offset=None)
            yield out
            if cursor == 0:
                break
        await self.store.mark_definitions(self.partition, engine.catalogue.version)

    async def commit(self, out: Outcome) -> CommitResult:
        """Write ``out``'s commit to the store (after its changes were acknowledged)."""
        if out.commit is None:
            return CommitResult.APPLIED
        result = await self.store.commit(out.commit)
        if result is CommitResult.FENCED:
            self.fenced = True
            self.cache.clear()
            self.links.clear()
            self.erasures.clear()
            log.warning("partition %d was claimed by another worker: dropping it", self.partition)
        elif out.offset is not None:  # APPLIED, or ALREADY_APPLIED by a retried reply
            self.applied_offset = max(self.applied_offset or -1, out.offset)
        self._trim()
        return result


def _item_bytes(item: Event | HandoffRecord) -> bytes:
    """A failed item as a bundle record (what can be replayed into the bundles topic)."""
    if isinstance(item, HandoffRecord):
        return encode_handoff(item.customer_id, item.anonymous_id, item.state, item.event)
    return encode_bundle([item])


def _merge(out: Outcome, item: Outcome) -> None:
    """Add one item's outcome to the batch's (the careful path of ``process``)."""
    out.changes.extend(item.changes)
    out.late.extend(item.late)
    out.rate_limited.extend(item.rate_limited)
    out.events += item.events
    out.duplicates_skipped += item.duplicates_skipped
    out.handoffs_sent += item.handoffs_sent
    out.handoffs_received += item.handoffs_received
    out.forwarded += item.forwarded
    out.erased += item.erased
    out.dirty.update(item.dirty)
    out.due.update(item.due)
    out.links.update(item.links)
    out.erasures.update(item.erasures)
    for p, records in item.pending.items():
        target = out.pending.setdefault(p, [])
        for r in records:
            if isinstance(r, list) and target and isinstance(target[-1], list):
                target[-1].extend(r)
            else:
                target.append(r)


def _forward(out: Outcome, partition: int, ev: Event) -> None:
    """Send ``ev`` on to ``partition`` (the customer's), after what is already pending there."""
    records = out.pending.setdefault(partition, [])
    if records and isinstance(records[-1], list):
        records[-1].append(ev)
    else:
        records.append([ev])
    out.forwarded += 1
