"""Prometheus metrics of ``segstream deliver`` (served on its own ``/metrics``).

One registry per :class:`DeliverMetrics` (not prometheus-client's global one), as in
``stream.metrics``, so tests and benchmarks can hold several. Counts are of *changes* (records
of the changes topic), not of HTTP requests; ``destination`` is the name in the file.

>>> m = DeliverMetrics.create(CollectorRegistry())
>>> m.delivered.labels("crm").inc(3)
>>> m.registry.get_sample_value("segstream_deliver_changes_delivered_total",
...                             {"destination": "crm"})
3.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.process_metrics import register_process_metrics

#: Seconds from the change record's Kafka timestamp to the 2xx answer.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                   900.0)


@dataclass(slots=True)
class DeliverMetrics:
    """Counters, histogram and gauges of the delivery process."""

    registry: CollectorRegistry
    delivered: Counter
    dead_lettered: Counter
    retries: Counter
    latency: Histogram
    pending: Gauge
    lag: Gauge
    bad_records: Counter
    lag_shown: set[int] = field(default_factory=set)

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> DeliverMetrics:
        if registry is None:  # the process's own registry: with process_* and python_*
            registry = CollectorRegistry()
            register_process_metrics(registry)
        return cls(
            registry=registry,
            delivered=Counter(
                "segstream_deliver_changes_delivered",
                "Changes a destination answered 2xx for.", ["destination"], registry=registry),
            dead_lettered=Counter(
                "segstream_deliver_changes_dead_lettered",
                "Changes written to the delivery dead-letter topic (refused with a 4xx, or "
                "max_tries failed attempts).", ["destination"], registry=registry),
            retries=Counter(
                "segstream_deliver_retries",
                "Failed attempts that were retried, by cause (timeout, connection, 408, 429, "
                "5xx); counted per request, not per change.", ["destination", "cause"],
                registry=registry),
            latency=Histogram(
                "segstream_deliver_latency_seconds",
                "From the change record's Kafka timestamp (its publication) to the 2xx "
                "answer of the destination.", ["destination"], buckets=LATENCY_BUCKETS,
                registry=registry),
            pending=Gauge(
                "segstream_deliver_pending_changes",
                "Changes consumed for a destination and not yet delivered or dead-lettered "
                "(queued or in the request in flight).", ["destination"], registry=registry),
            lag=Gauge(
                "segstream_deliver_consumer_lag",
                "Records of a changes-topic partition beyond the offset committed by the "
                "delivery group (partitions assigned to this process only).", ["partition"],
                registry=registry),
            bad_records=Counter(
                "segstream_deliver_bad_records",
                "Records of the changes topic that are not segment changes (skipped).",
                registry=registry),
        )

    def set_lag(self, lags: Mapping[int, int]) -> None:
        """Set the lag of each partition in ``lags``; drop the partitions not in it."""
        for p in self.lag_shown - set(lags):
            self.lag.remove(str(p))
        for p, n in lags.items():
            self.lag.labels(str(p)).set(max(0, n))
        self.lag_shown = set(lags)
