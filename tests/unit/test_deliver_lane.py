"""Delivery lanes with a scripted sender (no network): batching by count and by time, retries
with backoff and jitter, dead letters, order per customer across retries, and offsets that
wait for every destination (the Deliverer's dispatch with real lanes and tracker)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from schemas.changes import SegmentChange, encode_change
from stream.deliver.config import Destination
from stream.deliver.lane import Item, Lane, Outcome, backoff_s
from stream.deliver.metrics import DeliverMetrics
from stream.deliver.offsets import OffsetTracker, Ticket
from stream.deliver.runner import Deliverer
from stream.settings import Settings

OK = Outcome(True)
E503 = Outcome(False, True, "HTTP 503", "5xx")
TIMEOUT = Outcome(False, True, "no answer within 10 ms", "timeout")
E400 = Outcome(False, False, "HTTP 400", "4xx")


def dest(**kw: Any) -> Destination:
    base: dict[str, Any] = {"name": "d", "url": "http://h/x", "secret": "s", "max_changes": 3,
                            "max_wait_ms": 50, "max_tries": 5, "backoff_base_ms": 100,
                            "backoff_max_ms": 1000}
    return Destination(**{**base, **kw})


def change(customer: str, version: int, segment: str = "vip") -> bytes:
    return encode_change(SegmentChange(
        customer_id=customer, segment=segment, action="enter" if version % 2 else "exit",
        at=version, version=version, cause="e", definition_version="v"))


class Script:
    """A sender answering from a script (then OK), recording every body it was given."""

    def __init__(self, outcomes: Iterable[Outcome] = ()) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[bytes, int, float]] = []  # body, attempt, monotonic time
        self.gate: asyncio.Event | None = None

    async def __call__(self, d: Destination, body: bytes, attempt: int) -> Outcome:
        self.calls.append((body, attempt, time.monotonic()))
        if self.gate is not None:
            await self.gate.wait()
        return self.outcomes.pop(0) if self.outcomes else OK

    def delivered(self) -> list[dict[str, Any]]:
        """The changes of the bodies answered OK, in order (each body's last call)."""
        out: list[dict[str, Any]] = []
        for i, (body, _, _) in enumerate(self.calls):
            last = i + 1 == len(self.calls) or self.calls[i + 1][1] == 1
            if last:
                out.extend(orjson.loads(body)["changes"])
        return out


class Letters:
    def __init__(self) -> None:
        self.got: list[tuple[str, list[Item], str, int]] = []

    async def __call__(self, d: Destination, items: list[Item], reason: str, tries: int) -> None:
        self.got.append((d.name, items, reason, tries))


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, s: float) -> None:
        self.delays.append(s)


def lane_of(d: Destination, send: Script, letters: Letters | None = None,
            sleeps: Sleeps | None = None) -> tuple[Lane, DeliverMetrics]:
    metrics = DeliverMetrics.create()
    lane = Lane(d, send, letters or Letters(), metrics, rng=random.Random(7),
                sleep=sleeps or Sleeps())
    return lane, metrics


def items(n: int, customer: str = "c-1", partition: int = 0,
          tracker: OffsetTracker | None = None) -> list[Item]:
    out = []
    for v in range(1, n + 1):
        ticket = tracker.track(partition, v, 1) if tracker else Ticket(partition, v, 1)
        out.append(Item(ticket, customer, change(customer, v), int(time.time() * 1000)))
    return out


async def until(cond: Any) -> None:
    """Poll ``cond`` (a condition on the lanes' state) for at most 5 s."""
    async with asyncio.timeout(5.0):
        while not cond():  # noqa: ASYNC110 - polling plain state, no event to wait on
            await asyncio.sleep(0.005)


async def running(lane: Lane) -> asyncio.Task[None]:
    task = asyncio.create_task(lane.run())
    await asyncio.sleep(0)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_batch_leaves_when_full_or_when_its_oldest_change_waited_max_wait() -> None:
    async def go() -> None:
        send = Script()
        lane, metrics = lane_of(dest(max_changes=3, max_wait_ms=200), send)
        task = await running(lane)
        start = time.monotonic()
        for it in items(7):
            lane.put(it)
        await until(lambda: len(send.calls) == 3)
        await stop(task)
        sizes = [len(orjson.loads(b)["changes"]) for b, _, _ in send.calls]
        assert sizes == [3, 3, 1]
        assert send.calls[1][2] - start < 0.1  # full batches do not wait
        assert send.calls[2][2] - start >= 0.18  # the rest waits max_wait
        assert metrics.registry.get_sample_value(
            "segstream_deliver_changes_delivered_total", {"destination": "d"}) == 7
        assert metrics.registry.get_sample_value(
            "segstream_deliver_pending_changes", {"destination": "d"}) == 0
    asyncio.run(go())


