"""Partition ownership: which bundle partitions this worker owns, their locks and segmenters."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from state.store import StateStore
from stream.worker.agents.segmentation.running import Running
from stream.worker.segmenter import PartitionSegmenter

log = logging.getLogger(__name__)


class Ownership:
    """Owned partitions (claimed lazily when their first record arrives), one lock each, and
    the state-cache share of each. Whoever touches a partition's segmenter holds its lock."""

    def __init__(self, running: Running, store: Callable[[], StateStore], *, partitions: int,
                 state_cache_max: int) -> None:
        self.running = running
        self._store = store
        self.partitions = partitions
        self.state_cache_max = state_cache_max  # the worker's: each partition caches a share
        self.owned: dict[int, PartitionSegmenter] = {}
        self.locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        # partitions another worker claimed since ours: not ours again until Kafka assigns
        # them to us anew (re-claiming would fence the rightful owner in turn)
        self.lost: set[int] = set()
        self.cache_max = state_cache_max  # per owned partition: see on_assigned

    async def on_assigned(self, mine: set[int]) -> None:
        """Rebalance (``mine``: the bundle partitions assigned now): drop partitions we lost
        (their cache may be stale once another worker writes them); new ones are claimed lazily
        when their first record arrives."""
        self.lost -= mine  # assigned anew: ours to claim again
        self.cache_max = max(1, self.state_cache_max // max(1, len(mine)))
        for seg in self.owned.values():
            seg.cache_max = self.cache_max
        for p in list(self.owned):
            if p not in mine:
                async with self.locks[p]:
                    self.owned.pop(p, None)

    async def on_revoked(self, revoked: set[int]) -> None:
        """Rebalance: the bundle partitions ``revoked`` are not ours any more."""
        for p in revoked:
            async with self.locks[p]:
                self.owned.pop(p, None)

    def current(self, p: int) -> PartitionSegmenter | None:
        """The segmenter of ``p`` if we own it and are not fenced."""
        seg = self.owned.get(p)
        return None if seg is None or seg.fenced else seg

    async def segmenter(self, p: int) -> tuple[PartitionSegmenter, bool]:
        """``p``'s segmenter, claimed in Redis first if needed; True when just claimed (the
        caller holds the lock)."""
        seg = self.current(p)
        if seg is not None:
            return seg, False
        seg = await PartitionSegmenter.claim(p, self.running.engine, self._store(),
                                             partitions=self.partitions,
                                             cache_max=self.cache_max)
        self.owned[p] = seg
        log.info("claimed bundle partition %d (epoch %d, next offset %d)",
                 p, seg.epoch, seg.next_offset)
        return seg, True

    def lose(self, p: int) -> None:
        """Another worker claimed ``p`` (our commit was fenced): drop it until reassigned."""
        self.owned.pop(p, None)
        self.lost.add(p)
