"""PartitionSegmenter (engine + store per partition) against the offline replay of the same events.

The store is the in-memory twin of the Redis store (same contract: tests/integration/
test_state_store.py runs both); the Kafka side is exercised by the integration tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.replay import replay
from processors.types import Change
from schemas.bundle import encode_bundle
from schemas.partitioner import partition_for
from schemas.validation import partition_key, validate_event
from state.codec import decode_state
from state.store import CommitResult, MemoryStore
from stream.tools.generate import GeneratorConfig, generate
from stream.worker.segmenter import Outcome, PartitionSegmenter

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "processors" / "catalogue.yaml"
FAR_FUTURE = 4_000_000_000_000


def canonical(cfg: GeneratorConfig) -> list[dict[str, Any]]:
    return [validate_event(ev, FAR_FUTURE) for ev in generate(cfg)]


def by_key(changes: list[Change]) -> dict[tuple[str, str], list[Change]]:
    out: dict[tuple[str, str], list[Change]] = defaultdict(list)
    for ch in changes:
        out[ch.customer_id, ch.segment].append(ch)
    return dict(out)


async def run_partitions(
    engine: Engine, events: list[dict[str, Any]], partitions: int, bundle: int, end: int
) -> tuple[list[Change], MemoryStore]:
    """Feed bundles of up to ``bundle`` events per partition, each spanning less than the
    allowed lateness (as the ingest linger keeps live bundles short); a bundle's clock is the
    latest event time in it. Records a segmenter forwards (alias hand-offs, linked visitors'
    events) are appended to the target partition's log and read right away, as a worker
    consuming that partition would."""
    span = engine.lateness // 2
    store = MemoryStore()
    segs = {p: await PartitionSegmenter.claim(p, engine, store, partitions=partitions)
            for p in range(partitions)}
    offsets = dict.fromkeys(range(partitions), 0)
    changes: list[Change] = []

    async def deliver(p: int, record: bytes, now: int) -> None:
        out = await segs[p].process([(offsets[p], record)], now)
        offsets[p] += 1
        changes.extend(out.changes)
        assert await segs[p].commit(out) is CommitResult.APPLIED
        for target, records in out.forwards.items():
            for forwarded in records:
                await deliver(target, forwarded, now)

    async def flush(p: int, batch: list[dict[str, Any]]) -> None:
        await deliver(p, encode_bundle(batch), max(ev["timestamp"] for ev in batch))

    pending: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        p = partition_for(partition_key(ev), partitions)
        if pending[p] and ev["timestamp"] - pending[p][0]["timestamp"] > span:
            await flush(p, pending.pop(p))
        pending[p].append(ev)
        if len(pending[p]) >= bundle:
            await flush(p, pending.pop(p))
    for p, batch in sorted(pending.items()):
        await flush(p, batch)
    for seg in segs.values():
        while (out := await seg.tick(end)).commit is not None:
            changes.extend(out.changes)
            await seg.commit(out)
    return changes, store


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(compile_catalogue(load_definitions(CATALOGUE)))


def test_single_partition_matches_replay_change_for_change(engine: Engine) -> None:
    """One partition, one event per bundle: the same inputs as replay, so the same changes
    per (customer, segment) — including aliases (same partition) and forgets."""
    cfg = GeneratorConfig(customers=60, events=1_500, days=20, seed=3, forget_share=0.05)
    events = canonical(cfg)
    end = max(ev["timestamp"] for ev in events)
    replayed: list[Change] = []
    expected = replay(Engine(engine.catalogue), events, until=end, on_change=replayed.append)
    got, store = asyncio.run(run_partitions(engine, events, 1, 1, end))
    assert by_key(got) == by_key(replayed)
    assert asyncio.run(store.sizes([0])) == {k: v for k, v in expected.sizes().items() if v}


def test_partitioned_bundles_give_the_replay_membership(engine: Engine) -> None:
    """Eight partitions, bundles of 50: the same changes and final membership as replay (known
    customers and anonymous-only visitors; cross-partition alias hand-off is not part of it)."""
    cfg = GeneratorConfig(customers=300, events=6_000, days=40, seed=11, anonymous_share=0.0)
    events = canonical(cfg)
    end = max(ev["timestamp"] for ev in events) + 200 * 86_400_000  # let time-only exits fire
    replayed: list[Change] = []
    expected = replay(Engine(engine.catalogue), events, until=end, on_change=replayed.append)
    got, store = asyncio.run(run_partitions(engine, events, 8, 50, end))
    assert by_key(got) == by_key(replayed)
    sizes = asyncio.run(store.sizes(list(range(8))))
    assert sizes == {k: v for k, v in expected.sizes().items() if v}
    for cid in list(expected.states)[:50]:
        p = partition_for(cid, 8)
        assert set(asyncio.run(store.segments_of(p, cid))) == expected.segments_of(cid)


def test_redelivery_is_skipped_and_a_crash_before_commit_reemits_identical_changes(
    engine: Engine,
) -> None:
    cfg = GeneratorConfig(customers=40, events=800, days=10, seed=5, anonymous_share=0.0)
    events = canonical(cfg)
    now = max(ev["timestamp"] for ev in events)
    records = [(i, encode_bundle(events[i * 100:(i + 1) * 100])) for i in range(8)]

    async def scenario() -> None:
        store = MemoryStore()
        first = await PartitionSegmenter.claim(0, engine, store, partitions=1)
        out1 = await first.process(records[:4], now)
        assert await first.commit(out1) is CommitResult.APPLIED
        crashed = await first.process(records[4:], now)  # produced, never committed
        # restart: a new owner reads the applied offset and state back from the store
        second = await PartitionSegmenter.claim(0, engine, store, partitions=1)
        assert second.next_offset == 4
        again = await second.process(records, now)  # Kafka re-delivers from an older commit
        assert again.duplicates_skipped == 4
        assert again.changes == crashed.changes  # same versions, same actions
        assert await second.commit(again) is CommitResult.APPLIED
        # the zombie's late commit is refused by the epoch fence
        assert await first.commit(crashed) is CommitResult.FENCED
        assert first.fenced and not first.cache

    asyncio.run(scenario())


def test_tick_fires_time_only_exits_with_no_new_event(engine: Engine) -> None:
    t0 = 1_793_491_200_000
    ev = {"event_id": "o1", "type": "email_open", "customer_id": "c1", "anonymous_id": None,
          "timestamp": t0, "source": "t", "schema_version": 1,
          "properties": {"campaign_id": "k"}}

    async def scenario() -> Outcome:
        store = MemoryStore()
        seg = await PartitionSegmenter.claim(0, engine, store, partitions=1)
        out = await seg.process([(0, encode_bundle([ev]))], t0)
        await seg.commit(out)
        assert "engaged_15d" in await store.segments_of(0, "c1")
        assert (await seg.tick(t0 + 15 * 86_400_000 - 1)).changes == []
        later = await seg.tick(t0 + 15 * 86_400_000)
        await seg.commit(later)
        assert "engaged_15d" not in await store.segments_of(0, "c1")
        return later

    later = asyncio.run(scenario())
    exits = [c for c in later.changes if c.segment == "engaged_15d"]
    assert [(c.action, c.at, c.cause) for c in exits] == [
        ("exit", t0 + 15 * 86_400_000, "timer")]


def test_bad_records_and_late_events_are_reported_not_dropped(engine: Engine) -> None:
    t0 = 1_793_491_200_000
    late = {"event_id": "old", "type": "page_view", "customer_id": "c1", "anonymous_id": None,
            "timestamp": t0 - 10 * 86_400_000, "source": "t", "schema_version": 1,
            "properties": {"url": "/"}}

    async def scenario() -> Outcome:
        seg = await PartitionSegmenter.claim(0, engine, MemoryStore(), partitions=1)
        return await seg.process([(0, b"not json"), (1, encode_bundle([late]))], t0)

    out = asyncio.run(scenario())
    assert out.bad_records and out.bad_records[0][0] == 0
    assert out.late == [late]
    assert out.offset == 1


def test_aliases_across_partitions_hand_profiles_over(engine: Engine) -> None:
    """Anonymous visitors who log in later: the alias goes to the visitor's partition, the
    profile travels in a hand-off record to the customer's partition; final membership equals
    replay's (which merges in one place)."""
    cfg = GeneratorConfig(customers=200, events=5_000, days=30, seed=21, anonymous_share=0.6)
    events = canonical(cfg)
    aliases = [ev for ev in events if ev["type"] == "alias"]
    crossing = [ev for ev in aliases if partition_for(ev["anonymous_id"], 8)
                != partition_for(ev["customer_id"], 8)]
    assert len(crossing) > 20, "the data must exercise the hand-off"
    end = max(ev["timestamp"] for ev in events) + 400 * 86_400_000
    expected = replay(Engine(engine.catalogue), events, until=end)
    got, store = asyncio.run(run_partitions(engine, events, 8, 40, end))
    assert asyncio.run(store.sizes(list(range(8)))) == {
        k: v for k, v in expected.sizes().items() if v}
    # every anonymous profile that was handed over left only its version counters behind
    for ev in crossing:
        p = partition_for(ev["anonymous_id"], 8)
        (blob,) = asyncio.run(store.load(p, [ev["anonymous_id"]]))
        if blob is not None:  # None: the visitor had no profile yet (the link is all)
            kept = decode_state(blob)
            assert kept.p_count == 0 and not kept.traits and kept.cart is None
            assert all(v % 2 == 0 for v in kept.all_versions().values())
        assert asyncio.run(store.aliases(p, [ev["anonymous_id"]])) == [ev["customer_id"]]
    # each (customer, segment) log is a clean alternation: no duplicate ENTER from a merge
    for (cid, seg), log in by_key(got).items():
        assert [c.version for c in log] == list(range(1, len(log) + 1)), (cid, seg)


