"""segstream's own Prometheus metrics, in a registry owned by one app instance.

The worker serves this registry on ``/metrics`` together with Faust's sensors
(``faust.sensors.prometheus.setup_prometheus_sensors(app, registry=...)``, names ``faust_*``).
One registry per :func:`stream.app.create_app` call, not prometheus-client's global one, so that
several apps (tests, benchmarks) can live in one process.

Agents count per batch in plain ints/dicts and add the totals here once per batch: a labelled
``inc()`` per event would cost more than the rest of the per-event work.

>>> m = IngestMetrics.create(CollectorRegistry())
>>> m.record_batch(records=2, valid_by_type={"page_view": 3}, invalid_by_code={"bad_json": 1},
...                bundle_sizes=[3], dead_letters=1, seconds=0.01)
>>> m.registry.get_sample_value("segstream_ingest_events_valid_total", {"type": "page_view"})
3.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

BUNDLE_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
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
