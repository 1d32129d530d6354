"""The segmentation agent's parts, each with fakes (in-memory sink, fake cursor, fake clock):
what was sent, committed, sought, and in which order. The composed agent's batch handler:
tests/unit/test_segmentation_handler.py; on the real broker and Redis:
tests/integration/test_segmentation.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from schemas.deadletter import decode_dead_letter
from state.store import CommitResult, MemoryStore
from stream.definitions import DefinitionsDoc, file_catalogue
from stream.settings import Settings
from stream.worker.agents.segmentation.follower import DefinitionsFollower
from stream.worker.agents.segmentation.ownership import Ownership
from stream.worker.agents.segmentation.publisher import OutcomePublisher, dead_letters
from stream.worker.agents.segmentation.reseeker import RESEEK_S, ReSeeker
from stream.worker.agents.segmentation.running import Running, engine_now
from stream.worker.agents.segmentation.timers import TimerLoop
from stream.worker.segment_metrics import SegmentMetrics
from stream.worker.segmenter import Outcome

SETTINGS = Settings.build(topic_prefix="t-", bundle_partitions=4)
BUNDLES, DEADLETTERS = "t-segstream-bundles", "t-segstream-deadletters"


class FakeClock:
    def __init__(self, now_ms: int = 1_700_000_000_000, mono: float = 100.0) -> None:
        self.ms, self.mono = now_ms, mono

    def now_ms(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.mono


class FakeCursor:
    """Positions of the bundles topic; every seek logged."""

    def __init__(self, *, earliest: int = 0, latest: int = 100,
                 high: int | None = 100) -> None:
        self.first, self.end, self.high = earliest, latest, high
        self.seeks: list[tuple[str, int, int]] = []

    def assigned(self, topic: str) -> list[int]:
        return [0, 1]

    def highwater(self, topic: str, partition: int) -> int | None:
        return self.high

    def committed(self, topic: str, partition: int) -> int | None:
        return None

    async def earliest(self, topic: str, partition: int) -> int:
        return self.first

    async def latest(self, topic: str, partition: int) -> int:
        return self.end

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        self.seeks.append((topic, partition, offset))


class MemorySink:
    """Records what is sent; each acknowledgement lands a little later, logged."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, *,
                   partition: int | None = None, timestamp_s: float | None = None
                   ) -> Awaitable[None]:
        self.sent.append((topic, key, value, partition))
        self.log.append(("send", topic))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def ack() -> None:
            self.log.append(("ack", topic))
            fut.set_result(None)

        asyncio.get_running_loop().call_later(0.002, ack)
        return fut


@dataclass
class FakeSegmenter:
    """What the publisher and the re-seeker use of a PartitionSegmenter."""

    partition: int
    next_offset: int = 10
    log: list[Any] | None = None
    result: CommitResult = CommitResult.APPLIED
    cache_hits: int = 0
    cache_misses: int = 0
    fenced: bool = False

    async def commit(self, out: Outcome) -> CommitResult:
        assert self.log is not None
        self.log.append(("commit", self.partition))
        await asyncio.sleep(0.001)
        return self.result


def metrics() -> SegmentMetrics:
    return SegmentMetrics.create(CollectorRegistry())


def running() -> Running:
    return Running(file_catalogue(""), "")


# --- publisher --------------------------------------------------------------------------------
def test_dead_letters_carry_codes_reasons_and_origin() -> None:
    out = Outcome(offset=7, bad_records=[(5, "not a bundle")],
                  failed=[(b"item", "boom")],
                  late=[{"event_id": "e1", "timestamp": 1}])
    letters = [decode_dead_letter(x) for x in dead_letters(
        out, topic=BUNDLES, partition=3, lateness_ms=60_000, now_ms=1)]
    assert [(d.code, d.source_topic, d.partition, d.offset) for d in letters] == [
        ("too_late", BUNDLES, 3, 7), ("internal_error", BUNDLES, 3, 7),
        ("bad_bundle", BUNDLES, 3, 5)]
    assert "60000 ms" in letters[0].message and letters[1].raw == b"item"


def test_every_ack_of_a_wave_before_its_commits_and_one_wait() -> None:
    log: list[Any] = []
    sink = MemorySink(log)
    publisher = OutcomePublisher(SETTINGS, running(), sink=sink, clock=FakeClock(),
                                 metrics=metrics(), on_fenced=lambda p: None)
    segs = [FakeSegmenter(p, log=log) for p in (0, 1)]
    outs = [Outcome(offset=p, bad_records=[(p, "x"), (p + 1, "y")]) for p in (0, 1)]
    asyncio.run(publisher.publish_and_commit_all(
        [(seg, out, 0.0) for seg, out in zip(segs, outs, strict=True)]))
    kinds = [k for k, _ in log]
    assert kinds.count("send") == 4 and kinds.count("commit") == 2
    assert max(i for i, k in enumerate(kinds) if k == "ack") < kinds.index("commit")
    assert {topic for topic, *_ in sink.sent} == {DEADLETTERS}


def test_a_fenced_commit_hands_the_partition_back() -> None:
    lost: list[int] = []
    publisher = OutcomePublisher(SETTINGS, running(), sink=MemorySink([]), clock=FakeClock(),
                                 metrics=metrics(), on_fenced=lost.append)
    seg = FakeSegmenter(2, log=[], result=CommitResult.FENCED)
    asyncio.run(publisher.publish_and_commit_all([(seg, Outcome(offset=1), 0.0)]))
    assert lost == [2]