def test_a_forgotten_customer_who_returns_continues_its_versions(engine: Engine) -> None:
    """forget keeps only the version counters: a new ENTER after it is version 3, never a
    second version 1 that a consumer deduplicating by version would drop."""
    t0 = 1_793_491_200_000

    def ev(eid: str, typ: str, ts: int, **props: Any) -> dict[str, Any]:
        return {"event_id": eid, "type": typ, "customer_id": "c1", "anonymous_id": None,
                "timestamp": ts, "source": "t", "schema_version": 1, "properties": props}

    async def scenario() -> list[Change]:
        store = MemoryStore()
        seg = await PartitionSegmenter.claim(0, engine, store, partitions=1)
        changes: list[Change] = []
        for i, e in enumerate([ev("o1", "email_open", t0, campaign_id="k"),
                               ev("f1", "forget", t0 + 1_000),
                               ev("o2", "email_open", t0 + 2_000, campaign_id="k")]):
            out = await seg.process([(i, encode_bundle([e]))], e["timestamp"])
            await seg.commit(out)
            changes += out.changes
        (blob,) = await store.load(0, ["c1"])
        assert blob is not None and not decode_state(blob).traits
        return changes

    log = [(c.action, c.version, c.cause) for c in asyncio.run(scenario())
           if c.segment == "engaged_15d"]
    assert log == [("enter", 1, "o1"), ("exit", 2, "forget:f1"), ("enter", 3, "o2")]


