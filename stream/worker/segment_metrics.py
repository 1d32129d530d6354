"""Prometheus metrics of the segmentation agent (registered in the app's own registry).

Updated once per processed batch or timer pass from the :class:`stream.worker.segmenter.Outcome`
totals, never per event.

>>> from prometheus_client import CollectorRegistry
>>> from state.store import CommitResult
>>> from stream.worker.segmenter import Outcome
>>> m = SegmentMetrics.create(CollectorRegistry())
>>> m.record(Outcome(events=3), CommitResult.APPLIED, engine_seconds=0.001,
...          commit_seconds=0.002, now_ms=0)
>>> m.registry.get_sample_value("segstream_segment_events_total")
3.0
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from state.store import CommitResult
from stream.worker.segmenter import Outcome

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class SegmentMetrics:
    """Counters, gauges and histograms of the segmentation agent and its timers."""

    registry: CollectorRegistry
    events: Counter
    changes: Counter
    late: Counter
    bad_records: Counter
    engine_failures: Counter
    redelivered: Counter
    handoffs: Counter
    forwarded: Counter
    erased: Counter
    fenced: Counter
    fenced_records: Counter
    seeks: Counter
    redis_errors: Counter
    definitions_errors: Counter
    cache_hits: Counter
    cache_misses: Counter
    event_to_change: Histogram
    timer_lateness: Histogram
    engine_seconds: Histogram
    commit_seconds: Histogram
    segment_size: Gauge
    timer_backlog: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SegmentMetrics:
        def c(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def h(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, buckets=buckets, registry=registry)

        return cls(
            registry=registry,
            events=c("segstream_segment_events_total", "Events run through the engine."),
            changes=c("segstream_changes_total", "Segment changes emitted.",
                      ("segment", "action")),
            late=c("segstream_late_events_total",
                   "Events refused as older than now - allowed lateness (dead-lettered)."),
            bad_records=c("segstream_bad_bundle_records_total",
                          "Bundle-topic records that could not be read (dead-lettered)."),
            engine_failures=c("segstream_engine_failures_total",
                              "Events or hand-offs the engine failed on (dead-lettered as "
                              "internal_error; the rest of the batch goes on)."),
            redelivered=c("segstream_redelivered_bundles_total",
                          "Bundle records skipped as already applied (after a restart)."),
            handoffs=c("segstream_alias_handoffs_total",
                       "Anonymous profiles handed to another partition's customer, by side.",
                       ("side",)),
            erased=c("segstream_erased_events_total",
                     "Events or hand-offs older than their customer's forget, dropped."),
            forwarded=c("segstream_forwarded_events_total",
                        "Events of linked anonymous ids forwarded to the customer's partition."),
            fenced=c("segstream_fenced_commits_total",
                     "Commits refused because another worker claimed the partition."),
            fenced_records=c("segstream_fenced_records_total",
                             "Bundle records dropped because another worker owns the partition."),
            seeks=c("segstream_offset_seeks_total",
                    "Seeks back to the stored offset (Kafka's commit ran ahead of Redis)."),
            redis_errors=c("segstream_redis_errors_total", "Failed Redis operations."),
            definitions_errors=c("segstream_definitions_errors_total",
                                 "Definitions documents refused or unreadable (old ones kept)."),
            cache_hits=c("segstream_state_cache_hits_total", "States found in the cache."),
            cache_misses=c("segstream_state_cache_misses_total", "States loaded from Redis."),
            event_to_change=h("segstream_event_to_change_seconds",
                              "Wall clock at publication minus event time, event-caused changes.",
                              LATENCY_BUCKETS),
            timer_lateness=h("segstream_timer_lateness_seconds",
                             "Wall clock at publication minus the due instant, timer changes.",
                             LATENCY_BUCKETS),
            engine_seconds=h("segstream_engine_batch_seconds",
                             "Engine time per partition batch or timer pass.", FAST_BUCKETS),
            commit_seconds=h("segstream_redis_commit_seconds",
                             "Latency of one partition commit to Redis.", FAST_BUCKETS),
            segment_size=Gauge("segstream_segment_size",
                               "Members per segment in the partitions this worker owns.",
                               ("segment",), registry=registry),
            timer_backlog=Gauge("segstream_timer_backlog",
                                "Customers due now or earlier, not yet advanced.",
                                registry=registry),
        )

    def record(self, out: Outcome, result: CommitResult, *, engine_seconds: float,
               commit_seconds: float, now_ms: int) -> None:
        """Add one batch's or timer pass's totals."""
        self.events.inc(out.events)
        self.late.inc(len(out.late))
        self.bad_records.inc(len(out.bad_records))
        self.engine_failures.inc(len(out.failed))
        self.redelivered.inc(out.duplicates_skipped)
        if out.handoffs_sent:
            self.handoffs.labels("sent").inc(out.handoffs_sent)
        if out.handoffs_received:
            self.handoffs.labels("received").inc(out.handoffs_received)
        self.forwarded.inc(out.forwarded)
        self.erased.inc(out.erased)
        self.engine_seconds.observe(engine_seconds)
        self.commit_seconds.observe(commit_seconds)
        if result is CommitResult.FENCED:
            self.fenced.inc()
        by_label: Tally[tuple[str, str]] = Tally()
        for ch in out.changes:
            by_label[ch.segment, ch.action] += 1
            hist = self.timer_lateness if ch.cause == "timer" else self.event_to_change
            hist.observe(max(0.0, (now_ms - ch.at) / 1000.0))
        for (segment, action), n in by_label.items():
            self.changes.labels(segment, action).inc(n)
