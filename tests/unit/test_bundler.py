"""Bundler: every event exactly once, on its routing id's partition, in order, within limits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.worker.bundler import Bundle, Bundler, PartitionCache, RecordPacker, encode_within


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
    decoded = [e for _, p in parts for e in json.loads(p)]
    assert decoded == events  # order kept, nothing lost or duplicated
    for n, p in parts:
        assert n == len(json.loads(p))
        assert len(p) <= limit or n == 1
    if len(_encode(events)) <= limit:
        assert len(parts) == 1


# --- RecordPacker: validation results -> bundles + dead letters --------------------------------

class _Rej(NamedTuple):
    index: int | None
    code: str
    message: str
    raw: bytes


def _fake_parse(value: bytes | None) -> tuple[list[dict[str, Any]], list[_Rej]]:
    """Records are JSON arrays; an element without "rid" is rejected, "boom" crashes."""
    if value == b"boom":
        raise RuntimeError("validator bug")
    items = json.loads(value or b"[]")
    valid = [e for e in items if "rid" in e]
    rejected = [_Rej(i, "missing_routing_id", "no rid", json.dumps(e).encode())
                for i, e in enumerate(items) if "rid" not in e]
    return valid, rejected


def _rid(event: dict[str, Any]) -> str:
    if event["rid"] == "explode":
        raise KeyError("routing")
    return str(event["rid"])


def _packer(n: int = 3, max_events: int = 2) -> RecordPacker:
    return RecordPacker(
        Bundler(n, max_events, 10_000, PartitionCache(_partition, n)),
        parse=_fake_parse, routing_id=_rid,
        encode_dead_letter=lambda *fields: json.dumps(
            [f.decode() if isinstance(f, bytes) else f for f in fields]).encode(),
        to_json=lambda e: json.dumps(e).encode(), now_ms=lambda: 42, log=lambda *a: None)


def test_packer_splits_valid_and_rejected_with_origin() -> None:
    packer = _packer()
    packer.add_record(json.dumps([{"rid": "a", "type": "t1"}, {"x": 1},
                                  {"rid": "b", "type": "t2"}]).encode(), "raw", 3, 17)
    packer.add_record(json.dumps([{"rid": "a", "type": "t1"}]).encode(), "raw", 1, 5)
    result = packer.finish()
    assert result.records == 2
    assert result.valid_by_type == {"t1": 2, "t2": 1}
    assert result.invalid_by_code == {"missing_routing_id": 1}
    assert [json.loads(d) for d in result.dead_letters] == [
        ["missing_routing_id", "no rid", '{"x": 1}', "raw", 3, 17, 1, 42]]
    by_partition = {b.partition: [e["rid"] for e in b.events] for b in result.bundles}
    assert by_partition == {_partition("a", 3): ["a", "a"], _partition("b", 3): ["b"]}
    assert packer.finish().records == 0  # reset after finish


def test_packer_survives_validator_and_packing_failures() -> None:
    packer = _packer()
    packer.add_record(b"boom", "raw", 0, 1)
    packer.add_record(json.dumps([{"rid": "explode", "type": "t"}, {"rid": "ok", "type": "t"}])
                      .encode(), "raw", 0, 2)
    packer.add_record(None, "raw", 0, 3)  # a tombstone: the (fake) validator sees None
    result = packer.finish()
    assert result.invalid_by_code == {"internal_error": 2}
    letters = [json.loads(d) for d in result.dead_letters]
    assert letters[0][:3] == ["internal_error", "validator failed: RuntimeError('validator bug')",
                              "boom"]
    assert letters[1][0] == "internal_error" and letters[1][2] == '{"rid": "explode", "type": "t"}'
    assert [e["rid"] for b in result.bundles for e in b.events] == ["ok"]
    assert result.valid_by_type == {"t": 1}
