"""Ingest agent: raw records -> validated events packed in bundles + dead letters.

Per batch of raw records (``stream.take_events(ingest_batch_records, within=bundle_linger)``):
validate every record (``schemas.validation.parse_record``), dead-letter each rejected event
with its code, message, original bytes and origin (topic, partition, offset, index), pack the
valid ones per bundle-topic partition (``stream.worker.bundler``: routing id -> murmur2 partition,
arrival order kept), send every bundle to its explicit partition and every dead letter, and let
a task await all the delivery futures of the batch together, while the next batch is packed
(at most ``ingest_max_inflight_batches`` batches awaiting acknowledgement).

Commit invariant — a raw offset is committed only after every bundle holding its events and
every dead letter of its record are acknowledged by Kafka:

* Faust commits only offsets whose message was *finally acked* (``Message.refcount`` down to
  0, then ``Consumer.ack``), and only up to the first offset that is not (``Consumer._new_offset``
  stops at a gap), verified in faust-streaming 0.15.3. ``take_events()`` turns automatic acking
  off and acks the batch in a ``finally`` after the loop body — also when the body raises or is
  cancelled — so it cannot be trusted alone.
* The Faust calls below go through :class:`stream.worker.ports.BatchOffsets` (Faust's:
  :class:`stream.worker.faust_adapter.FaustBatchOffsets`).
* Before sending, the body takes one extra reference on each message of the batch
  (``Message.incref``); ``take_events()``' ack only drops its own. The reference is dropped
  (``Event.ack``) by the batch's confirmation task after ``asyncio.gather`` of all its delivery
  futures succeeded. The producer is idempotent with ``acks=all``
  (:class:`stream.worker.faust_adapter.IdempotentProducer`): an acknowledged bundle is durable,
  and bundles of one partition keep their order, also across pipelined batches (every send of
  a batch is issued, in order, before the body returns and the next batch is sent).
* Cancellation (agent restart on a rebalance, shutdown) while sending: the sending runs as its
  own shielded task and is finished first, so order and the confirmation still hold.
* A delivery failure (or anything else escaping the body): the batch's messages are
  *withheld* — flagged acked on the ``Message`` without telling the consumer, so
  ``Message.ack`` skips them and their offsets never enter the commit bookkeeping — and the app
  is crashed: the worker exits with an error status and its restart re-reads from the last
  commit (at-least-once: bundles already produced are produced again; the segmentation worker
  drops duplicates by event id). Later batches cannot move the commit past the gap either.
* On shutdown the held messages of unconfirmed batches are simply never acked: re-read later.

Lag: every ``LAG_INTERVAL_S`` a task sets ``segstream_partition_lag{stage="ingest"}`` of each
assigned raw partition to the consumer's high-water mark (from the last fetch response, no
extra request) minus the group's committed offset (:func:`partition_lags`).

Per-event exceptions never reach this loop: ``RecordPacker`` dead-letters the record or event
with code ``internal_error`` and counts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Sequence
from typing import Any

import orjson

from schemas.bundle import encode_bundle
from schemas.deadletter import encode_dead_letter
from schemas.partitioner import partition_for
from schemas.validation import Limits, parse_record, partition_key
from stream.eventtypes import LiveTypes
from stream.settings import Settings
from stream.worker.bundler import BatchResult, Bundler, PartitionCache, RecordPacker, encode_within
from stream.worker.metrics import IngestMetrics, PartitionLag, partition_lags, report_lag_forever
from stream.worker.ports import (
    Batch,
    BatchOffsets,
    Delivery,
    Fatal,
    PartitionCursor,
    RecordSink,
)

log = logging.getLogger(__name__)

AGENT_NAME = "segstream.ingest"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def arrival_s(events: Batch) -> float:
    """When a batch's events arrived: the newest raw record timestamp of the batch (the time
    the collector or the site's producer sent it), never later than now. Stamped on the bundles,
    it lets a backlog worked off late (a worker down for hours) be judged by when its events
    arrived, not by when they are processed: they are not refused as too late.

    >>> from types import SimpleNamespace as NS
    >>> arrival_s([NS(message=NS(timestamp=10.0)), NS(message=NS(timestamp=12.5))])
    12.5
    >>> arrival_s([NS(message=NS(timestamp=None))]) > 1.7e9  # no timestamp: now
    True
    """
    now = time.time()
    newest = max((e.message.timestamp or now for e in events), default=now)
    return min(newest, now)


def make_packer(settings: Settings, types: LiveTypes | None = None) -> RecordPacker:
    """The record packer for *settings*, wired to the ``schemas`` functions; events are
    validated against the built-in and the live custom ``types`` (default: the types file)."""
    limits = Limits(max_record_bytes=settings.ingest.max_record_bytes,
                    max_events_per_record=settings.ingest.max_events_per_record,
                    max_event_bytes=settings.ingest.max_event_bytes,
                    max_future_ms=settings.ingest.max_future_ms)
    bundler = Bundler(
        settings.topics.bundle_partitions, settings.ingest.bundle_max_events,
        settings.ingest.bundle_max_bytes,
        PartitionCache(partition_for, settings.topics.bundle_partitions))

    live = types if types is not None else LiveTypes.from_settings(settings)

    def parse(raw: bytes | None) -> tuple[list[dict[str, Any]], Sequence[Any]]:
        return parse_record(raw, _now_ms(), limits, live.schema)

    return RecordPacker(bundler, parse=parse, routing_id=partition_key,
                        encode_dead_letter=encode_dead_letter, to_json=orjson.dumps,
                        now_ms=_now_ms, log=log.error)


class IngestAgent:
    """The ingest agent's state and batch handler (one instance per worker)."""

    def __init__(self, settings: Settings, *, sink: RecordSink, offsets: BatchOffsets,
                 cursor: PartitionCursor, fatal: Fatal, metrics: IngestMetrics,
                 lag: PartitionLag, types: LiveTypes | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self.offsets = offsets
        self.cursor = cursor
        self.fatal = fatal
        self.metrics = metrics
        self.lag = lag
        self.packer = make_packer(settings, types)
        self._inflight: list[asyncio.Future[None]] = []  # batches sent, not yet acknowledged
        self._bundles_topic = settings.topic("bundles")
        self._deadletters_topic = settings.topic("deadletters")
        self._raw_topic = settings.topic("raw")

    async def report_lag(self) -> None:
        """``segstream_partition_lag{stage="ingest"}``: raw records beyond the committed offset
        (the consumer's record of its last commit; a group that never committed counts from 0)."""
        topic, cursor = self._raw_topic, self.cursor

        def done(p: int) -> int:
            return cursor.committed(topic, p) or 0

        self.lag.update("ingest", partition_lags(cursor, topic, done))

    async def lag_task(self) -> None:
        """An app task: :meth:`report_lag` every ``LAG_INTERVAL_S``."""
        await report_lag_forever(self.report_lag)

    async def run(self, batches: AsyncIterable[Batch]) -> None:
        """The agent body: pack, flush, repeat (``batches``: the raw topic's ``take_events``)."""
        async for events in batches:
            await self.handle(events)

    async def handle(self, events: Batch) -> None:
        """Pack one batch, send its output, and hand the acknowledgement wait to a task.

        Returns once every record of the batch is *sent* (in order) — not acknowledged: the
        batch's messages are held (one extra reference each) until :meth:`_confirm` has seen
        every acknowledgement; only then can their offsets be committed (see module doc).
        """
        started = time.perf_counter()
        packer = self.packer
        for event in events:
            m = event.message
            packer.add_record(m.value, m.topic, m.partition, m.offset)
        result = packer.finish()
        self.offsets.hold(events)
        sending = asyncio.ensure_future(self._send_all(result, arrival_s(events)))
        try:
            futures, sizes = await asyncio.shield(sending)
        except asyncio.CancelledError:
            # Cancelled while sending (rebalance, stop): finish sending, so that bundles of a
            # partition keep their order, and let the confirmation decide about the offsets.
            try:
                futures, sizes = await sending
            except Exception as exc:
                await self._fail(events, exc)
                raise
            self._confirm_later(events, result, futures, sizes, started)
            raise
        except BaseException as exc:
            await self._fail(events, exc)
            raise
        self._confirm_later(events, result, futures, sizes, started)
        while len(self._inflight) > self.settings.ingest.max_inflight_batches:
            await asyncio.wait([self._inflight[0]])  # bounded pipeline: oldest batch first

    async def _send_all(self, result: BatchResult, arrived_s: float
                        ) -> tuple[list[Delivery], list[int]]:
        """Send every bundle (explicit partition) and dead letter, in order; no waiting for acks.
        Bundles carry the batch's arrival time as their record timestamp (``arrived_s``, see
        :func:`arrival_s`): the segmentation agent measures lateness against it.

        Returns the delivery futures and the number of events of each bundle record.
        """
        send = self.sink.send
        max_bytes = self.settings.ingest.bundle_max_bytes
        futures = []
        sizes = []
        for bundle in result.bundles:
            for n_events, data in encode_within(bundle.events, max_bytes, encode_bundle):
                sizes.append(n_events)
                futures.append(await send(self._bundles_topic, None, data,
                                          partition=bundle.partition, timestamp_s=arrived_s))
        topic = self._deadletters_topic
        futures.extend([await send(topic, None, letter) for letter in result.dead_letters])
        return futures, sizes

    def _confirm_later(self, events: Batch, result: BatchResult, futures: list[Delivery],
                       sizes: list[int], started: float) -> None:
        task = asyncio.ensure_future(self._confirm(events, result, futures, sizes, started))
        self._inflight.append(task)
        task.add_done_callback(self._inflight.remove)

    async def _confirm(self, events: Batch, result: BatchResult, futures: list[Delivery],
                       sizes: list[int], started: float) -> None:
        """Await every acknowledgement of a batch, then release its messages for commit."""
        try:
            await asyncio.gather(*futures)
        except asyncio.CancelledError:
            return  # shutting down: the held messages are never acked, hence never committed
        except Exception as exc:
            await self._fail(events, exc)
            return
        self.offsets.release(events)
        self.metrics.record_batch(
            records=result.records, valid_by_type=result.valid_by_type,
            invalid_by_code=result.invalid_by_code, bundle_sizes=sizes,
            dead_letters=len(result.dead_letters), seconds=time.perf_counter() - started)

    async def _fail(self, events: Batch, exc: BaseException) -> None:
        """Withhold the batch's offsets from every future commit, then crash the app."""
        self.offsets.withhold(events)  # never committed, also once later batches are acked
        log.critical(
            "ingest batch of %d records could not be flushed (%r): offsets withheld, "
            "stopping the worker; a restart re-reads from the last commit", len(events), exc)
        await self.fatal.crash(exc)
