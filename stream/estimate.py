"""Segment sizes under other definitions, estimated from the stored states in Redis
(``segstream segments apply --dry-run``).

Every stored customer state is decoded and evaluated with the new definitions exactly as a
worker does when the definitions switch (:meth:`processors.engine.Engine.reevaluate` at the
wall clock, see ``PartitionSegmenter.reevaluate``), and the memberships that result are
counted. Nothing is written. The sizes today are the ``sizes`` hashes the workers keep.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from processors.engine import Engine
from processors.hashing import deployment_key
from processors.lang.ast import Catalogue
from processors.lang.compile import compile_catalogue
from state.codec import CodecError, decode_state
from state.redis_store import RedisStore
from stream.settings import Settings

SCAN_COUNT = 500


@dataclass
class SizeEstimate:
    """Per segment the members today and the estimated members under the new definitions."""

    today: dict[str, int]
    estimated: Counter[str] = field(default_factory=Counter)
    customers: int = 0  # stored states evaluated
    undecodable: int = 0  # states that could not be decoded (left out)


def engine_for(settings: Settings, catalogue: Catalogue) -> Engine:
    """The engine a worker with ``settings`` would run for ``catalogue``."""
    return Engine(compile_catalogue(catalogue),
                  deployment_key(settings.segmentation.id_hash_key))


async def estimate_sizes(store: RedisStore, settings: Settings, catalogue: Catalogue,
                         now_ms: int | None = None) -> SizeEstimate:
    """Sizes today and under ``catalogue`` over all bundle partitions (reads only)."""
    engine = engine_for(settings, catalogue)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    partitions = list(range(settings.topics.bundle_partitions))
    result = SizeEstimate(today=await store.sizes(partitions))
    cause = engine.definitions_cause
    names = {seg.name for seg in catalogue.segments}
    for p in partitions:
        seen: set[str] = set()  # an HSCAN may return an entry twice
        cursor = 0
        while True:
            cursor, rows = await store.scan_states(p, cursor, SCAN_COUNT)
            for cid, blob in rows:
                if cid in seen:
                    continue
                seen.add(cid)
                try:
                    state = decode_state(blob)
                except CodecError:
                    result.undecodable += 1
                    continue
                step = engine.reevaluate(state, now, cause)
                result.customers += 1
                if step.state is not None:
                    result.estimated.update(n for n in step.state.segments() if n in names)
            if cursor == 0:
                break
    return result
