"""The segmentation agent's batch handler with a fake producer and an in-memory store: the order
of its effects (engine runs, sends, acknowledgements, commits) and its locks.

The handler runs the engine for every partition of a batch first, produces all their changes
and awaits the acknowledgements once, then writes the partitions' commits concurrently; every
partition's changes are acknowledged before its commit (at-least-once), a timer pass never runs
between a partition's engine run and its commit, and ``segment_batch_max_bytes`` still bounds
what is decoded at once. The real broker and Redis: tests/integration/test_segmentation.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from schemas.bundle import encode_bundle
from schemas.changes import decode_change
from schemas.partitioner import partition_for
from schemas.validation import validate_event
from state.store import Commit, CommitResult, MemoryStore
from stream.definitions import file_catalogue
from stream.settings import Settings
from stream.tools.generate import GeneratorConfig, generate
from stream.worker.agents.segmentation import SegmentationAgent
from stream.worker.metrics import PartitionLag
from stream.worker.ports import SystemClock
from stream.worker.segment_metrics import SegmentMetrics
from stream.worker.segmenter import Outcome, PartitionSegmenter

PARTITIONS = 8
Log = list[tuple[str, int]]


class EngineLog(list[tuple[str, int]]):
    """The shared log, and the bundle bytes of each engine run in order."""

    def __init__(self) -> None:
        super().__init__()
        self.run_bytes: list[int] = []


class FakeProducer:
    """``send`` returns a future acknowledged a few ms later; both logged with the partition
    of the change's customer (where the change was computed)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.acked = 0

    async def send(self, topic: str, key: Any, value: bytes, *, partition: Any = None,
                   timestamp_s: Any = None) -> asyncio.Future[None]:
        assert topic.endswith("segstream-changes"), topic  # these events make changes only
        p = partition_for(decode_change(value).customer_id, PARTITIONS)
        self.log.append(("send", p))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def ack() -> None:
            self.log.append(("ack", p))
            self.acked += 1
            fut.set_result(None)

        asyncio.get_running_loop().call_later(0.003, ack)
        return fut


