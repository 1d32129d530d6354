"""Segmentation agent: bundles -> engine -> segment-changes topic -> Redis commits.

The agent composes parts with one job each (this package): :mod:`.ownership` (partitions,
locks, segmenters), :mod:`.follower` (the definitions topic), :mod:`.reseeker` (seek-back
recovery), :mod:`.publisher` (send, await acks, then commit), :mod:`.timers` (time-only
changes), :mod:`.gauges` (sizes, backlog, lag); :mod:`.waves` cuts a batch.

Per batch of bundle records (``take_events(n, within=segment_linger_ms)``), in *waves* (at most one
chunk of ``segment_batch_max_bytes`` per partition, that many bytes in all: a batch of a few
records is one wave), under the locks of the wave's partitions:
:meth:`stream.worker.segmenter.PartitionSegmenter.process` runs the engine for each partition with
the wall clock as "now"; then the changes (keyed by customer), the late events and the unreadable
bundle records (both to the dead-letter topic) of *all* the wave's partitions are produced and
*all* acknowledged (one wait); only then are the partitions' commits written to Redis, concurrently
(each: states, due index, membership, applied offset in one atomic script). So every partition's
changes are acknowledged before its commit, and a batch spread over 8 partitions costs one
acknowledgement round trip, not 8. A crash before a commit re-emits the same changes with the same
versions on restart (at-least-once, deduplicated downstream by (customer, segment, version)); a
crash after it skips the bundle (its offset is at or below the stored one). The Kafka offsets acked
after the body returns are only a hint: the offset stored in Redis is the truth, and a partition
whose records arrive beyond it (Kafka's commit ran ahead of lost Redis writes) is sought back.

Lag: every ``LAG_INTERVAL_S`` a task sets ``segstream_partition_lag{stage="segmentation"}`` of
each assigned bundle partition to the consumer's high-water mark (from its last fetch response)
minus the next offset to apply (the segmenter's copy of the offset stored in Redis; read from
Redis for a partition not claimed yet).

A timer task (every ``timer_interval_ms``) runs :meth:`PartitionSegmenter.tick` for each owned
partition under the same lock: time-only ENTER/EXIT within about a second of their instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterable, Awaitable, Callable
from functools import partial
from typing import TypeVar

from processors.engine import Engine
from processors.lang.ast import Catalogue
from processors.lang.errors import DefinitionError
from state.redis_store import RedisStore
from state.store import StateStore
from stream.connections import redis_for
from stream.definitions import DefinitionsDoc
from stream.eventtypes import LiveTypes
from stream.settings import Settings
from stream.worker.agents.segmentation.follower import DefinitionsFollower
from stream.worker.agents.segmentation.gauges import Gauges
from stream.worker.agents.segmentation.ownership import Ownership
from stream.worker.agents.segmentation.publisher import Done, OutcomePublisher
from stream.worker.agents.segmentation.reseeker import ReSeeker
from stream.worker.agents.segmentation.running import Running, engine_now, retrying
from stream.worker.agents.segmentation.timers import TimerLoop
from stream.worker.agents.segmentation.waves import Records, chunks, waves
from stream.worker.metrics import PartitionLag
from stream.worker.ports import Batch, Clock, Fatal, PartitionCursor, RecordSink
from stream.worker.segment_metrics import SegmentMetrics
from stream.worker.segmenter import Outcome, PartitionSegmenter

log = logging.getLogger("stream.worker.agents.segmentation")

AGENT_NAME = "segstream.segmentation"
T = TypeVar("T")


class SegmentationAgent:
    """The batch handler, composed of the parts that do the rest (module doc)."""

    def __init__(self, settings: Settings, definitions: Catalogue, *, sink: RecordSink,
                 cursor: PartitionCursor, clock: Clock, fatal: Fatal, metrics: SegmentMetrics,
                 lag: PartitionLag, store: StateStore | None = None,
                 declare_definitions: Callable[[], Awaitable[None]] | None = None,
                 types: LiveTypes | None = None) -> None:
        """``store`` None: the Redis store of the settings, created on first use (inside the
        worker's event loop). ``types``: the custom event types published definitions may use
        (default: the types file's, not followed)."""
        self.settings = settings
        self.types = types if types is not None else LiveTypes.from_settings(settings)
        self._refused: DefinitionsDoc | None = None  # refused, maybe for a missing custom type
        self.types.listeners.append(self._retry_refused)
        self.clock = clock
        self.fatal = fatal
        self.metrics = metrics
        self._store = store
        bundles = settings.topic("bundles")
        self.running = Running(definitions, settings.segmentation.id_hash_key)
        self.ownership = Ownership(self.running, lambda: self.store,
                                   partitions=settings.topics.bundle_partitions,
                                   state_cache_max=settings.segmentation.state_cache_max)
        self.publisher = OutcomePublisher(settings, self.running, sink=sink, clock=clock,
                                          metrics=metrics,
                                          on_fenced=self.ownership.lose)
        self.reseeker = ReSeeker(cursor, clock, bundles, metrics.seeks)
        self.gauges = Gauges(self.ownership, self.running, lambda: self.store, cursor=cursor,
                             clock=clock, metrics=metrics, lag=lag, topic=bundles)
        self.timer_loop = TimerLoop(self.ownership, self.publisher, self.reseeker, cursor, clock,
                                    topic=bundles,
                                    interval_s=settings.segmentation.timer_interval_ms / 1000.0,
                                    batch=settings.segmentation.timer_batch,
                                    redis_errors=metrics.redis_errors,
                                    refresh_gauges=self.gauges.refresh)
        self.follower = DefinitionsFollower(settings, self.switch, metrics.definitions_errors,
                                            declare_definitions)
        # the app tasks and rebalance callbacks (wired by stream.worker.bootstrap)
        self.timers = self.timer_loop.run
        self.tick = self.timer_loop.tick
        self.follow_definitions = self.follower.follow
        self.definitions_ready = self.follower.ready  # set once the topic was read to its end
        self.lag_task = self.gauges.lag_task
        self.on_assigned = self.ownership.on_assigned
        self.on_revoked = self.ownership.on_revoked

    # --- what the API and the tests read ------------------------------------------------------
    @property
    def definitions(self) -> Catalogue:
        """What the engine runs (a runtime change included)."""
        return self.running.definitions

    @property
    def engine(self) -> Engine:
        return self.running.engine

    @property
    def owned(self) -> dict[int, PartitionSegmenter]:
        return self.ownership.owned

    @property
    def store(self) -> StateStore:
        if self._store is None:  # created on first use, inside the worker's event loop
            self._store = RedisStore(redis_for(self.settings),
                                     namespace=self.settings.redis.namespace)
        return self._store

    # --- bundles ----------------------------------------------------------------------------
    async def run(self, batches: AsyncIterable[Batch]) -> None:
        """The agent body (``batches``: the bundles topic's ``take_events``)."""
        # the published definitions first, so no change is emitted under outdated ones
        await self.definitions_ready.wait()
        async for events in batches:
            await self.handle(events)

    async def handle(self, events: Batch) -> None:
        """One batch: its records per partition, cut in waves (stream.worker.agents
        .segmentation.waves), each wave processed by :meth:`_wave`. Anything escaping stops the
        worker: Faust must not restart this agent past a batch it did not commit."""
        by_partition: dict[int, Records] = defaultdict(list)
        stamps: dict[tuple[int, int], int] = {}  # (partition, offset) -> arrival (epoch ms)
        for event in events:
            m = event.message
            # a null value cannot be decoded: it is reported as a bad record
            by_partition[m.partition].append((m.offset, m.value or b""))
            if m.timestamp:
                stamps[m.partition, m.offset] = int(m.timestamp * 1000)
        max_bytes = self.settings.segmentation.batch_max_bytes
        try:
            for wave in waves(chunks(by_partition, max_bytes), max_bytes):
                await self._wave(wave, stamps)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # its successor resumes from the offsets stored in Redis
            log.critical("segmentation failed (%r): stopping the worker", exc)
            await self.fatal.crash(exc)
            raise

    async def _wave(self, wave: list[tuple[int, Records]],
                    stamps: dict[tuple[int, int], int]) -> None:
        """One chunk of each of several partitions: under all their locks (taken in partition
        order; no other holder takes more than one), run the engine for each, then publish and
        commit them together (:meth:`OutcomePublisher.publish_and_commit_all`: one ack wait,
        commits gathered). Every partition's changes are acknowledged before its commit."""
        locks = self.ownership.locks
        async with contextlib.AsyncExitStack() as held:
            for p in sorted(p for p, _ in wave):
                await held.enter_async_context(locks[p])
            done: list[Done] = []
            for p, part in wave:
                if p in self.ownership.lost:  # fenced: its records are the new owner's
                    self.metrics.fenced_records.inc(len(part))
                    continue
                seg = await self._retrying("claim", partial(self._segmenter, p))
                if part[0][0] > seg.next_offset and await self.reseeker.reread(seg, part):
                    continue
                self.reseeker.caught_up(p)
                started = time.perf_counter()
                arrived = max((stamps.get((p, o), 0) for o, _ in part), default=0) or None
                if arrived is not None:
                    self.timer_loop.saw_arrival(p, arrived)
                out = await self._retrying("state load", partial(self._process, seg, part, arrived))
                done.append((seg, out, time.perf_counter() - started))
            await self.publisher.publish_and_commit_all(done)

    async def _process(self, seg: PartitionSegmenter, records: Records,
                       arrived_ms: int | None) -> Outcome:
        """One attempt at a batch, with :func:`engine_now` at that attempt as "now"."""
        return await seg.process(records, engine_now(self.clock.now_ms(), arrived_ms))

    def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return retrying(what, call, self.metrics.redis_errors.inc)

    async def _segmenter(self, p: int) -> PartitionSegmenter:
        """``p``'s segmenter; a partition just claimed whose stored customers were evaluated
        with other definitions is re-evaluated first (the caller holds the lock)."""
        seg, claimed = await self.ownership.segmenter(p)
        if claimed and await self.store.definitions_version(p) != self.running.version:
            await self._reevaluate(seg)
        return seg

    # --- definitions at runtime -------------------------------------------------------------
    async def _reevaluate(self, seg: PartitionSegmenter) -> None:
        """Evaluate the partition's stored customers with the current definitions (the
        caller holds the partition's lock)."""
        started = time.perf_counter()
        n = 0
        async for out in seg.reevaluate(self.running.engine, self.clock.now_ms()):
            n += len(out.dirty)
            await self.publisher.publish_and_commit(seg, out, time.perf_counter())
            if seg.fenced:
                return
        log.info("partition %d: %d customers evaluated with definitions %s in %.1f s",
                 seg.partition, n, self.running.version, time.perf_counter() - started)

    async def _retry_refused(self) -> None:
        """New custom event types: run the definitions refused last, if they load now."""
        doc, self._refused = self._refused, None
        if doc is not None:
            await self.switch(doc)

    async def switch(self, doc: DefinitionsDoc) -> None:
        """Run the published definitions ``doc`` from now on, and re-evaluate every owned
        partition whose stored definitions version differs (also after a failure midway: the
        caller retries, and partitions already done are skipped)."""
        running = self.running
        if doc.version != running.version:
            if self.types.followed:  # published definitions may use published custom types
                await self.types.ready.wait()
            try:
                definitions = doc.catalogue(self.types.types)
                engine = running.compile(definitions)
            except DefinitionError as err:  # published by hand, bypassing `segments apply`
                self._refused = doc  # tried again when the custom event types change
                self.metrics.definitions_errors.inc()
                log.error("definitions %s refused, keeping %s: %s", doc.version,
                          running.version, err)
                return
            log.info("switching definitions %s -> %s", running.version, doc.version)
            running.definitions, running.engine = definitions, engine
        version = running.version
        for p in sorted(self.owned):
            async with self.ownership.locks[p]:
                seg = self.ownership.current(p)
                if seg is not None and await self.store.definitions_version(p) != version:
                    await self._reevaluate(seg)