def test_retried_with_backoff_then_delivered_as_the_same_body() -> None:
    async def go() -> None:
        send, sleeps = Script([E503, TIMEOUT, E503]), Sleeps()
        lane, metrics = lane_of(dest(max_wait_ms=0), send, sleeps=sleeps)
        batch = items(2)
        task = await running(lane)
        for it in batch:
            lane.put(it)
        await until(lambda: all(i.ticket.remaining == 0 for i in batch))
        await stop(task)
        assert [a for _, a, _ in send.calls] == [1, 2, 3, 4]
        assert len({b for b, _, _ in send.calls}) == 1  # the batch is retried as it is
        caps = [0.1, 0.2, 0.4]
        assert len(sleeps.delays) == 3
        assert all(0 <= d <= c for d, c in zip(sleeps.delays, caps, strict=True))
        value = metrics.registry.get_sample_value
        assert value("segstream_deliver_retries_total", {"destination": "d", "cause": "5xx"}) \
            == 2
        assert value("segstream_deliver_retries_total",
                     {"destination": "d", "cause": "timeout"}) == 1
        assert value("segstream_deliver_changes_delivered_total", {"destination": "d"}) == 2
        assert value("segstream_deliver_latency_seconds_count", {"destination": "d"}) == 2
    asyncio.run(go())


def test_a_4xx_is_dead_lettered_at_once_and_delivery_goes_on() -> None:
    async def go() -> None:
        send, letters = Script([E400]), Letters()
        lane, metrics = lane_of(dest(max_changes=2, max_wait_ms=0), send, letters)
        batch = items(4)
        task = await running(lane)
        for it in batch:
            lane.put(it)
        await until(lambda: all(i.ticket.remaining == 0 for i in batch))
        await stop(task)
        assert [(n, [i.ticket.offset for i in its], r, t) for n, its, r, t in letters.got] == \
            [("d", [1, 2], "HTTP 400", 1)]
        assert [a for _, a, _ in send.calls] == [1, 1]
        assert metrics.registry.get_sample_value(
            "segstream_deliver_changes_dead_lettered_total", {"destination": "d"}) == 2
    asyncio.run(go())


def test_out_of_tries_goes_to_the_dead_letter_with_the_last_reason() -> None:
    async def go() -> None:
        send, letters, sleeps = Script([E503] * 3), Letters(), Sleeps()
        lane, metrics = lane_of(dest(max_tries=3, max_wait_ms=0), send, letters, sleeps)
        (one,) = items(1)
        task = await running(lane)
        lane.put(one)
        await until(lambda: one.ticket.remaining == 0)
        await stop(task)
        assert len(send.calls) == 3 and len(sleeps.delays) == 2
        assert letters.got[0][2:] == ("gave up after 3 tries: HTTP 503", 3)
        assert metrics.registry.get_sample_value(
            "segstream_deliver_retries_total", {"destination": "d", "cause": "5xx"}) == 2
    asyncio.run(go())


@pytest.mark.parametrize(("retry_after", "cap_ms", "want"), [(2.0, 1000, 1.0), (2.0, 5000, 2.0)])
def test_retry_after_raises_the_delay_up_to_backoff_max(retry_after: float, cap_ms: int,
                                                       want: float) -> None:
    async def go() -> None:
        sleeps = Sleeps()
        send = Script([Outcome(False, True, "HTTP 429", "429", retry_after)])
        lane, _ = lane_of(dest(max_wait_ms=0, backoff_base_ms=1, backoff_max_ms=cap_ms), send,
                          sleeps=sleeps)
        (one,) = items(1)
        task = await running(lane)
        lane.put(one)
        await until(lambda: one.ticket.remaining == 0)
        await stop(task)
        assert sleeps.delays == [want]
    asyncio.run(go())


