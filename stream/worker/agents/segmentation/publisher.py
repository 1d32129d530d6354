"""The outcome publisher: changes, forwards and dead letters out, acknowledged, then committed.

At-least-once order: every record of every outcome of a wave is produced, *all* their
acknowledgements are awaited (one wait for the wave), and only then are the partitions' Redis
commits written, concurrently (each atomic and idempotent: states, due index, membership,
applied offset). A crash before a commit re-emits the same changes with the same versions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import orjson

from schemas.changes import change_key, encode_change, from_change
from schemas.deadletter import encode_dead_letter
from schemas.errors import ErrorCode
from state.model import RATE_CAP
from state.store import CommitResult
from stream.settings import Settings
from stream.worker.agents.segmentation.running import Running, retrying
from stream.worker.ports import Clock, Delivery, RecordSink
from stream.worker.segment_metrics import SegmentMetrics
from stream.worker.segmenter import Outcome, PartitionSegmenter

#: (segmenter, outcome, engine seconds) of one partition of a wave
Done = tuple[PartitionSegmenter, Outcome, float]


def dead_letters(out: Outcome, *, topic: str, partition: int, lateness_ms: int,
                 now_ms: int) -> list[bytes]:
    """The dead letters of ``out``: late and rate-limited events, items the engine failed on,
    unreadable bundle records (origin: the bundles ``topic`` and ``partition``)."""
    offset = out.offset if out.offset is not None else -1
    letters = [encode_dead_letter(
        ErrorCode.TOO_LATE,
        f"event time {ev['timestamp']} is older than now - allowed lateness "
        f"({lateness_ms} ms)", orjson.dumps(ev), topic, partition, offset, None, now_ms)
        for ev in out.late]
    letters += [encode_dead_letter(
        ErrorCode.RATE_LIMITED,
        f"customer already has {RATE_CAP} events within the allowed lateness ({lateness_ms} ms)",
        orjson.dumps(ev), topic, partition, offset, None, now_ms)
        for ev in out.rate_limited]
    letters += [encode_dead_letter(ErrorCode.INTERNAL_ERROR, reason, record, topic, partition,
                                   offset, None, now_ms)
                for record, reason in out.failed]  # the engine failed on it: the batch went on
    letters += [encode_dead_letter(ErrorCode.BAD_BUNDLE, reason, b"", topic, partition, bad_offset,
                                   None, now_ms)
                for bad_offset, reason in out.bad_records]
    return letters


class OutcomePublisher:
    """Publishes outcomes and commits them, in the at-least-once order (module doc)."""

    def __init__(self, settings: Settings, running: Running, *, sink: RecordSink, clock: Clock,
                 metrics: SegmentMetrics, on_fenced: Callable[[int], None]) -> None:
        self.running = running
        self.sink = sink
        self.clock = clock
        self.metrics = metrics
        self.on_fenced = on_fenced  # another worker owns the partition now
        self._bundles = settings.topic("bundles")
        self._changes = settings.topic("changes")
        self._deadletters = settings.topic("deadletters")

    async def publish_and_commit(self, seg: PartitionSegmenter, out: Outcome,
                                 started: float) -> None:
        """Publish one outcome, await its acknowledgements, then commit it (timer passes and
        re-evaluation; the caller holds the partition's lock)."""
        await self.publish_and_commit_all([(seg, out, time.perf_counter() - started)])

    async def publish_and_commit_all(self, done: Sequence[Done]) -> None:
        """Produce every outcome's records, await *all* their acknowledgements (one wait for
        every partition of the wave), then run the partitions' Redis commits concurrently.
        The caller holds the partitions' locks."""
        if not done:
            return
        started = time.perf_counter()
        futures: list[Delivery] = []
        for seg, out, _ in done:
            futures.extend(await self.send(seg, out))
        await asyncio.gather(*futures)
        published = time.perf_counter() - started
        await asyncio.gather(*(self.commit(seg, out, engine + published)
                               for seg, out, engine in done))

    async def send(self, seg: PartitionSegmenter, out: Outcome) -> list[Delivery]:
        """Hand ``out``'s changes, forwards and dead letters to the sink; the awaitables of
        their acknowledgements."""
        send = self.sink.send
        version = self.running.version
        futures: list[Delivery] = [
            await send(self._changes, change_key(ch.customer_id),
                       encode_change(from_change(ch, version)))
            for ch in out.changes
        ]
        # alias hand-offs and linked visitors' events, stamped with this batch's clock: the
        # receiving partition judges their lateness as this one did
        stamp = out.now / 1000.0 if out.now else None
        for p, records in out.forwards.items():
            futures.extend([await send(self._bundles, None, r, partition=p, timestamp_s=stamp)
                            for r in records])
        letters = dead_letters(out, topic=self._bundles, partition=seg.partition,
                               lateness_ms=self.running.engine.lateness,
                               now_ms=self.clock.now_ms())
        futures.extend([await send(self._deadletters, None, letter) for letter in letters])
        return futures

    async def commit(self, seg: PartitionSegmenter, out: Outcome, engine_seconds: float
                     ) -> None:
        """Write ``out``'s commit (its records are acknowledged), and record the metrics."""
        commit_started = time.perf_counter()
        hits, misses = seg.cache_hits, seg.cache_misses
        seg.cache_hits = seg.cache_misses = 0
        # the script is atomic and idempotent: a retry after a lost reply is ALREADY_APPLIED
        result = await retrying("commit", lambda: seg.commit(out), self.metrics.redis_errors.inc)
        self.metrics.cache_hits.inc(hits)
        self.metrics.cache_misses.inc(misses)
        self.metrics.record(out, result, engine_seconds=engine_seconds,
                            commit_seconds=time.perf_counter() - commit_started,
                            now_ms=self.clock.now_ms())
        if result is CommitResult.FENCED:
            self.on_fenced(seg.partition)
