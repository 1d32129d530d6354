"""The ingest agent's commit invariant, driven directly (no broker: a fake producer and consumer).

A raw message may reach the consumer's commit bookkeeping (``Consumer.ack``) only once every
record its batch produced is acknowledged; a failed delivery withholds it forever and crashes
the app. The broker-level version of these checks is in test_ingest.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from faust.types.tuples import ConsumerMessage

from schemas.bundle import decode_bundle
from schemas.deadletter import decode_dead_letter
from schemas.partitioner import partition_for
from stream.settings import Settings
from stream.worker.bootstrap import build_worker

NOW = 1_795_000_000_000


class FakeConsumer:
    """Records the offsets that reached the commit bookkeeping."""

    def __init__(self) -> None:
        self.committable: list[int] = []

    def ack(self, message: ConsumerMessage) -> bool:
        self.committable.append(message.offset)
        return True


class FakeEvent:
    def __init__(self, message: ConsumerMessage, consumer: FakeConsumer) -> None:
        self.message = message
        self._consumer = consumer

    def ack(self) -> bool:
        return self.message.ack(self._consumer)  # type: ignore[arg-type]


class FakeProducer:
    """``send`` returns a future the test resolves; records what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None, bytes, asyncio.Future[Any]]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: float | None, headers: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, value, fut))
        return fut


def _event(i: int, customer: str) -> dict[str, Any]:
    return {"event_id": f"e{i}", "type": "page_view", "customer_id": customer,
            "timestamp": NOW, "properties": {"url": "/"}}


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Any:
    settings = Settings.build(topic_prefix="inv-", agents=("ingest",), bundle_partitions=4,
                              bundle_max_events=3, max_future_ms=10**13)
    worker = build_worker(settings)
    app = worker.app
    producer = FakeProducer()
    app.producer = producer  # type: ignore[assignment]
    crashes: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashes.append(exc)

    monkeypatch.setattr(app, "crash", crash)
    consumer = FakeConsumer()
    records = [orjson.dumps([_event(i * 10 + j, f"c{j}") for j in range(4)]) for i in range(3)]
    records.append(b"{broken")
    events = []
    for offset, value in enumerate(records):
        msg = ConsumerMessage("inv-segstream-events", 0, offset, 0.0, 0, None, None, value, None)
        msg.incref()  # the conductor's reference (one stream)
        events.append(FakeEvent(msg, consumer))
    return worker, producer, consumer, events, crashes


def _take_events_acks(events: list[FakeEvent]) -> None:
    """What take_events() does in its finally after the loop body."""
    for e in events:
        e.ack()


def test_offsets_committable_only_after_every_ack(setup: Any) -> None:
    asyncio.run(_offsets_committable_only_after_every_ack(setup))


async def _offsets_committable_only_after_every_ack(setup: Any) -> None:
    worker, producer, consumer, events, crashes = setup
    await worker.ingest.handle(events)
    _take_events_acks(events)
    await asyncio.sleep(0)
    assert consumer.committable == [], "acked before the output was acknowledged"

    bundles = [(p, decode_bundle(v)) for t, p, v, _ in producer.sent if t.endswith("bundles")]
    letters = [decode_dead_letter(v) for t, _, v, _ in producer.sent if t.endswith("letters")]
    assert sum(len(evs) for _, evs in bundles) == 12
    for p, evs in bundles:
        assert len(evs) <= 3
        assert {partition_for(e["customer_id"], 4) for e in evs} == {p}
    assert [(d.code, d.offset, d.raw) for d in letters] == [("unparsable", 3, b"{broken")]

    *first, last = [fut for *_, fut in producer.sent]
    for fut in first:
        fut.set_result(None)
    await asyncio.sleep(0.01)
    assert consumer.committable == [], "one record is still unacknowledged"
    last.set_result(None)
    await asyncio.sleep(0.01)
    assert sorted(consumer.committable) == [0, 1, 2, 3]
    assert crashes == []
    assert worker.registry.get_sample_value(
        "segstream_ingest_events_valid_total", {"type": "page_view"}) == 12.0


def test_failed_delivery_withholds_offsets_and_crashes(setup: Any) -> None:
    asyncio.run(_failed_delivery_withholds_offsets_and_crashes(setup))


async def _failed_delivery_withholds_offsets_and_crashes(setup: Any) -> None:
    worker, producer, consumer, events, crashes = setup
    await worker.ingest.handle(events)
    _take_events_acks(events)
    futures = [fut for *_, fut in producer.sent]
    futures[0].set_exception(RuntimeError("MessageSizeTooLarge"))
    for fut in futures[1:]:
        fut.set_result(None)
    await asyncio.sleep(0.01)
    assert [str(c) for c in crashes] == ["MessageSizeTooLarge"]
    for e in events:  # even a late extra ack cannot release them any more
        e.ack()
    assert consumer.committable == []


def test_cancel_while_sending_finishes_sending_first(setup: Any) -> None:
    asyncio.run(_cancel_while_sending_finishes_sending_first(setup))


async def _cancel_while_sending_finishes_sending_first(setup: Any) -> None:
    worker, producer, consumer, events, crashes = setup
    gate = asyncio.Event()
    send = producer.send

    async def slow_send(*args: Any) -> asyncio.Future[Any]:
        await gate.wait()
        return await send(*args)

    producer.send = slow_send  # type: ignore[method-assign]
    task = asyncio.ensure_future(worker.ingest.handle(events))
    await asyncio.sleep(0.01)
    task.cancel()  # e.g. the agent is restarted on a rebalance
    await asyncio.sleep(0.01)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    _take_events_acks(events)
    n_sent = len(producer.sent)
    assert n_sent > 1  # every record of the batch was still sent
    for *_, fut in producer.sent:
        fut.set_result(None)
    await asyncio.sleep(0.01)
    assert sorted(consumer.committable) == [0, 1, 2, 3]
    assert crashes == []