def test_order_per_customer_is_kept_across_retries_while_changes_keep_coming() -> None:
    async def go() -> None:
        send = Script([E503, TIMEOUT, E503, OK, E503, OK])
        lane, _ = lane_of(dest(max_changes=4, max_wait_ms=5), send)
        task = await running(lane)
        a, b = items(30, "c-a"), items(30, "c-b", partition=1)
        for x, y in zip(a, b, strict=True):
            lane.put(x)
            lane.put(y)
            await asyncio.sleep(0.001)
        await until(lambda: all(i.ticket.remaining == 0 for i in a + b))
        await stop(task)
        got = send.delivered()
        for cid in ("c-a", "c-b"):
            assert [c["version"] for c in got if c["customer_id"] == cid] == list(range(1, 31))
        assert sum(1 for _, attempt, _ in send.calls if attempt > 1) == 4
    asyncio.run(go())


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    rng = random.Random(3)
    draws = [backoff_s(4, 500, 60_000, rng) for _ in range(2000)]
    assert 0 <= min(draws) < 0.2 and 3.8 < max(draws) <= 4.0  # uniform(0, 0.5 * 2^3)
    assert abs(sum(draws) / len(draws) - 2.0) < 0.15
    assert max(backoff_s(40, 500, 60_000, rng) for _ in range(200)) <= 60.0


def test_offsets_wait_for_every_destination_and_skip_unwanted_changes() -> None:
    """Two destinations (one only for vip); the fast one delivers at once, the other is held:
    no offset past the first change the held one has not finished is committable."""
    async def go() -> None:
        deliverer = Deliverer(Settings(), [], DeliverMetrics.create())
        fast, held = Script(), Script()
        held.gate = asyncio.Event()
        metrics = deliverer.metrics
        deliverer.lanes = [
            Lane(dest(name="all", max_wait_ms=0), fast, Letters(), metrics),
            Lane(dest(name="vip", max_wait_ms=0, segments=frozenset({"vip"})), held,
                 Letters(), metrics)]
        tasks = [asyncio.create_task(lane.run()) for lane in deliverer.lanes]
        for off, seg in enumerate(("other", "vip", "other")):
            deliverer.dispatch(0, off, change("c-1", off + 1, seg), 0)
        deliverer.dispatch(1, 0, b"not json", 0)  # a bad record: skipped, counted, done
        await until(lambda: len(fast.calls) >= 1 and len(held.calls) == 1)
        await until(lambda: deliverer.lanes[0].pending() == 0)
        assert deliverer.tracker.ready() == {0: 1, 1: 1}  # offset 1 (vip) waits for "vip"
        held.gate.set()
        await until(lambda: deliverer.lanes[1].pending() == 0)
        assert deliverer.tracker.ready() == {0: 3}
        assert metrics.registry.get_sample_value("segstream_deliver_bad_records_total") == 1
        for t in tasks:
            await stop(t)
    asyncio.run(go())


def test_a_revocation_drops_the_queued_changes_of_the_revoked_partitions() -> None:
    async def go() -> None:
        lane, metrics = lane_of(dest(max_changes=100, max_wait_ms=10_000), Script())
        for it in items(3, partition=0) + items(2, partition=5):
            lane.put(it)
        assert lane.drop({5}) == 2
        assert [i.ticket.partition for _, i in lane.queue] == [0, 0, 0]
        assert metrics.registry.get_sample_value(
            "segstream_deliver_pending_changes", {"destination": "d"}) == 3
    asyncio.run(go())


class FakeConsumer:
    """What backpressure() uses of aiokafka's consumer."""

    def __init__(self) -> None:
        self.assigned = {0, 1}
        self.held: set[int] = set()

    def assignment(self) -> set[int]:
        return set(self.assigned)

    def paused(self) -> set[int]:
        return set(self.held)

    def pause(self, *tps: int) -> None:
        self.held |= set(tps)

    def resume(self, *tps: int) -> None:
        self.held -= set(tps)


def test_backpressure_holds_then_pauses_and_resumes_below_half(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        import stream.deliver.runner as runner  # noqa: PLC0415

        deliverer = Deliverer(Settings(), [], DeliverMetrics.create())
        consumer = FakeConsumer()
        deliverer.consumer = consumer  # type: ignore[assignment]
        lane, _ = lane_of(dest(max_changes=10, max_wait_ms=10_000), Script())
        deliverer.lanes = [lane]
        assert runner.queue_limit(lane.dest) == 1000
        for it in items(999):
            lane.put(it)
        assert deliverer.backpressure() is False  # below the limit: fetch
        lane.put(items(1)[0])
        assert deliverer.backpressure() is True  # full: hold (do not poll), not paused yet
        assert consumer.held == set()
        monkeypatch.setattr(runner, "HOLD_BEFORE_PAUSE_S", 0.0)
        assert deliverer.backpressure() is False  # held too long: paused, polled again
        assert consumer.held == {0, 1}
        for _ in range(400):
            lane.queue.popleft()
        assert deliverer.backpressure() is False and consumer.held == {0, 1}  # 600 >= 500
        for _ in range(101):
            lane.queue.popleft()
        assert deliverer.backpressure() is False and consumer.held == set()  # resumed
    asyncio.run(go())
