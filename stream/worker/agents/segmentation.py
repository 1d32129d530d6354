"""Segmentation agent: bundles -> engine -> segment-changes topic -> Redis commits.

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
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust import Stream
from faust.types import TP, EventT, StreamT
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    ReadOnlyError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from processors.engine import Engine
from processors.hashing import deployment_key
from processors.lang.ast import Catalogue
from processors.lang.compile import compile_catalogue
from processors.lang.errors import DefinitionError
from schemas.changes import change_key, encode_change, from_change
from schemas.deadletter import encode_dead_letter
from state.model import RATE_CAP
from state.redis_store import RedisStore
from state.store import CommitResult, StateStore
from stream.connections import kafka_kwargs, redis_for
from stream.definitions import DefinitionsDoc, DefinitionsDocError, file_catalogue
from stream.settings import Settings
from stream.topics import DEFINITIONS_PARTITION, Topics
from stream.worker.metrics import partition_lags, report_lag_forever
from stream.worker.segment_metrics import SegmentMetrics
from stream.worker.segmenter import Outcome, PartitionSegmenter

if TYPE_CHECKING:
    from stream.worker.app import SegstreamApp

log = logging.getLogger(__name__)

AGENT_NAME = "segstream.segmentation"
RESEEK_S = 1.0  # while records keep arriving beyond the stored offset, seek again this often
RETRIABLE_REDIS_ERRORS = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, ClusterDownError, TryAgainError,
    MasterDownError, OSError,
)
T = TypeVar("T")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# How far behind the wall clock a partition's "now" may run while it works off a backlog:
# ARRIVAL_SLACK_MS past the arrival of the records being processed (see _clock).
ARRIVAL_SLACK_MS = 10_000


def _clock(arrived_ms: int | None) -> int:
    """The engine's "now" for records that arrived at ``arrived_ms`` (their bundles' record
    timestamp, stamped by ingest with the raw records' arrival): the wall clock, held back to
    ``arrived_ms + ARRIVAL_SLACK_MS`` while a backlog is worked off. So an event is judged late
    by when it arrived, not by when it is processed: a worker down for hours (or a slow one)
    refuses none of the events that arrived meanwhile, and the result does not depend on the
    processing delay. Caught up, it is the wall clock (records are seconds old at most).

    >>> _clock(None) > 1_700_000_000_000
    True
    >>> _clock(1_000_000)
    1010000
    """
    wall = _now_ms()
    return wall if arrived_ms is None else min(wall, arrived_ms + ARRIVAL_SLACK_MS)


async def _process(seg: PartitionSegmenter, records: list[tuple[int, bytes]],
                   arrived_ms: int | None) -> Outcome:
    """One attempt at a batch, with :func:`_clock` at that attempt as "now"."""
    return await seg.process(records, _clock(arrived_ms))


def _chunks(by_partition: dict[int, list[tuple[int, bytes]]], max_bytes: int
            ) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
    """``(partition, records)`` in order, each partition's records cut into runs of at most
    ``max_bytes`` (at least one record each): one engine pass and one commit per run, so a
    batch of full bundles is never decoded at once.

    >>> [(p, [o for o, _ in r]) for p, r in _chunks({0: [(1, b"ab"), (2, b"cd"), (3, b"e")],
    ...                                               1: [(7, b"xyz")]}, 3)]
    [(0, [1]), (0, [2, 3]), (1, [7])]
    """
    for p, records in by_partition.items():
        run: list[tuple[int, bytes]] = []
        size = 0
        for rec in records:
            if run and size + len(rec[1]) > max_bytes:
                yield p, run
                run, size = [], 0
            run.append(rec)
            size += len(rec[1])
        if run:
            yield p, run


def _waves(chunks: Iterable[tuple[int, list[tuple[int, bytes]]]], max_bytes: int
           ) -> Iterator[list[tuple[int, list[tuple[int, bytes]]]]]:
    """Group consecutive chunks into *waves*: at most one chunk per partition and at most
    ``max_bytes`` of records in all (at least one chunk each). A wave's partitions are processed
    together: one wait for the acknowledgements of all their changes, concurrent commits. So a
    batch spread thin over many partitions costs one round trip, not one per partition, and
    no more bundle bytes are decoded at once than before.

    >>> chunks = [(0, [(1, b"ab")]), (1, [(7, b"x")]), (1, [(8, b"yz")]), (2, [(3, b"abc")])]
    >>> [[p for p, _ in w] for w in _waves(chunks, 4)]
    [[0, 1], [1], [2]]
    """
    wave: list[tuple[int, list[tuple[int, bytes]]]] = []
    size = 0
    for p, records in chunks:
        n = sum(len(v) for _, v in records)
        if wave and (size + n > max_bytes or any(q == p for q, _ in wave)):
            yield wave
            wave, size = [], 0
        wave.append((p, records))
        size += n
    if wave:
        yield wave


class SegmentationAgent:
    """Owned partitions, their locks, and the batch and timer handlers."""

    def __init__(self, app: SegstreamApp, settings: Settings, topics: Topics,
                 definitions: Catalogue) -> None:
        self.app = app
        self.settings = settings
        self.topics = topics
        self.definitions = definitions  # what the engine runs (the API shows it)
        self.engine = Engine(compile_catalogue(definitions),
                             deployment_key(settings.id_hash_key))
        self.metrics = SegmentMetrics.create(app.metrics_registry)
        self.owned: dict[int, PartitionSegmenter] = {}
        self.locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        # partitions another worker claimed since ours: not ours again until Kafka assigns
        # them to us anew (re-claiming would fence the rightful owner in turn)
        self._lost: set[int] = set()
        # partitions read again from their stored offset: partition -> when we last sought
        self._rereading: dict[int, float] = {}
        # newest arrival (bundle record timestamp, epoch ms) processed per partition: the
        # timers' clock while the partition works off a backlog (see timer_clock)
        self._arrived: dict[int, int] = {}
        self._cache_max = settings.state_cache_max  # per owned partition: see on_assigned
        self.definitions_ready = asyncio.Event()  # set once the topic was read to its end
        self._store: StateStore | None = None
        self._bundles = settings.topic("bundles")
        self._changes = settings.topic("changes")
        self._deadletters = settings.topic("deadletters")

    @property
    def store(self) -> StateStore:
        if self._store is None:  # created on first use, inside the worker's event loop
            self._store = RedisStore(redis_for(self.settings),
                                     namespace=self.settings.redis_namespace)
        return self._store

    # --- partition ownership ----------------------------------------------------------------
    async def on_assigned(self, assigned: set[TP]) -> None:
        """Rebalance: drop partitions we lost (their cache may be stale once another worker
        writes them); new ones are claimed lazily when their first record arrives."""
        mine = {tp.partition for tp in assigned if tp.topic == self._bundles}
        self._lost -= mine  # assigned anew: ours to claim again
        # state_cache_max is the worker's: each owned partition caches its share
        self._cache_max = max(1, self.settings.state_cache_max // max(1, len(mine)))
        for seg in self.owned.values():
            seg.cache_max = self._cache_max
        for p in list(self.owned):
            if p not in mine:
                async with self.locks[p]:
                    self.owned.pop(p, None)

    async def on_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            if tp.topic == self._bundles:
                async with self.locks[tp.partition]:
                    self.owned.pop(tp.partition, None)

    async def _segmenter(self, p: int) -> PartitionSegmenter:
        seg = self.owned.get(p)
        if seg is None or seg.fenced:
            seg = await PartitionSegmenter.claim(
                p, self.engine, self.store, partitions=self.settings.bundle_partitions,
                cache_max=self._cache_max)
            self.owned[p] = seg
            log.info("claimed bundle partition %d (epoch %d, next offset %d)",
                     p, seg.epoch, seg.next_offset)
            if await self.store.definitions_version(p) != self.engine.catalogue.version:
                await self._reevaluate(seg)
        return seg

    async def _reevaluate(self, seg: PartitionSegmenter) -> None:
        """Evaluate the partition's stored customers with the current definitions (the
        caller holds the partition's lock)."""
        started = time.perf_counter()
        n = 0
        async for out in seg.reevaluate(self.engine, _now_ms()):
            n += len(out.dirty)
            await self._publish_and_commit(seg, out, time.perf_counter())
            if seg.fenced:
                return
        log.info("partition %d: %d customers evaluated with definitions %s in %.1f s",
                 seg.partition, n, self.engine.catalogue.version, time.perf_counter() - started)

    # --- definitions at runtime -------------------------------------------------------------
    async def switch(self, doc: DefinitionsDoc) -> None:
        """Run the published definitions ``doc`` from now on, and re-evaluate every owned
        partition whose stored definitions version differs (also after a failure midway: the
        caller retries, and partitions already done are skipped)."""
        if doc.version != self.engine.catalogue.version:
            try:
                definitions = doc.catalogue()
                engine = Engine(compile_catalogue(definitions),
                                deployment_key(self.settings.id_hash_key))
            except DefinitionError as err:  # published by hand, bypassing `segments apply`
                self.metrics.definitions_errors.inc()
                log.error("definitions %s refused, keeping %s: %s", doc.version,
                          self.engine.catalogue.version, err)
                return
            log.info("switching definitions %s -> %s", self.engine.catalogue.version,
                     doc.version)
            self.definitions, self.engine = definitions, engine
        version = self.engine.catalogue.version
        for p in sorted(self.owned):
            async with self.locks[p]:
                seg = self.owned.get(p)
                if (seg is not None and not seg.fenced
                        and await self.store.definitions_version(p) != version):
                    await self._reevaluate(seg)

    async def follow_definitions(self) -> None:
        """Read the definitions topic to its end (the latest document wins), then follow it.
        Every worker reads the whole topic (no consumer group): definitions are broadcast.
        Bundles wait until the first read is done, so no change is emitted under definitions
        that are already replaced; a failure (Kafka unreachable) is retried."""
        while True:
            try:
                await self._follow_definitions()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.definitions_errors.inc()
                log.exception("reading the definitions topic failed; retrying in 2 s")
                await asyncio.sleep(2.0)

    async def _follow_definitions(self) -> None:
        tp = TopicPartition(self.settings.topic("definitions"), DEFINITIONS_PARTITION)
        await self.topics.definitions.maybe_declare()
        consumer = AIOKafkaConsumer(**kafka_kwargs(self.settings),
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            latest: bytes | None = None
            while True:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                values = [r.value for r in batches.get(tp, ()) if r.value is not None]
                latest = values[-1] if values else latest
                if not self.definitions_ready.is_set() and await consumer.position(tp) < end:
                    continue  # still catching up: only the last document matters
                if latest is not None:
                    try:
                        await self.switch(DefinitionsDoc.decode(latest))
                    except DefinitionsDocError as err:
                        self.metrics.definitions_errors.inc()
                        log.error("ignoring a definitions record: %s", err)
                    latest = None
                self.definitions_ready.set()
        finally:
            await consumer.stop()

    # --- bundles ----------------------------------------------------------------------------
    async def run(self, stream: StreamT[bytes]) -> None:
        """The Faust agent body."""
        for t in (self.topics.changes, self.topics.deadletters):
            await t.maybe_declare()
        # the published definitions first, so no change is emitted under outdated ones
        await self.definitions_ready.wait()
        within = self.settings.segment_linger_ms / 1000.0
        n = self.settings.segment_batch_records
        async for events in cast(Stream[bytes], stream).take_events(n, within=within):
            await self.handle(events)

    async def handle(self, events: Sequence[EventT[bytes]]) -> None:
        by_partition: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        stamps: dict[tuple[int, int], int] = {}  # (partition, offset) -> arrival (epoch ms)
        for event in events:
            m = event.message
            # a null value cannot be decoded: it is reported as a bad record
            by_partition[m.partition].append((m.offset, m.value or b""))
            if m.timestamp:
                stamps[m.partition, m.offset] = int(m.timestamp * 1000)
        try:
            for wave in _waves(_chunks(by_partition, self.settings.segment_batch_max_bytes),
                               self.settings.segment_batch_max_bytes):
                await self._wave(wave, stamps)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Never let Faust restart this agent past a batch it did not commit: stop the
            # worker; its successor resumes from the offsets stored in Redis.
            log.critical("segmentation failed (%r): stopping the worker", exc)
            await self.app.crash(exc)
            raise

    async def _wave(self, wave: list[tuple[int, list[tuple[int, bytes]]]],
                    stamps: dict[tuple[int, int], int]) -> None:
        """One chunk of each of several partitions: under all their locks (taken in partition
        order; no other holder takes more than one), run the engine for each, produce all
        their changes and await the acknowledgements once, then write their Redis commits
        concurrently. Every partition's changes are acknowledged before its commit."""
        async with contextlib.AsyncExitStack() as locks:
            for p in sorted(p for p, _ in wave):
                await locks.enter_async_context(self.locks[p])
            done: list[tuple[PartitionSegmenter, Outcome, float]] = []
            for p, part in wave:
                if p in self._lost:  # fenced: its records are the new owner's
                    self.metrics.fenced_records.inc(len(part))
                    continue
                seg = await self._retrying("claim", partial(self._segmenter, p))
                if part[0][0] > seg.next_offset and await self._reread(seg, part):
                    continue
                self._rereading.pop(p, None)
                started = time.perf_counter()
                arrived = max((stamps.get((p, o), 0) for o, _ in part), default=0) or None
                if arrived is not None:
                    self._arrived[p] = max(arrived, self._arrived.get(p, 0))
                out = await self._retrying("state load", partial(_process, seg, part, arrived))
                done.append((seg, out, time.perf_counter() - started))
            await self._publish_and_commit_all(done)

    async def _reread(self, seg: PartitionSegmenter, records: list[tuple[int, bytes]]) -> bool:
        """Records start beyond the stored offset: Kafka's committed offset ran ahead of Redis
        (a crash between the ack and the Redis commit, or lost Redis writes). While the missing
        records are still in Kafka, seek back to them and drop what arrives beyond them (it comes
        again); True when ``records`` must be dropped. Records truly gone (retention) are
        reported and skipped."""
        p, first = seg.partition, records[0][0]
        tp = TP(self._bundles, p)
        earliest = (await self.app.consumer.earliest_offsets(tp)).get(tp, 0)
        if seg.next_offset < earliest:
            log.error("bundle partition %d: offsets %d..%d are gone from Kafka (retention); "
                      "continuing from %d", p, seg.next_offset, earliest - 1, first)
            return False
        # Records fetched before a seek still arrive and move Faust's read offset past the
        # target (it then drops the re-fetched ones): seek again while they keep coming (at
        # most every RESEEK_S), and the timer task seeks once more when they stopped coming.
        if time.monotonic() - self._rereading.get(p, -RESEEK_S) >= RESEEK_S:
            await self._seek_back(seg, first)
        return True

    async def _seek_back(self, seg: PartitionSegmenter, first: int | None) -> None:
        p = seg.partition
        log.warning("bundle partition %d: records from %s but the state is at %d; reading "
                    "them again", p, first if first is not None else "?", seg.next_offset)
        self.metrics.seeks.inc()
        self._rereading[p] = time.monotonic()
        await self.app.consumer.seek(TP(self._bundles, p), seg.next_offset)

    async def reseek_stalled(self) -> None:
        """Timer-task half of the re-read: a partition still behind its stored offset after
        RESEEK_S with nothing processed is sought again (the last seek may have been undone by
        records that were already fetched); one with nothing left to read is done."""
        for p, at in list(self._rereading.items()):
            if time.monotonic() - at < RESEEK_S:
                continue
            async with self.locks[p]:
                seg = self.owned.get(p)
                if seg is None or p not in self._rereading:
                    self._rereading.pop(p, None)
                    continue
                tp = TP(self._bundles, p)
                end = (await self.app.consumer.highwaters(tp)).get(tp, 0)
                if seg.next_offset >= end:
                    self._rereading.pop(p, None)  # nothing beyond the state: caught up
                    continue
                await self._seek_back(seg, None)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` again after a transient Redis failure (connection lost, timeout,
        failover, loading), with back-off, for as long as it takes: the partition waits, the
        lag grows and is reported, nothing is skipped."""
        delay = 0.1
        while True:
            try:
                return await call()
            except RETRIABLE_REDIS_ERRORS as err:
                self.metrics.redis_errors.inc()
                log.warning("Redis %s failed (%r); retrying in %.1f s", what, err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _publish_and_commit(self, seg: PartitionSegmenter, out: Outcome,
                                  started: float) -> None:
        """Publish one outcome, await its acknowledgements, then commit it (timer passes and
        re-evaluation; the caller holds the partition's lock)."""
        await self._publish_and_commit_all([(seg, out, time.perf_counter() - started)])

    async def _publish_and_commit_all(
            self, done: Sequence[tuple[PartitionSegmenter, Outcome, float]]) -> None:
        """Produce every outcome's records, await *all* their acknowledgements (one wait for
        every partition of the wave), then run the partitions' Redis commits concurrently.
        ``done`` holds (segmenter, outcome, engine seconds); the caller holds their locks."""
        if not done:
            return
        started = time.perf_counter()
        futures: list[Awaitable[Any]] = []
        for seg, out, _ in done:
            futures.extend(await self._send(seg, out))
        await asyncio.gather(*futures)
        published = time.perf_counter() - started
        await asyncio.gather(*(self._commit(seg, out, engine + published)
                               for seg, out, engine in done))

    async def _send(self, seg: PartitionSegmenter, out: Outcome) -> list[Awaitable[Any]]:
        """Hand ``out``'s changes, forwards and dead letters to the producer; the futures of
        their acknowledgements."""
        send = self.app.producer.send
        version = self.engine.catalogue.version
        futures: list[Awaitable[Any]] = [
            await send(self._changes, change_key(ch.customer_id),
                       encode_change(from_change(ch, version)), None, None, None)
            for ch in out.changes
        ]
        # alias hand-offs and linked visitors' events, stamped with this batch's clock: the
        # receiving partition judges their lateness as this one did
        stamp = out.now / 1000.0 if out.now else None
        for p, records in out.forwards.items():
            futures.extend([await send(self._bundles, None, r, p, stamp, None) for r in records])
        now = _now_ms()
        for ev in out.late:
            letter = encode_dead_letter(
                "too_late", f"event time {ev['timestamp']} is older than now - allowed lateness "
                f"({self.engine.lateness} ms)", orjson.dumps(ev), self._bundles, seg.partition,
                out.offset if out.offset is not None else -1, None, now)
            futures.append(await send(self._deadletters, None, letter, None, None, None))
        for ev in out.rate_limited:
            letter = encode_dead_letter(
                "rate_limited", f"customer already has {RATE_CAP} events within the allowed "
                f"lateness ({self.engine.lateness} ms)", orjson.dumps(ev), self._bundles,
                seg.partition, out.offset if out.offset is not None else -1, None, now)
            futures.append(await send(self._deadletters, None, letter, None, None, None))
        for record, reason in out.failed:  # the engine failed on it: the batch went on
            letter = encode_dead_letter("internal_error", reason, record, self._bundles,
                                        seg.partition, out.offset if out.offset is not None
                                        else -1, None, now)
            futures.append(await send(self._deadletters, None, letter, None, None, None))
        for offset, reason in out.bad_records:
            letter = encode_dead_letter("bad_bundle", reason, b"", self._bundles,
                                        seg.partition, offset, None, now)
            futures.append(await send(self._deadletters, None, letter, None, None, None))
        return futures

    async def _commit(self, seg: PartitionSegmenter, out: Outcome, engine_seconds: float
                      ) -> None:
        """Write ``out``'s commit (its records are acknowledged), and record the metrics."""
        commit_started = time.perf_counter()
        hits, misses = seg.cache_hits, seg.cache_misses
        seg.cache_hits = seg.cache_misses = 0
        # the script is atomic and idempotent: a retry after a lost reply is ALREADY_APPLIED
        result = await self._retrying("commit", lambda: seg.commit(out))
        self.metrics.cache_hits.inc(hits)
        self.metrics.cache_misses.inc(misses)
        self.metrics.record(out, result, engine_seconds=engine_seconds,
                            commit_seconds=time.perf_counter() - commit_started,
                            now_ms=_now_ms())
        if result is CommitResult.FENCED:
            self.owned.pop(seg.partition, None)
            self._lost.add(seg.partition)

    # --- timers -----------------------------------------------------------------------------
    async def timers(self) -> None:
        """Fire due instants of every owned partition, forever (an app task)."""
        interval = self.settings.timer_interval_ms / 1000.0
        passes = 0
        while True:
            await asyncio.sleep(interval)
            passes += 1
            if self._rereading:
                try:
                    await self.reseek_stalled()
                except Exception:  # retried at the next pass
                    log.exception("seeking back stalled partitions failed; retrying")
            for p in list(self.owned):
                try:
                    await self.tick(p)
                except Exception:  # a Redis blip must not kill the timers: retry next pass
                    self.metrics.redis_errors.inc()
                    log.exception("timer pass of partition %d failed; retrying", p)
            if passes % 20 == 0:
                await self.refresh_gauges()

    async def refresh_gauges(self) -> None:
        """Segment sizes and timer backlog of the owned partitions (a few Redis reads)."""
        owned = sorted(self.owned)
        try:
            sizes = await self.store.sizes(owned)
            backlog = sum([await self.store.due_count(p, _now_ms()) for p in owned])
        except Exception:
            self.metrics.redis_errors.inc()
            log.exception("reading segment sizes failed")
            return
        for name in self.engine.catalogue.names:
            self.metrics.segment_size.labels(name).set(sizes.get(name, 0))
        self.metrics.timer_backlog.set(backlog)

    async def report_lag(self) -> None:
        """``segstream_partition_lag{stage="segmentation"}``: bundle records beyond the offset
        applied in Redis, per assigned partition."""
        stored: dict[int, int] = {}
        for tp in self.app.consumer.assignment():
            seg = self.owned.get(tp.partition)
            if tp.topic == self._bundles and (seg is None or seg.fenced):
                applied = await self.store.applied_offset(tp.partition)  # not claimed yet
                stored[tp.partition] = 0 if applied is None else applied + 1

        def done(p: int) -> int | None:
            seg = self.owned.get(p)
            return seg.next_offset if seg is not None and not seg.fenced else stored.get(p)

        self.app.partition_lag.update("segmentation",
                                      partition_lags(self.app, self._bundles, done))

    async def lag_task(self) -> None:
        """An app task: :meth:`report_lag` every ``LAG_INTERVAL_S``."""
        await report_lag_forever(self.report_lag)

    def timer_clock(self, seg: PartitionSegmenter) -> int | None:
        """"now" for a timer pass of ``seg``'s partition: the wall clock when it is caught up
        (its stored offset at the consumer's high-water mark); while it works off a backlog,
        the clock of the newest records processed (:func:`_clock`), so that time-driven changes
        never run ahead of events still waiting in Kafka; None (no pass) before the first fetch
        told how far the partition goes, or while nothing of a backlog is processed yet."""
        tp = TP(self._bundles, seg.partition)
        try:
            high = self.app.consumer.highwater(tp)
        except AssertionError:  # not assigned (any more)
            return None
        if high is None:
            return None
        if seg.next_offset >= high:
            return _now_ms()
        arrived = self._arrived.get(seg.partition)
        return None if arrived is None else _clock(arrived)

    async def tick(self, p: int) -> None:
        async with self.locks[p]:
            seg = self.owned.get(p)
            if seg is None or seg.fenced:
                return
            now = self.timer_clock(seg)
            if now is None:
                return
            started = time.perf_counter()
            out = await seg.tick(now, limit=self.settings.timer_batch)
            if out.commit is not None:
                await self._publish_and_commit(seg, out, started)


def attach(app: SegstreamApp, settings: Settings, topics: Topics) -> None:
    """Define the segmentation agent and its timer task on ``app`` (reads ``topics.bundles``)."""
    agent = SegmentationAgent(app, settings, topics, file_catalogue(settings.segments_file))
    app.segmentation = agent  # type: ignore[attr-defined]
    app.agent(topics.bundles, name=AGENT_NAME)(agent.run)
    app.task(agent.timers)
    app.task(agent.follow_definitions)
    app.task(agent.lag_task)

    # Faust calls receivers as receiver(sender, assigned_or_revoked, signal=...)
    async def assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await agent.on_assigned(set(args[0]))

    async def revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await agent.on_revoked(set(args[0]))

    app.on_partitions_assigned.connect(assigned, weak=False)
    app.on_partitions_revoked.connect(revoked, weak=False)