class SlowStore(MemoryStore):
    """Commits take a few ms (a Redis round trip), logged at their start and end."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    async def commit(self, commit: Commit) -> CommitResult:
        self.log.append(("commit", commit.partition))
        await asyncio.sleep(0.005)
        result = await super().commit(commit)
        self.log.append(("committed", commit.partition))
        return result


class CaughtUp:
    """The cursor of a consumer at the end of every partition: timer passes use the wall
    clock."""

    def highwater(self, topic: str, partition: int) -> int:
        return 0


def make_agent(log: Log, **settings: Any) -> tuple[SegmentationAgent, SlowStore]:
    registry = CollectorRegistry()
    store = SlowStore(log)
    agent = SegmentationAgent(
        Settings.build(bundle_partitions=PARTITIONS, **settings), file_catalogue(""),
        sink=FakeProducer(log), cursor=CaughtUp(), clock=SystemClock(),  # type: ignore[arg-type]
        fatal=None, metrics=SegmentMetrics.create(registry),  # type: ignore[arg-type]
        lag=PartitionLag.create(registry), store=store)

    async def evaluated() -> None:  # the partitions' states are evaluated with these
        for p in range(PARTITIONS):  # definitions: no re-evaluation at the claim
            await store.mark_definitions(p, agent.engine.catalogue.version)

    asyncio.run(evaluated())
    return agent, store


def bundles(seed: int, per_partition: int = 1) -> dict[int, list[bytes]]:
    """Bundles of known customers' events (no alias, no anonymous id: no forwards), timed
    just before now, ``per_partition`` per partition that has events."""
    now = time.time_ns() // 1_000_000
    evs = [ev for ev in generate(GeneratorConfig(customers=40, events=400, days=1, seed=seed))
           if ev.get("customer_id") and not ev.get("anonymous_id") and ev["type"] != "alias"]
    t0, t1 = evs[0]["timestamp"], max(ev["timestamp"] for ev in evs)
    by_p: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for raw in evs:  # squeezed into the last 30 minutes: within the allowed lateness (1h)
        raw["timestamp"] = now - 1_000 - (t1 - raw["timestamp"]) * 1_800_000 // (t1 - t0 + 1)
        ev = validate_event(raw, now)
        by_p[partition_for(ev["customer_id"], PARTITIONS)].append(ev)
    out: dict[int, list[bytes]] = {}
    for p, part in by_p.items():
        step = -(-len(part) // per_partition)
        out[p] = [encode_bundle(part[i:i + step]) for i in range(0, len(part), step)]
    return out


def batch(records: dict[int, list[bytes]], first_offset: int = 0) -> list[Any]:
    """A take_events() batch: Faust events with the messages of ``records``."""
    now = time.time()
    return [SimpleNamespace(message=SimpleNamespace(partition=p, offset=first_offset + i,
                                                     value=v, timestamp=now))
            for p, values in records.items() for i, v in enumerate(values)]


@pytest.fixture
def engine_log(monkeypatch: pytest.MonkeyPatch) -> EngineLog:
    """The shared log; every engine run and timer pass is appended to it."""
    log = EngineLog()
    process, tick = PartitionSegmenter.process, PartitionSegmenter.tick

    async def logged_process(self: PartitionSegmenter, records: Any, now: int) -> Outcome:
        log.append(("engine", self.partition))
        log.run_bytes.append(sum(len(v) for _, v in records))
        return await process(self, records, now)

    async def logged_tick(self: PartitionSegmenter, now: int, limit: int = 1_000) -> Outcome:
        log.append(("tick", self.partition))
        return await tick(self, now, limit)

    monkeypatch.setattr(PartitionSegmenter, "process", logged_process)
    monkeypatch.setattr(PartitionSegmenter, "tick", logged_tick)
    return log


def first(log: Log, what: str, p: int) -> int:
    return log.index((what, p))


def last(log: Log, what: str, p: int) -> int:
    return max(i for i, e in enumerate(log) if e == (what, p))


def test_all_partitions_run_then_one_ack_wait_then_concurrent_commits(
        engine_log: EngineLog) -> None:
    log = engine_log
    agent, store = make_agent(log)
    records = bundles(seed=5)
    assert len(records) >= 4  # a batch spread over several partitions

    asyncio.run(agent.handle(batch(records)))

    parts = sorted(records)
    sent = {p for what, p in log if what == "send"}
    assert sent == set(parts)  # every partition made changes
    for p in parts:  # at-least-once: a partition's changes are acknowledged before its commit
        assert last(log, "ack", p) < first(log, "commit", p)
    # the latency fix: every engine run before the first send, every ack before the first
    # commit (one wait), and the commits overlap (gathered), not one after the other
    first_send = min(i for i, (what, _) in enumerate(log) if what == "send")
    assert max(i for i, (what, _) in enumerate(log) if what == "engine") < first_send
    assert (max(i for i, (what, _) in enumerate(log) if what == "ack")
            < min(i for i, (what, _) in enumerate(log) if what == "commit"))
    assert (max(i for i, (what, _) in enumerate(log) if what == "commit")
            < min(i for i, (what, _) in enumerate(log) if what == "committed"))
    for p in parts:
        assert asyncio.run(store.applied_offset(p)) == 0
        assert agent.owned[p].applied_offset == 0


def test_timer_passes_never_run_between_an_engine_run_and_its_commit(
        engine_log: EngineLog) -> None:
    log = engine_log
    agent, _ = make_agent(log)

    async def scenario() -> None:
        await agent.handle(batch(bundles(seed=5)))  # claims the partitions
        log.clear()
        done = asyncio.Event()

        async def timers() -> None:  # as the timer task, but as often as it can
            while not done.is_set():
                for p in list(agent.owned):
                    await agent.tick(p)
                await asyncio.sleep(0)

        async def handle() -> None:
            await asyncio.sleep(0.001)
            await agent.handle(batch(bundles(seed=6), first_offset=1))
            done.set()

        await asyncio.gather(timers(), handle())

    asyncio.run(scenario())
    engines = [p for what, p in log if what == "engine"]
    assert engines
    for p in engines:
        ran, committed = first(log, "engine", p), first(log, "committed", p)
        assert ("tick", p) not in log[ran:committed]
    assert any(what == "tick" for what, _ in log)  # the timers did run meanwhile


def test_segment_batch_max_bytes_still_bounds_what_is_decoded_at_once(
        engine_log: EngineLog) -> None:
    """With a bound of one (the biggest) bundle: the engine runs between two rounds of commits
    (a wave) decode at most that many bytes in all, and a backlog of 3 bundles per partition
    takes several waves; the partitions' offsets still reach the end."""
    log = engine_log
    records = bundles(seed=7, per_partition=3)
    biggest = max(len(v) for values in records.values() for v in values)
    agent, store = make_agent(log, segment_batch_max_bytes=biggest)

    asyncio.run(agent.handle(batch(records)))

    waves: list[int] = [0]  # bytes decoded per wave
    runs = iter(log.run_bytes)
    for what, _ in log:
        if what == "engine":
            waves[-1] += next(runs)
        elif what == "committed" and waves[-1]:
            waves.append(0)
    waves = [w for w in waves if w]
    assert max(waves) <= biggest
    assert len(waves) >= 3
    assert sum(waves) == sum(len(v) for values in records.values() for v in values)
    for p, values in records.items():
        assert asyncio.run(store.applied_offset(p)) == len(values) - 1