# --- re-seeker --------------------------------------------------------------------------------
def test_records_beyond_the_state_seek_back_at_most_every_reseek_interval() -> None:
    cursor, clock = FakeCursor(earliest=0), FakeClock()
    seeker = ReSeeker(cursor, clock, BUNDLES, metrics().seeks)
    seg: Any = FakeSegmenter(1, next_offset=10)
    beyond = [(15, b"r")]

    async def scenario() -> None:
        assert await seeker.reread(seg, beyond) is True  # dropped: they come again
        assert await seeker.reread(seg, beyond) is True  # too soon: no second seek
        clock.mono += RESEEK_S
        assert await seeker.reread(seg, beyond) is True

    asyncio.run(scenario())
    assert cursor.seeks == [(BUNDLES, 1, 10), (BUNDLES, 1, 10)]


def test_records_gone_by_retention_are_skipped_without_a_seek() -> None:
    cursor = FakeCursor(earliest=12)
    seeker = ReSeeker(cursor, FakeClock(), BUNDLES, metrics().seeks)
    assert asyncio.run(seeker.reread(FakeSegmenter(1, next_offset=10),  # type: ignore[arg-type]
                                     [(15, b"r")])) is False
    assert cursor.seeks == [] and seeker.rereading == {}


def test_a_stalled_reread_is_sought_again_and_a_caught_up_one_ends() -> None:
    cursor, clock = FakeCursor(latest=50), FakeClock()
    seeker = ReSeeker(cursor, clock, BUNDLES, metrics().seeks)
    ownership = Ownership(running(), MemoryStore, partitions=4, state_cache_max=100)
    seg: Any = FakeSegmenter(1, next_offset=10)
    ownership.owned[1] = seg

    async def scenario() -> None:
        await seeker.seek_back(seg, 15)
        await seeker.reseek_stalled(ownership)  # not stalled long enough
        clock.mono += RESEEK_S
        await seeker.reseek_stalled(ownership)  # still behind the end: seek again
        clock.mono += RESEEK_S
        seg.next_offset = 50
        await seeker.reseek_stalled(ownership)  # at the end: done

    asyncio.run(scenario())
    assert cursor.seeks == [(BUNDLES, 1, 10), (BUNDLES, 1, 10)]
    assert seeker.rereading == {}


# --- ownership --------------------------------------------------------------------------------
def test_claims_once_drops_unassigned_and_forgets_lost_when_reassigned() -> None:
    store = MemoryStore()
    ownership = Ownership(running(), lambda: store, partitions=4, state_cache_max=100)

    async def scenario() -> None:
        seg, claimed = await ownership.segmenter(0)
        assert claimed and seg.partition == 0
        assert (await ownership.segmenter(0)) == (seg, False)
        await ownership.segmenter(1)
        ownership.lose(1)
        assert 1 in ownership.lost and ownership.current(1) is None
        await ownership.on_assigned({1, 2})  # 0 went elsewhere; 1 is ours to claim again
        assert set(ownership.owned) == set() and ownership.lost == set()
        assert ownership.cache_max == 50  # the worker's cache, shared by its partitions

    asyncio.run(scenario())


# --- timers -----------------------------------------------------------------------------------
async def _nothing() -> None:
    return None


def timer_loop(cursor: FakeCursor, clock: FakeClock) -> TimerLoop:
    ownership = Ownership(running(), MemoryStore, partitions=4, state_cache_max=100)
    publisher = OutcomePublisher(SETTINGS, running(), sink=MemorySink([]), clock=clock,
                                 metrics=metrics(), on_fenced=ownership.lose)
    refresh: Callable[[], Awaitable[None]] = _nothing
    return TimerLoop(ownership, publisher, ReSeeker(cursor, clock, BUNDLES, metrics().seeks),
                     cursor, clock, topic=BUNDLES, interval_s=0.1, batch=10,
                     redis_errors=metrics().redis_errors, refresh_gauges=refresh)


def test_timer_clock_is_the_wall_caught_up_and_the_arrivals_in_a_backlog() -> None:
    clock = FakeClock()
    seg: Any = FakeSegmenter(0, next_offset=100)
    assert timer_loop(FakeCursor(high=None), clock).timer_clock(seg) is None  # not fetched
    assert timer_loop(FakeCursor(high=100), clock).timer_clock(seg) == clock.ms  # caught up
    behind = timer_loop(FakeCursor(high=500), clock)
    assert behind.timer_clock(seg) is None  # a backlog, nothing of it processed yet
    behind.saw_arrival(0, clock.ms - 3_600_000)
    behind.saw_arrival(0, clock.ms - 7_200_000)  # older: the newest arrival counts
    assert behind.timer_clock(seg) == engine_now(clock.ms, clock.ms - 3_600_000)


# --- definitions follower ---------------------------------------------------------------------
def test_follower_switches_to_documents_and_counts_unreadable_ones() -> None:
    switched: list[DefinitionsDoc] = []

    async def switch(doc: DefinitionsDoc) -> None:
        switched.append(doc)

    m = metrics()
    follower = DefinitionsFollower(SETTINGS, switch, m.definitions_errors)
    doc = DefinitionsDoc(version="v1", text="segments: []\n", published_at=1)
    asyncio.run(follower.apply(b"not a document"))
    asyncio.run(follower.apply(doc.encode()))
    assert [d.version for d in switched] == ["v1"]
    assert m.definitions_errors._value.get() == 1
