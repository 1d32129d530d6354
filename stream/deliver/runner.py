"""The Kafka side of ``segstream deliver``: consume the changes topic, feed the lanes, commit.

One aiokafka consumer in the delivery group (``SEGSTREAM_DELIVER_GROUP``, auto-commit off)
reads the changes topic; each record goes to the lanes of the destinations whose segment
filter takes it, and its offset is committed only once every one of them has delivered or
dead-lettered it (:mod:`stream.deliver.offsets`): at-least-once. While a lane holds more
than its limit of changes (``10 * max_changes``, at least 1,000), consumption pauses (the
consumer is not polled, then paused after 30 s so it stays in its group) until every lane is
below half its limit: a receiver that is down costs Kafka lag, not memory.

On a revocation (rebalance), queued changes of the revoked partitions are dropped (the new
owner reads them again from the committed offset), the batches in flight that hold some are
waited for (at most :data:`REVOKE_WAIT_S`), and what is finished is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import TopicPartition

from schemas.changes import ChangeError, decode_change
from stream.connections import kafka_kwargs
from stream.deliver.config import Destination
from stream.deliver.lane import Item, Lane
from stream.deliver.metrics import DeliverMetrics
from stream.deliver.offsets import OffsetTracker
from stream.deliver.sender import HttpSender
from stream.settings import Settings

log = logging.getLogger("segstream.deliver")

REVOKE_WAIT_S = 20.0
SHUTDOWN_WAIT_S = 10.0
LAG_INTERVAL_S = 1.0
MIN_QUEUE_LIMIT = 1_000
HOLD_BEFORE_PAUSE_S = 30.0
COMMIT_INTERVAL_S = 0.2


def group_id(settings: Settings) -> str:
    return settings.topics.prefix + settings.deliver.group


def deadletters_topic(settings: Settings) -> str:
    return settings.topics.prefix + settings.deliver.deadletters_topic


def queue_limit(dest: Destination) -> int:
    """Changes a lane may hold before consumption pauses."""
    return max(MIN_QUEUE_LIMIT, 10 * dest.max_changes)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.deliverer.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


class Deliverer:
    """Consumer, lanes, dead-letter producer and commits of one ``segstream deliver``."""

    def __init__(self, settings: Settings, destinations: Sequence[Destination],
                 metrics: DeliverMetrics) -> None:
        self.settings = settings
        self.destinations = list(destinations)
        self.metrics = metrics
        self.topic = settings.topic("changes")
        self.tracker = OffsetTracker()
        self.committed: dict[int, int] = {}
        self.lanes: list[Lane] = []
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._paused = False
        self._held_since: float | None = None
        self._last_commit = 0.0

    # --- dead letters ------------------------------------------------------------------------
    async def dead_letter(self, dest: Destination, items: list[Item], reason: str,
                          tries: int) -> None:
        """One record per batch on the delivery dead-letter topic, keyed by the destination
        name; retried until Kafka acknowledges it (the offsets wait for it)."""
        value = orjson.dumps({
            "destination": dest.name, "reason": reason, "tries": tries,
            "failed_at": time.time_ns() // 1_000_000,
            "changes": [orjson.Fragment(i.value) for i in items]})
        delay = 0.5
        while True:
            try:
                assert self.producer is not None
                await self.producer.send_and_wait(deadletters_topic(self.settings), value,
                                                  key=dest.name.encode())
                return
            except KafkaError as exc:
                log.warning("writing a dead letter of %s failed (%s); retrying in %.1f s",
                            dest.name, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    # --- consuming ---------------------------------------------------------------------------
    def dispatch(self, partition: int, offset: int, value: bytes | None, timestamp: int) -> None:
        try:
            change = decode_change(value or b"")
        except ChangeError as err:
            self.metrics.bad_records.inc()
            log.warning("skipping record %d of partition %d: %s", offset, partition, err)
            self.tracker.track(partition, offset, 0)
            return
        lanes = [lane for lane in self.lanes if lane.dest.wants(change.segment)]
        ticket = self.tracker.track(partition, offset, len(lanes))
        if lanes:
            item = Item(ticket, change.customer_id, value or b"", timestamp)
            for lane in lanes:
                lane.put(item)

    async def commit(self) -> None:
        ready = self.tracker.ready()
        if not ready or self.consumer is None:
            return
        offsets = {TopicPartition(self.topic, p): o for p, o in ready.items()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:  # rebalanced: the new owner redelivers
            log.warning("committing %s failed (%s); those records will be delivered again",
                        ready, type(exc).__name__)
            return
        self.committed.update(ready)

    async def revoked(self, partitions: set[int]) -> None:
        if not partitions:
            return
        for lane in self.lanes:
            lane.drop(partitions)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REVOKE_WAIT_S):
                for lane in self.lanes:
                    while lane.sending(partitions):
                        await lane.wait_idle()
        await self.commit()
        self.tracker.forget(partitions)
        for p in partitions:
            self.committed.pop(p, None)
        log.info("revoked partitions %s", sorted(partitions))

    def backpressure(self) -> bool:
        """True: a lane is full, do not fetch now. A lane is full at its limit and until it
        is below half of it. For a short hold the consumer is simply not polled (aiokafka
        prefetches at most one response per partition); after :data:`HOLD_BEFORE_PAUSE_S`
        its partitions are paused and it is polled again (empty answers), so it stays in
        its group (``max_poll_interval_ms``). Pausing is not the first step because every
        resume costs about 100 ms before aiokafka fetches again."""
        assert self.consumer is not None
        held = self._held_since is not None
        full = any(lane.pending() >= (queue_limit(lane.dest) // 2 if held
                                      else queue_limit(lane.dest)) for lane in self.lanes)
        now = time.monotonic()
        if not full:
            if self._paused:
                self.consumer.resume(*self.consumer.paused())
                log.info("consumption resumed")
            self._paused = False
            self._held_since = None
            return False
        if self._held_since is None:
            self._held_since = now
        if self._paused or now - self._held_since >= HOLD_BEFORE_PAUSE_S:
            # every time: a rebalance may have assigned partitions since
            self.consumer.pause(*self.consumer.assignment())
            if not self._paused:
                log.info("a destination is behind: consumption paused")
            self._paused = True
            return False
        return True

    async def report_lag(self) -> None:
        assert self.consumer is not None
        lags: dict[int, int] = {}
        for tp in self.consumer.assignment():
            try:
                high = self.consumer.highwater(tp)
            except AssertionError:  # revoked since assignment()
                continue
            done = self.committed.get(tp.partition)
            if done is None:
                with contextlib.suppress(KafkaError):
                    done = await self.consumer.committed(tp)
                if done is not None:
                    self.committed[tp.partition] = done
            if high is not None and done is not None:
                lags[tp.partition] = high - done
        self.metrics.set_lag(lags)

    # --- the process -------------------------------------------------------------------------
    async def _connect(self, stop: asyncio.Event) -> bool:
        """Start the producer and the consumer, retrying while Kafka is unreachable; False if
        asked to stop first."""
        kafka = kafka_kwargs(self.settings)
        delay = 0.5
        while not stop.is_set():
            self.producer = AIOKafkaProducer(**kafka, acks="all", enable_idempotence=True,
                                             client_id="segstream-deliver")
            self.consumer = AIOKafkaConsumer(
                **kafka, group_id=group_id(self.settings), enable_auto_commit=False,
                auto_offset_reset=self.settings.kafka.auto_offset_reset,
                session_timeout_ms=self.settings.kafka.session_timeout_ms,
                client_id="segstream-deliver")
            try:
                await self._ensure_deadletters_topic(kafka)
                await self.producer.start()
                await self.consumer.start()
            except KafkaError as exc:
                await self.producer.stop()
                await self.consumer.stop()
                log.warning("Kafka at %s not reachable (%s); retrying in %.1f s",
                            self.settings.kafka.bootstrap, type(exc).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
                delay = min(10.0, delay * 2)
                continue
            return True
        return False

    async def _ensure_deadletters_topic(self, kafka: dict[str, Any]) -> None:
        topic = deadletters_topic(self.settings)
        admin = AIOKafkaAdminClient(**kafka)
        try:
            await admin.start()
            if topic not in await admin.list_topics():
                t = self.settings.topics
                await admin.create_topics([NewTopic(topic, t.deadletter_partitions,
                                                    t.replication_factor)])
                log.info("created topic %s", topic)
        except TopicAlreadyExistsError:
            pass
        except KafkaConnectionError:
            raise
        except KafkaError as exc:  # e.g. no right to create topics: provisioned elsewhere
            log.warning("could not check or create topic %s: %s", topic, exc)
        finally:
            await admin.close()

    async def run(self, stop: asyncio.Event) -> None:  # noqa: C901 - the one consume loop (fetch, route to lanes, pause/resume, commit) kept whole so its order reads in one place
        """Deliver until ``stop`` is set, then finish the batches in flight (bounded), commit
        and close."""
        if not await self._connect(stop):
            return
        assert self.consumer is not None and self.producer is not None
        consumer = self.consumer
        connector = aiohttp.TCPConnector(limit=0)
        session = aiohttp.ClientSession(connector=connector)
        sender = HttpSender(session)
        self.lanes = [Lane(d, sender, self.dead_letter, self.metrics) for d in self.destinations]
        tasks = [asyncio.create_task(lane.run(), name=f"lane {lane.dest.name}")
                 for lane in self.lanes]
        failed: list[BaseException] = []

        def lane_ended(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]
                stop.set()

        for task in tasks:
            task.add_done_callback(lane_ended)
        consumer.subscribe([self.topic], listener=_Rebalance(self))
        log.info("delivering %s to %d destination(s): %s", self.topic, len(self.lanes),
                 ", ".join(d.name for d in self.destinations))
        next_lag = 0.0
        try:
            while not stop.is_set():
                if self.backpressure():
                    await asyncio.sleep(0.005)  # let the lanes drain
                else:
                    batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                    for tp, records in batches.items():
                        for r in records:
                            self.dispatch(tp.partition, r.offset, r.value, r.timestamp)
                if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                    await self.commit()
                    self._last_commit = time.monotonic()
                if time.monotonic() >= next_lag:
                    await self.report_lag()
                    next_lag = time.monotonic() + LAG_INTERVAL_S
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_WAIT_S):
                    for lane in self.lanes:
                        await lane.wait_idle()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.commit()
            await consumer.stop()
            await self.producer.stop()
            await session.close()
        if failed:
            raise failed[0]
