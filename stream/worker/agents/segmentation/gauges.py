"""Gauges of the segmentation agent: segment sizes, timer backlog and the partition lag."""

from __future__ import annotations

import logging
from collections.abc import Callable

from state.store import StateStore
from stream.worker.agents.segmentation.ownership import Ownership
from stream.worker.agents.segmentation.running import Running
from stream.worker.metrics import PartitionLag, partition_lags, report_lag_forever
from stream.worker.ports import Clock, PartitionCursor
from stream.worker.segment_metrics import SegmentMetrics

log = logging.getLogger(__name__)


class Gauges:
    """Refreshes ``segstream_segment_size``, the timer backlog and
    ``segstream_partition_lag{stage="segmentation"}`` from what the worker holds."""

    def __init__(self, ownership: Ownership, running: Running, store: Callable[[], StateStore],
                 *, cursor: PartitionCursor, clock: Clock, metrics: SegmentMetrics,
                 lag: PartitionLag, topic: str) -> None:
        self.ownership = ownership
        self.running = running
        self._store = store
        self.cursor = cursor
        self.clock = clock
        self.metrics = metrics
        self.lag = lag
        self.topic = topic  # the bundles topic

    async def refresh(self) -> None:
        """Segment sizes and timer backlog of the owned partitions (a few Redis reads)."""
        owned = sorted(self.ownership.owned)
        store = self._store()
        try:
            sizes = await store.sizes(owned)
            now = self.clock.now_ms()
            backlog = sum([await store.due_count(p, now) for p in owned])
        except Exception:
            self.metrics.redis_errors.inc()
            log.exception("reading segment sizes failed")
            return
        for name in self.running.engine.catalogue.names:
            self.metrics.segment_size.labels(name).set(sizes.get(name, 0))
        self.metrics.timer_backlog.set(backlog)

    async def report_lag(self) -> None:
        """``segstream_partition_lag{stage="segmentation"}``: bundle records beyond the offset
        applied in Redis, per assigned partition (read from Redis for one not claimed yet)."""
        stored: dict[int, int] = {}
        for p in self.cursor.assigned(self.topic):
            if self.ownership.current(p) is None:
                applied = await self._store().applied_offset(p)  # not claimed yet
                stored[p] = 0 if applied is None else applied + 1

        def done(p: int) -> int | None:
            seg = self.ownership.current(p)
            return seg.next_offset if seg is not None else stored.get(p)

        self.lag.update("segmentation", partition_lags(self.cursor, self.topic, done))

    async def lag_task(self) -> None:
        """An app task: :meth:`report_lag` every ``LAG_INTERVAL_S``."""
        await report_lag_forever(self.report_lag)
