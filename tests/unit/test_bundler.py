"""Bundler: every event exactly once, on its routing id's partition, in order, within limits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.bundler import Bundle, Bundler, PartitionCache, encode_within


def _partition(rid: str, n: int) -> int:
    return sum(rid.encode()) % n


def _collect(bundler: Bundler, items: Sequence[tuple[str, int]], drain_every: int) -> list[Bundle]:
    """Feed (routing id, size) items; take ready bundles as the agent does; drain at the end."""
    out: list[Bundle] = []
    for i, (rid, size) in enumerate(items):
        bundler.add({"seq": i, "rid": rid}, rid, size)
        if drain_every and i % drain_every == drain_every - 1:
            out += bundler.drain()
        else:
            out += bundler.take_ready()
    return out + bundler.drain()


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.tuples(st.sampled_from(["a", "b", "cc", "dd", "eee", "f1", "zz9"]),
                             st.integers(1, 400)), max_size=300),
    num_partitions=st.integers(1, 5),
    max_events=st.integers(1, 20),
    max_bytes=st.integers(1, 2000),
    drain_every=st.sampled_from([0, 1, 7, 50]),
)
def test_packing_invariants(items: list[tuple[str, int]], num_partitions: int, max_events: int,
                            max_bytes: int, drain_every: int) -> None:
    bundler = Bundler(num_partitions, max_events, max_bytes,
                      PartitionCache(_partition, num_partitions))
    bundles = _collect(bundler, items, drain_every)

    seqs = [e["seq"] for b in bundles for e in b.events]
    assert sorted(seqs) == list(range(len(items)))  # every event exactly once
    assert bundler.pending_events == 0
    last_seq_per_partition: dict[int, int] = {}
    for b in bundles:
        assert b.events, "no empty bundle"
        assert len(b.events) <= max_events
        assert b.estimated_bytes == sum(items[e["seq"]][1] for e in b.events)
        assert b.estimated_bytes <= max_bytes or len(b.events) == 1
        for e in b.events:
            assert _partition(e["rid"], num_partitions) == b.partition
            # arrival order within a partition (hence within a routing id), across bundles
            assert e["seq"] > last_seq_per_partition.get(b.partition, -1)
            last_seq_per_partition[b.partition] = e["seq"]


def test_count_limit_closes_bundle_immediately() -> None:
    bundler = Bundler(1, 3, 10_000, lambda rid: 0)
    for i in range(7):
        bundler.add({"i": i}, "x", 1)
    ready = bundler.take_ready()
    assert [[e["i"] for e in b.events] for b in ready] == [[0, 1, 2], [3, 4, 5]]
    assert [[e["i"] for e in b.events] for b in bundler.drain()] == [[6]]
    assert bundler.drain() == []


def test_byte_limit_closes_before_overflow() -> None:
    bundler = Bundler(1, 100, 250, lambda rid: 0)
    for size in (100, 100, 100, 300, 10):
        bundler.add({"size": size}, "x", size)
    got = [[e["size"] for e in b.events] for b in bundler.drain()]
    assert got == [[100, 100], [100], [300], [10]]


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        Bundler(0, 1, 1, lambda rid: 0)


def test_partition_cache_is_bounded_and_consistent() -> None:
    calls: list[str] = []

    def part(rid: str, n: int) -> int:
        calls.append(rid)
        return _partition(rid, n)

    cache = PartitionCache(part, 7, max_entries=3)
    rids = [f"c{i // 5}" for i in range(50)]  # bursts of one customer, more ids than slots
    assert [cache(r) for r in rids] == [_partition(r, 7) for r in rids]
    assert len(calls) == 10  # one miss per customer


def _encode(events: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps(list(events)).encode()


@given(n=st.integers(1, 60), width=st.integers(1, 200), limit=st.integers(50, 3000))
def test_encode_within_splits_only_when_needed(n: int, width: int, limit: int) -> None:
    events = [{"i": i, "pad": "x" * width} for i in range(n)]
    parts = encode_within(events, limit, _encode)
    decoded = [e for p in parts for e in json.loads(p)]
    assert decoded == events  # order kept, nothing lost or duplicated
    for p in parts:
        assert len(p) <= limit or len(json.loads(p)) == 1
    if len(_encode(events)) <= limit:
        assert len(parts) == 1
