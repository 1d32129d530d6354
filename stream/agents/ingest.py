"""Ingest agent: raw records -> validated events packed in bundles + dead letters.

Per batch of raw records (``stream.take_events(ingest_batch_records, within=bundle_linger)``):
validate every record (``schemas.validation.parse_record``), dead-letter each rejected event
with its code, message, original bytes and origin (topic, partition, offset, index), pack the
valid ones per bundle-topic partition (``stream.bundler``: routing id -> murmur2 partition,
arrival order kept), then produce every bundle to its explicit partition and every dead letter,
and await all the produce futures together (one event-loop wait per batch, not per record).

Commit invariant — a raw offset is committed only after every bundle holding its events and
every dead letter of its record are acknowledged by Kafka:

* Faust commits only *acked* offsets, and only up to the first offset that is not acked
  (``Consumer._new_offset`` stops at a gap). ``take_events()`` turns the stream's automatic
  acking off and acks the batch's events in a ``finally`` after the ``yield``, i.e. when the
  loop body has returned (verified in faust-streaming 0.15.3 ``streams.py``).
* The body returns only after ``asyncio.gather`` of all the batch's produce futures succeeded;
  the producer is idempotent with ``acks=all`` (:class:`stream.app.IdempotentProducer`), so an
  acknowledged bundle is durable and bundles of a partition keep their order.
* That same ``finally`` also runs when the body *raises* or is *cancelled* (agent restart on a
  rebalance, shutdown), and would then ack records whose bundles were never acknowledged. So:
  the flush runs as its own task, shielded: on cancellation the body first waits for the flush
  to finish (everything it needs is in memory), and only a successful flush lets the acks
  through. If producing fails (or anything else escapes the body), the batch's messages are
  *withheld* — marked acked on the ``Message`` without telling the consumer (``Message.ack``
  then skips them), so their offsets never enter the commit bookkeeping and the committed
  offset cannot pass them — and the app is crashed: the worker exits with an error and its
  restart re-reads from the last commit (at-least-once: bundles already produced are produced
  again; the segmentation worker drops duplicates by event id).

Per-event exceptions never reach this loop: ``RecordPacker`` dead-letters the record or event
with code ``internal_error`` and counts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import EventT, StreamT

from schemas.bundle import encode_bundle
from schemas.deadletter import encode_dead_letter
from schemas.partitioner import partition_for
from schemas.validation import Limits, parse_record, routing_id
from stream.bundler import BatchResult, Bundler, PartitionCache, RecordPacker, encode_within
from stream.settings import Settings
from stream.topics import Topics

if TYPE_CHECKING:
    from stream.app import SegstreamApp

log = logging.getLogger(__name__)

AGENT_NAME = "segstream.ingest"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_packer(settings: Settings) -> RecordPacker:
    """The record packer for *settings*, wired to the ``schemas`` functions."""
    limits = Limits(max_record_bytes=settings.max_record_bytes,
                    max_events_per_record=settings.max_events_per_record,
                    max_event_bytes=settings.max_event_bytes,
                    max_future_ms=settings.max_future_ms)
    bundler = Bundler(
        settings.bundle_partitions, settings.bundle_max_events, settings.bundle_max_bytes,
        PartitionCache(partition_for, settings.bundle_partitions))

    def parse(raw: bytes | None) -> tuple[list[dict[str, Any]], Sequence[Any]]:
        return parse_record(raw, _now_ms(), limits)

    return RecordPacker(bundler, parse=parse, routing_id=routing_id,
                        encode_dead_letter=encode_dead_letter, to_json=orjson.dumps,
                        now_ms=_now_ms, log=log.error)


class IngestAgent:
    """The ingest agent's state and batch handler (one instance per app)."""

    def __init__(self, app: SegstreamApp, settings: Settings, topics: Topics) -> None:
        self.app = app
        self.settings = settings
        self.topics = topics
        self.metrics = app.ingest_metrics
        self.packer = make_packer(settings)
        self._bundles_topic = settings.topic("bundles")
        self._deadletters_topic = settings.topic("deadletters")

    async def run(self, stream: StreamT[bytes]) -> None:
        """The Faust agent body: batch, pack, flush, repeat."""
        await self.topics.bundles.maybe_declare()
        await self.topics.deadletters.maybe_declare()
        within = self.settings.bundle_linger_ms / 1000.0
        async for events in stream.take_events(self.settings.ingest_batch_records, within=within):
            await self.handle(events)

    async def handle(self, events: Sequence[EventT]) -> None:
        """Pack one batch and return only once all its output is acknowledged (see module doc)."""
        started = time.perf_counter()
        packer = self.packer
        for event in events:
            m = event.message
            packer.add_record(m.value, m.topic, m.partition, m.offset)
        result = packer.finish()
        flush = asyncio.ensure_future(self._produce(result))
        try:
            sizes = await asyncio.shield(flush)
        except asyncio.CancelledError:
            # Cancelled mid-flush (rebalance, stop): finish the flush before take_events()
            # acks this batch on the way out.
            try:
                await flush
            except Exception as exc:
                await self._fail(events, exc)
            raise
        except BaseException as exc:
            await self._fail(events, exc)
            raise
        self.metrics.record_batch(
            records=result.records, valid_by_type=result.valid_by_type,
            invalid_by_code=result.invalid_by_code, bundle_sizes=sizes,
            dead_letters=len(result.dead_letters), seconds=time.perf_counter() - started)

    async def _produce(self, result: BatchResult) -> list[int]:
        """Send every bundle (explicit partition) and dead letter; await all acknowledgements.

        Returns the number of events of each bundle record produced.
        """
        send = self.app.producer.send
        max_bytes = self.settings.bundle_max_bytes
        futures = []
        sizes = []
        for bundle in result.bundles:
            for n_events, data in encode_within(bundle.events, max_bytes, encode_bundle):
                sizes.append(n_events)
                futures.append(await send(
                    self._bundles_topic, None, data, bundle.partition, None, None))
        topic = self._deadletters_topic
        futures.extend([await send(topic, None, letter, None, None, None)
                        for letter in result.dead_letters])
        await asyncio.gather(*futures)
        return sizes

    async def _fail(self, events: Sequence[EventT], exc: BaseException) -> None:
        """Withhold the batch's offsets from every future commit, then crash the app."""
        for event in events:
            event.message.acked = True  # Message.ack() now skips it: never enters _acked
        log.critical(
            "ingest batch of %d records could not be flushed (%r): offsets withheld, "
            "stopping the worker; a restart re-reads from the last commit", len(events), exc)
        await self.app.crash(exc)


def attach(app: SegstreamApp, settings: Settings, topics: Topics) -> None:
    """Define the ingest agent on *app* (reads ``topics.raw``)."""
    agent = IngestAgent(app, settings, topics)
    app.ingest = agent  # type: ignore[attr-defined]
    app.agent(topics.raw, name=AGENT_NAME)(agent.run)
