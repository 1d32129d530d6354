"""segstream_partition_lag: the per-partition lag each agent reports (stream.worker.metrics)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any, cast

from faust.types import TP
from prometheus_client import CollectorRegistry

from stream.worker.faust_adapter import FaustCursor
from stream.worker.metrics import PartitionLag, partition_lags


class FakeConsumer:
    """What the cursor reads of Faust's consumer: assignment() and highwater(tp)."""

    def __init__(self, highwaters: dict[TP, int | None], revoked: set[TP] = frozenset()) -> None:
        self.highwaters = highwaters
        self.revoked = revoked
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)

    def assignment(self) -> set[TP]:
        return set(self.highwaters) | set(self.revoked)

    def highwater(self, tp: TP) -> int | None:
        assert tp not in self.revoked, "Partition is not assigned"  # as aiokafka does
        return self.highwaters[tp]


def app_with(consumer: FakeConsumer) -> FaustCursor:
    """The worker's cursor (stream.worker.faust_adapter) on the fake consumer."""
    return FaustCursor(cast(Any, SimpleNamespace(consumer=consumer)))


def test_lag_is_highwater_minus_progress_for_the_topic_only() -> None:
    consumer = FakeConsumer({TP("raw", 0): 120, TP("raw", 1): 50, TP("bundles", 0): 9,
                             TP("raw", 2): None})  # raw 2: not fetched yet
    done = {0: 100, 1: 50, 2: 0}
    assert partition_lags(app_with(consumer), "raw", done.get) == {0: 20, 1: 0}


def test_partitions_without_progress_or_revoked_meanwhile_are_left_out() -> None:
    consumer = FakeConsumer({TP("b", 0): 10, TP("b", 1): 10}, revoked={TP("b", 2)})
    assert partition_lags(app_with(consumer), "b", {0: 4}.get) == {0: 6}


def test_progress_beyond_the_cached_highwater_reads_as_zero() -> None:
    # the high-water mark is from the last fetch; Redis may already be further
    consumer = FakeConsumer({TP("b", 0): 10})
    assert partition_lags(app_with(consumer), "b", {0: 12}.get) == {0: 0}


def test_gauge_keeps_only_the_partitions_of_the_last_update_per_stage() -> None:
    lag = PartitionLag.create(CollectorRegistry())
    lag.update("ingest", {0: 5, 1: 7})
    lag.update("segmentation", {0: 3})
    lag.update("ingest", {1: 2})  # partition 0 revoked
    value = lag.registry.get_sample_value
    assert value("segstream_partition_lag", {"stage": "ingest", "partition": "0"}) is None
    assert value("segstream_partition_lag", {"stage": "ingest", "partition": "1"}) == 2
    assert value("segstream_partition_lag", {"stage": "segmentation", "partition": "0"}) == 3
