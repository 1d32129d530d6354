"""The timer loop: time-only ENTER/EXIT of every owned partition, and the periodic chores.

Every ``timer_interval_ms`` each owned partition's due customers are advanced
(:meth:`PartitionSegmenter.tick`) under its lock, with the same publish-then-commit as a batch;
stalled re-reads are sought again, and every 20 passes the gauges are refreshed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from stream.worker.agents.segmentation.ownership import Ownership
from stream.worker.agents.segmentation.publisher import OutcomePublisher
from stream.worker.agents.segmentation.reseeker import ReSeeker
from stream.worker.agents.segmentation.running import engine_now
from stream.worker.ports import Clock, PartitionCursor
from stream.worker.segmenter import PartitionSegmenter

log = logging.getLogger(__name__)

GAUGE_EVERY_PASSES = 20


class TimerLoop:
    """Timer passes, with the clock each partition may use (:meth:`timer_clock`)."""

    def __init__(self, ownership: Ownership, publisher: OutcomePublisher, reseeker: ReSeeker,
                 cursor: PartitionCursor, clock: Clock, *, topic: str, interval_s: float,
                 batch: int, redis_errors: Counter,
                 refresh_gauges: Callable[[], Awaitable[None]]) -> None:
        self.ownership = ownership
        self.publisher = publisher
        self.reseeker = reseeker
        self.cursor = cursor
        self.clock = clock
        self.topic = topic  # the bundles topic
        self.interval_s = interval_s
        self.batch = batch  # customers per partition and pass (timer_batch)
        self.redis_errors = redis_errors
        self.refresh_gauges = refresh_gauges
        # newest arrival (bundle record timestamp, epoch ms) processed per partition: the
        # timers' clock while the partition works off a backlog (see timer_clock)
        self.arrived: dict[int, int] = {}

    def saw_arrival(self, p: int, arrived_ms: int) -> None:
        """Records of ``p`` that arrived at ``arrived_ms`` were processed."""
        self.arrived[p] = max(arrived_ms, self.arrived.get(p, 0))

    async def run(self) -> None:
        """Fire due instants of every owned partition, forever (an app task)."""
        passes = 0
        while True:
            await asyncio.sleep(self.interval_s)
            passes += 1
            if self.reseeker.rereading:
                try:
                    await self.reseeker.reseek_stalled(self.ownership)
                except Exception:  # retried at the next pass
                    log.exception("seeking back stalled partitions failed; retrying")
            for p in list(self.ownership.owned):
                try:
                    await self.tick(p)
                except Exception:  # a Redis blip must not kill the timers: retry next pass
                    self.redis_errors.inc()
                    log.exception("timer pass of partition %d failed; retrying", p)
            if passes % GAUGE_EVERY_PASSES == 0:
                await self.refresh_gauges()

    def timer_clock(self, seg: PartitionSegmenter) -> int | None:
        """"now" for a timer pass of ``seg``'s partition: the wall clock when it is caught up
        (its stored offset at the consumer's high-water mark); while it works off a backlog,
        the clock of the newest records processed (:func:`engine_now`), so that time-driven
        changes never run ahead of events still waiting in Kafka; None (no pass) before the
        first fetch told how far the partition goes, or while nothing of a backlog is processed
        yet."""
        high = self.cursor.highwater(self.topic, seg.partition)
        if high is None:  # not fetched yet, or not assigned (any more)
            return None
        if seg.next_offset >= high:
            return self.clock.now_ms()
        arrived = self.arrived.get(seg.partition)
        return None if arrived is None else engine_now(self.clock.now_ms(), arrived)

    async def tick(self, p: int) -> None:
        """One timer pass of partition ``p`` (under its lock)."""
        async with self.ownership.locks[p]:
            seg = self.ownership.current(p)
            if seg is None:
                return
            now = self.timer_clock(seg)
            if now is None:
                return
            started = time.perf_counter()
            out = await seg.tick(now, limit=self.batch)
            if out.commit is not None:
                await self.publisher.publish_and_commit(seg, out, started)
