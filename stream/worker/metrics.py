"""segstream's own Prometheus metrics, in a registry owned by one app instance.

The worker serves this registry on ``/metrics`` together with Faust's sensors
(``faust.sensors.prometheus.setup_prometheus_sensors(app, registry=...)``, names ``faust_*``).
One registry per worker (:func:`stream.worker.bootstrap.build_worker`), not prometheus-client's
global one, so that several apps (tests, benchmarks) can live in one process.

Agents count per batch in plain ints/dicts and add the totals here once per batch: a labelled
``inc()`` per event would cost more than the rest of the per-event work.

>>> m = IngestMetrics.create(CollectorRegistry())
>>> m.record_batch(records=2, valid_by_type={"page_view": 3}, invalid_by_code={"bad_json": 1},
...                bundle_sizes=[3], dead_letters=1, seconds=0.01)
>>> m.registry.get_sample_value("segstream_ingest_events_valid_total", {"type": "page_view"})
3.0

:class:`PartitionLag` is the per-partition lag of both stages (``segstream_partition_lag``),
set every :data:`LAG_INTERVAL_S` by each agent from numbers the worker already holds: the
consumer's high-water mark (returned with every fetch response, no extra request) minus the
committed raw offset (ingest) or minus the next offset to apply stored in Redis (segmentation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from stream.worker.ports import PartitionCursor

log = logging.getLogger(__name__)

BUNDLE_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
#: How often, in seconds, each agent sets its stage's ``segstream_partition_lag``.
LAG_INTERVAL_S = 1.0
FLUSH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(frozen=True, slots=True)
class IngestMetrics:
    """Counters and histograms of the ingest agent."""

    registry: CollectorRegistry
    records: Counter
    valid: Counter
    invalid: Counter
    bundles: Counter
    bundle_events: Histogram
    dead_letters: Counter
    flush_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        """Register the ingest metrics in *registry*."""
        return cls(
            registry=registry,
            records=Counter("segstream_ingest_records", "Raw records consumed.",
                            registry=registry),
            valid=Counter("segstream_ingest_events_valid", "Valid events bundled, by type.",
                          ["type"], registry=registry),
            invalid=Counter("segstream_ingest_events_invalid",
                            "Rejected events (dead-lettered), by error code.", ["code"],
                            registry=registry),
            bundles=Counter("segstream_ingest_bundles", "Bundles produced and acknowledged.",
                            registry=registry),
            bundle_events=Histogram("segstream_ingest_bundle_events", "Events per bundle.",
                                    buckets=BUNDLE_SIZE_BUCKETS, registry=registry),
            dead_letters=Counter("segstream_ingest_dead_letters",
                                 "Dead letters produced and acknowledged.", registry=registry),
            flush_seconds=Histogram(
                "segstream_ingest_flush_seconds",
                "Time from the start of a batch's produce to the last acknowledgement.",
                buckets=FLUSH_SECONDS_BUCKETS, registry=registry),
        )

    def record_batch(self, *, records: int, valid_by_type: Mapping[str, int],
                     invalid_by_code: Mapping[str, int], bundle_sizes: Iterable[int],
                     dead_letters: int, seconds: float) -> None:
        """Add one acknowledged ingest batch's totals."""
        self.records.inc(records)
        for type_, n in valid_by_type.items():
            self.valid.labels(type_).inc(n)
        for code, n in invalid_by_code.items():
            self.invalid.labels(code).inc(n)
        n_bundles = 0
        for size in bundle_sizes:
            self.bundle_events.observe(size)
            n_bundles += 1
        self.bundles.inc(n_bundles)
        self.dead_letters.inc(dead_letters)
        self.flush_seconds.observe(seconds)


@dataclass(slots=True)
class PartitionLag:
    """``segstream_partition_lag{stage, partition}``: records of a partition not done yet.

    ``stage="ingest"``: raw-topic records beyond the consumer group's committed offset (read or
    not, their bundles are not all acknowledged yet). ``stage="segmentation"``: bundle-topic
    records beyond the offset applied in Redis. Only the partitions a worker is assigned are
    shown by that worker (a partition it loses disappears at the next update), so a sum over
    workers counts each partition once.

    >>> lag = PartitionLag.create(CollectorRegistry())
    >>> lag.update("ingest", {0: 5, 1: 0})
    >>> lag.update("ingest", {1: 2})  # partition 0 was revoked
    >>> value = lag.registry.get_sample_value
    >>> [value("segstream_partition_lag", {"stage": "ingest", "partition": p}) for p in "01"]
    [None, 2.0]
    """

    registry: CollectorRegistry
    gauge: Gauge
    shown: dict[str, set[int]] = field(default_factory=dict)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PartitionLag:
        """Register the lag gauge in *registry*."""
        return cls(registry, Gauge(
            "segstream_partition_lag",
            "Records of a partition not processed yet: raw records beyond the committed offset "
            "(stage=ingest), bundle records beyond the offset applied in Redis "
            "(stage=segmentation); partitions assigned to this worker only.",
            ("stage", "partition"), registry=registry))

    def update(self, stage: str, lags: Mapping[int, int]) -> None:
        """Set *stage*'s lag of each partition in *lags*; drop the partitions not in it."""
        shown = self.shown.setdefault(stage, set())
        for p in shown - set(lags):
            self.gauge.remove(stage, str(p))
        for p, n in lags.items():
            self.gauge.labels(stage, str(p)).set(max(0, n))
        shown.clear()
        shown.update(lags)


def partition_lags(cursor: PartitionCursor, topic: str,
                   done: Callable[[int], int | None]) -> dict[int, int]:
    """``partition -> high-water mark - done(partition)`` for the partitions of *topic* this
    worker is assigned, with the high-water mark the consumer got with its last fetch
    response (no request: cheap enough to run every few seconds). Partitions not fetched yet
    (no high-water mark) or with no known progress (``done`` gives None) are left out."""
    lags: dict[int, int] = {}
    for p in cursor.assigned(topic):
        high = cursor.highwater(topic, p)  # None: not fetched yet, or revoked since
        at = done(p)
        if high is not None and at is not None:
            lags[p] = max(0, high - at)
    return lags


async def report_lag_forever(report: Callable[[], Awaitable[None]]) -> None:
    """Run *report* every ``LAG_INTERVAL_S`` (an app task); a failure is logged, not fatal."""
    while True:
        await asyncio.sleep(LAG_INTERVAL_S)
        try:
            await report()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. Redis unreachable: the gauge keeps its last value
            log.warning("reporting the partition lag failed (%r); retrying", exc)