class PoisonEngine:
    """The real engine, except that it half-applies the events in ``poison`` and then raises
    (what an engine bug on an unforeseen input looks like to the segmenter). A wrapper, not a
    subclass: the mypyc-compiled Engine cannot be subclassed by interpreted code."""

    def __init__(self, base: Engine, poison: set[str]) -> None:
        self._engine = Engine(base.catalogue)
        self.poison = poison

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def apply(self, state: Any, event: dict[str, Any], now: int) -> Any:
        step = self._engine.apply(state, event, now)
        if event["event_id"] in self.poison:
            raise RuntimeError(f"engine bug on {event['event_id']}")
        return step


def test_an_event_the_engine_fails_on_is_dead_lettered_and_the_batch_goes_on(
    engine: Engine, caplog: pytest.LogCaptureFixture,
) -> None:
    """A poison event (the engine raises after half-updating the customer's state) must not
    stop the partition nor corrupt anyone's state: the batch runs again item by item from the
    stored states; the poison event comes out in ``failed`` (as a bundle record) and the rest
    gives exactly what processing it without the poison event gives."""
    cfg = GeneratorConfig(customers=30, events=900, days=10, seed=8, anonymous_share=0.0,
                          forget_share=0.0)
    events = canonical(cfg)
    now = max(ev["timestamp"] for ev in events)
    poison = {ev["event_id"] for ev in events[5::150] if ev["type"] not in ("alias", "forget")}
    assert len(poison) >= 4

    async def run(eng: Engine, evs: list[dict[str, Any]]) -> tuple[list[Change], MemoryStore,
                                                                     list[bytes]]:
        store = MemoryStore()
        seg = await PartitionSegmenter.claim(0, eng, store, partitions=1)
        changes: list[Change] = []
        failed: list[bytes] = []
        for i in range(0, len(evs), 100):
            out = await seg.process([(i // 100, encode_bundle(evs[i:i + 100]))], now)
            changes.extend(out.changes)
            failed.extend(record for record, _ in out.failed)
            assert all("engine bug" in reason for _, reason in out.failed)
            assert await seg.commit(out) is CommitResult.APPLIED
        return changes, store, failed

    clean_changes, clean_store, none = asyncio.run(
        run(engine, [ev for ev in events if ev["event_id"] not in poison]))
    got_changes, got_store, failed = asyncio.run(run(PoisonEngine(engine, poison), events))
    assert none == []
    assert by_key(got_changes) == by_key(clean_changes)
    assert sorted(orjson_loads(r)["events"][0]["event_id"] for r in failed) == sorted(poison)
    # each dead letter is logged with the event's ids (message, and fields for JSON logs)
    logged = [r for r in caplog.records if r.name == "stream.worker.segmenter"
              and r.levelno == logging.ERROR and "dead-lettering" in r.getMessage()]
    owner = {ev["event_id"]: ev["customer_id"] for ev in events}
    assert sorted(getattr(r, "event_id", None) for r in logged) == sorted(poison)
    assert all(getattr(r, "customer_id", None) == owner[r.event_id]  # type: ignore[attr-defined]
               and r.event_id in r.getMessage() for r in logged)  # type: ignore[attr-defined]
    ids = sorted({ev["customer_id"] or ev["anonymous_id"] for ev in events})
    clean = asyncio.run(clean_store.load(0, ids))
    got = asyncio.run(got_store.load(0, ids))
    assert got == clean  # the stored states, byte for byte


def orjson_loads(data: bytes) -> Any:
    import orjson  # noqa: PLC0415

    return orjson.loads(data)


def test_a_failed_handoff_is_dead_lettered_as_a_replayable_bundle_record() -> None:
    from schemas.bundle import HandoffRecord, decode_record, encode_handoff  # noqa: PLC0415
    from stream.worker.segmenter import _item_bytes  # noqa: PLC0415

    ev = {"event_id": "a1", "type": "alias", "customer_id": "c1", "anonymous_id": "v1",
          "timestamp": 1, "source": "t", "schema_version": 1, "properties": {}}
    record = decode_record(encode_handoff("c1", "v1", b"\x00state", ev))
    assert isinstance(record, HandoffRecord)
    assert decode_record(_item_bytes(record)) == record
