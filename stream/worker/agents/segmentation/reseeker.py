"""Seek-back recovery: a partition whose records arrive beyond its stored offset is read again.

Kafka's committed offset is only a hint; the offset stored in Redis is the truth. When records
start beyond it (a crash between the ack and the Redis commit, or lost Redis writes) and the
missing records are still in Kafka, the consumer is sought back to them.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from stream.worker.agents.segmentation.ownership import Ownership
from stream.worker.ports import Clock, PartitionCursor
from stream.worker.segmenter import PartitionSegmenter

log = logging.getLogger(__name__)

RESEEK_S = 1.0  # while records keep arriving beyond the stored offset, seek again this often


class ReSeeker:
    """Which partitions are being read again, and the seeks that do it."""

    def __init__(self, cursor: PartitionCursor, clock: Clock, topic: str, seeks: Counter
                 ) -> None:
        self.cursor = cursor
        self.clock = clock
        self.topic = topic  # the bundles topic
        self.seeks = seeks  # segstream_offset_seeks_total
        self.rereading: dict[int, float] = {}  # partition -> when we last sought it

    async def reread(self, seg: PartitionSegmenter, records: list[tuple[int, bytes]]) -> bool:
        """``records`` start beyond ``seg``'s stored offset. While the missing records are
        still in Kafka, seek back to them and drop what arrives beyond them (it comes again):
        True when ``records`` must be dropped. Records truly gone (retention) are reported and
        skipped (False: process ``records``)."""
        p, first = seg.partition, records[0][0]
        earliest = await self.cursor.earliest(self.topic, p)
        if seg.next_offset < earliest:
            log.error("bundle partition %d: offsets %d..%d are gone from Kafka (retention); "
                      "continuing from %d", p, seg.next_offset, earliest - 1, first)
            return False
        # Records fetched before a seek still arrive and move Faust's read offset past the
        # target (it then drops the re-fetched ones): seek again while they keep coming (at
        # most every RESEEK_S), and the timer task seeks once more when they stopped coming.
        if self.clock.monotonic() - self.rereading.get(p, -RESEEK_S) >= RESEEK_S:
            await self.seek_back(seg, first)
        return True

    def caught_up(self, p: int) -> None:
        """``p``'s records follow its stored offset again."""
        self.rereading.pop(p, None)

    async def seek_back(self, seg: PartitionSegmenter, first: int | None) -> None:
        p = seg.partition
        log.warning("bundle partition %d: records from %s but the state is at %d; reading "
                    "them again", p, first if first is not None else "?", seg.next_offset)
        self.seeks.inc()
        self.rereading[p] = self.clock.monotonic()
        await self.cursor.seek(self.topic, p, seg.next_offset)

    async def reseek_stalled(self, ownership: Ownership) -> None:
        """Timer-task half of the re-read: a partition still behind its stored offset after
        RESEEK_S with nothing processed is sought again (the last seek may have been undone by
        records that were already fetched); one with nothing left to read is done."""
        for p, at in list(self.rereading.items()):
            if self.clock.monotonic() - at < RESEEK_S:
                continue
            async with ownership.locks[p]:
                seg = ownership.owned.get(p)
                if seg is None or p not in self.rereading:
                    self.rereading.pop(p, None)
                    continue
                end = await self.cursor.latest(self.topic, p)
                if seg.next_offset >= end:
                    self.rereading.pop(p, None)  # nothing beyond the state: caught up
                    continue
                await self.seek_back(seg, None)
