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

Identity: an ``alias`` whose anonymous profile lives in this partition is merged here
(``engine.merge``, as the offline replay does). An anonymous profile in *another* partition is
not handed over yet (the hand-off record exists in ``schemas.bundle``; the transfer is the
next step of the worker issue): the alias then only links and is counted in
``Outcome.unmerged_aliases``. ``forget`` erases state, due index and membership.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.engine import Engine
from processors.types import Change, Step
from schemas.bundle import BundleError, EventsRecord, decode_record
from state.codec import decode_state, encode_state
from state.model import CustomerState
from state.store import Commit, CommitResult, MemberOp, StateStore

log = logging.getLogger(__name__)

Event = dict[str, Any]


@dataclass(slots=True)
class Outcome:
    """What one ``process``/``tick`` produced, to publish and then commit."""

    changes: list[Change] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)  # refused as too late: dead-letter them
    bad_records: list[tuple[int, str]] = field(default_factory=list)  # (offset, reason)
    events: int = 0
    duplicates_skipped: int = 0  # records at or below the applied offset
    unmerged_aliases: int = 0
    offset: int | None = None  # highest offset processed (None for a timer pass)
    commit: Commit | None = None


class PartitionSegmenter:
    """One owned partition: its state cache and its engine loop (see the module doc)."""

    def __init__(
        self,
        partition: int,
        engine: Engine,
        store: StateStore,
        *,
        epoch: int,
        applied_offset: int | None,
        cache_max: int = 200_000,
    ) -> None:
        self.partition = partition
        self.engine = engine
        self.store = store
        self.epoch = epoch
        self.applied_offset = applied_offset
        self.cache_max = cache_max
        self.cache: OrderedDict[str, CustomerState] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        self.fenced = False

    @classmethod
    async def claim(
        cls, partition: int, engine: Engine, store: StateStore, cache_max: int = 200_000
    ) -> PartitionSegmenter:
        """Take ownership of ``partition`` in the store and read where it stands."""
        epoch = await store.claim(partition)
        applied = await store.applied_offset(partition)
        return cls(partition, engine, store, epoch=epoch, applied_offset=applied,
                   cache_max=cache_max)

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

    def _trim(self) -> None:
        while len(self.cache) > self.cache_max:
            self.cache.popitem(last=False)

    # --- event processing ---------------------------------------------------------------------
    async def process(self, records: Sequence[tuple[int, bytes]], now: int) -> Outcome:
        """Run the engine over bundle ``records`` ((offset, value), in offset order)."""
        out = Outcome()
        events: list[Event] = []
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
                events.extend(record.events)
            else:  # a hand-off from another partition's worker
                out.bad_records.append((offset, "alias hand-off records are not handled yet"))
        ids: set[str] = set()
        for ev in events:
            rid: str = ev.get("customer_id") or ev["anonymous_id"]
            ids.add(rid)
            if ev["type"] == "alias" and ev.get("anonymous_id"):
                ids.add(ev["anonymous_id"])
        await self._load(ids)
        dirty: dict[str, CustomerState | None] = {}
        due: dict[str, int | None] = {}
        for ev in events:
            out.events += 1
            self._event(ev, now, out, dirty, due)
        out.commit = self._commit(out, dirty, due, offset=out.offset)
        return out

    def _event(self, ev: Event, now: int, out: Outcome,
               dirty: dict[str, CustomerState | None], due: dict[str, int | None]) -> None:
        engine, cache = self.engine, self.cache
        typ = ev["type"]
        anon = ev.get("anonymous_id") or ""
        rid: str = ev.get("customer_id") or anon
        if typ == "alias" and anon and anon != rid and anon in cache:
            known, gone = engine.merge(cache.get(rid), cache[anon], ev, now)
            if known.late:
                out.late.append(ev)
                return
            self._take(anon, gone, out, dirty, due)
            self._take(rid, known, out, dirty, due)
            return
        if typ == "alias" and anon and anon != rid:
            out.unmerged_aliases += 1
        if typ == "forget":
            step = engine.forget(cache.get(rid), ev, now)
        else:
            step = engine.apply(cache.get(rid), ev, now)
        if step.late:
            out.late.append(ev)
            return
        self._take(rid, step, out, dirty, due)

    def _take(self, rid: str, step: Step, out: Outcome,
              dirty: dict[str, CustomerState | None], due: dict[str, int | None]) -> None:
        if step.state is None:
            self.cache.pop(rid, None)
        else:
            self.cache[rid] = step.state
            self.cache.move_to_end(rid)
        dirty[rid] = step.state
        due[rid] = step.next_due
        out.changes.extend(step.changes)

    def _commit(self, out: Outcome, dirty: dict[str, CustomerState | None],
                due: dict[str, int | None], offset: int | None) -> Commit:
        states = {cid: encode_state(st) for cid, st in dirty.items() if st is not None}
        forgotten = [cid for cid, st in dirty.items() if st is None]
        members = [MemberOp(c.customer_id, c.segment, c.version) for c in out.changes]
        return Commit(self.partition, self.epoch, offset=offset, states=states,
                      due={cid: at for cid, at in due.items() if cid not in forgotten},
                      forgotten=forgotten, members=members)

    # --- timers -------------------------------------------------------------------------------
    async def tick(self, now: int, limit: int = 1_000) -> Outcome:
        """Advance the customers whose due instant is <= ``now`` (time-only changes)."""
        out = Outcome()
        rows = await self.store.due(self.partition, now, limit)
        if not rows:
            return out
        await self._load({cid for cid, _ in rows})
        dirty: dict[str, CustomerState | None] = {}
        due: dict[str, int | None] = {}
        for cid, _ in rows:
            state = self.cache.get(cid)
            if state is None:  # erased meanwhile: drop the stale index entry
                due[cid] = None
                continue
            self._take(cid, self.engine.advance(state, now), out, dirty, due)
        out.commit = self._commit(out, dirty, due, offset=None)
        return out

    async def commit(self, out: Outcome) -> CommitResult:
        """Write ``out``'s commit to the store (after its changes were acknowledged)."""
        if out.commit is None:
            return CommitResult.APPLIED
        result = await self.store.commit(out.commit)
        if result is CommitResult.FENCED:
            self.fenced = True
            self.cache.clear()
            log.warning("partition %d was claimed by another worker: dropping it", self.partition)
        elif out.offset is not None and result is CommitResult.APPLIED:
            self.applied_offset = out.offset
        self._trim()
        return result
