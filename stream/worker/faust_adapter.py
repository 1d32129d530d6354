"""The one module that touches Faust's internals; everything else sees :mod:`stream.worker.ports`.

Each use of a private Faust (or aiokafka-through-Faust) detail below is marked ``FAUST
INTERNAL`` and was checked against faust-streaming :data:`FAUST_CHECKED` (the version pinned in
pyproject.toml). tests/unit/test_faust_adapter.py fails loudly when one of them disappears or
changes meaning, so an upgrade cannot break the worker silently: re-check each marked use, then
bump :data:`FAUST_CHECKED` with the pin.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiohttp import web
from faust import Stream
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from faust.types import TP, EventT, ProducerT, StreamT, TopicT

from stream.settings import Settings, TopicRole
from stream.topics import topic_specs
from stream.worker.ports import Batch, Delivery

log = logging.getLogger(__name__)

#: The faust-streaming version every FAUST INTERNAL use below was checked against.
FAUST_CHECKED = "0.15.3"


def check_version() -> None:
    """Warn when the installed Faust is not the one the internals were checked against."""
    installed = getattr(faust, "__version__", "?")
    if installed != FAUST_CHECKED:
        log.warning("faust-streaming %s installed; stream.worker.faust_adapter was checked "
                    "against %s: run tests/unit/test_faust_adapter.py", installed, FAUST_CHECKED)


# --- the app and its producer --------------------------------------------------------------------
class IdempotentProducer(AIOKafkaProducer):
    """Faust's aiokafka producer with ``enable_idempotence=True`` and ``acks=all``.

    Faust only turns idempotence on inside transactions (``_settings_extra``); we want it for
    every send: a retried produce request can then neither duplicate nor reorder records.
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        # FAUST INTERNAL (0.15.3): Producer._settings_extra() is merged into the kwargs of
        # aiokafka's AIOKafkaProducer by Producer._new_producer
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class SegstreamApp(faust.App):
    """``faust.App`` whose producer is :class:`IdempotentProducer` (nothing else added: the
    parts of the worker are wired by stream.worker.bootstrap, not hung on the app)."""

    def _new_producer(self) -> ProducerT:
        # FAUST INTERNAL (0.15.3): App._new_producer builds the app's producer
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


# --- topics ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Topics:
    """The topics one app uses (Faust topic descriptions, not connections)."""

    raw: TopicT
    bundles: TopicT
    deadletters: TopicT
    changes: TopicT
    definitions: TopicT
    types: TopicT

    def all(self) -> tuple[TopicT, ...]:
        """Every topic, in declaration order."""
        return (self.raw, self.bundles, self.deadletters, self.changes, self.definitions,
                self.types)


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Describe the app's topics from the table of stream.topics (no I/O: Faust creates them,
    when missing, when the worker starts: every topic is ``internal``)."""
    specs = topic_specs(settings)

    def topic(role: TopicRole, buffer: int | None = None) -> TopicT:
        spec = specs[role]
        # FAUST INTERNAL (0.15.3): app.conf.Topic (the Topic class), not app.topic():
        # app.topic(maxsize=...) is accepted but not passed on
        topic_class: Any = app.conf.Topic
        return cast("TopicT", topic_class(
            app,
            topics=[spec.name],
            partitions=spec.partitions,
            replicas=spec.replication,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
            compacting=True if spec.compacted else None,
            retention=None if spec.retention_ms is None else spec.retention_ms / 1000.0,
            maxsize=buffer,  # the agent's stream buffer (records); None: Faust's 4096
        ))

    # Stream buffers of two batches (not Faust's 4096 records: 4096 full bundles are ~1 GB), so
    # a backlog stays in Kafka, not in the worker (docs/operations.md, Overload).
    return Topics(
        raw=topic("raw", buffer=2 * settings.ingest.batch_records),
        bundles=topic("bundles", buffer=2 * settings.segmentation.batch_records),
        deadletters=topic("deadletters"),
        changes=topic("changes"),
        definitions=topic("definitions"),
        types=topic("types"),
    )


# --- ports backed by the app -------------------------------------------------------------------
class FaustSink:
    """:class:`stream.worker.ports.RecordSink` on the app's producer (created by Faust at
    start-up: looked up per call)."""

    __slots__ = ("app",)

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes, *,
                   partition: int | None = None, timestamp_s: float | None = None
                   ) -> Delivery:
        return await self.app.producer.send(topic, key, value, partition, timestamp_s, None)


class FaustCursor:
    """:class:`stream.worker.ports.PartitionCursor` on the app's consumer."""

    __slots__ = ("app",)

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def assigned(self, topic: str) -> list[int]:
        return [tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic]

    def highwater(self, topic: str, partition: int) -> int | None:
        try:
            return self.app.consumer.highwater(TP(topic, partition))
        except AssertionError:  # aiokafka asserts the partition is assigned: revoked since
            return None

    def committed(self, topic: str, partition: int) -> int | None:
        # FAUST INTERNAL (0.15.3): Consumer._committed_offset, a defaultdict(lambda: None) of
        # the offsets the consumer last committed (read with .get: no insertion); not in the
        # Consumer type, hence the ignore
        committed: Mapping[TP, int | None] = self.app.consumer._committed_offset  # type: ignore[attr-defined]
        return committed.get(TP(topic, partition))

    async def earliest(self, topic: str, partition: int) -> int:
        tp = TP(topic, partition)
        return int((await self.app.consumer.earliest_offsets(tp)).get(tp, 0))

    async def latest(self, topic: str, partition: int) -> int:
        tp = TP(topic, partition)
        return int((await self.app.consumer.highwaters(tp)).get(tp, 0))

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        await self.app.consumer.seek(TP(topic, partition), offset)


class FaustBatchOffsets:
    """:class:`stream.worker.ports.BatchOffsets` for a batch of Faust events (``take_events``)."""

    __slots__ = ("app",)

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def hold(self, events: Batch) -> None:
        for event in cast("Sequence[EventT[bytes]]", events):
            event.message.incref()  # take_events() drops only its own reference after us

    def release(self, events: Batch) -> None:
        on_message_out = self.app.sensors.on_message_out
        for event in cast("Sequence[EventT[bytes]]", events):
            if event.ack():  # drops our reference: the offset may now be committed
                m = event.message  # (take_events() did not report it: it was not the last ref)
                on_message_out(m.tp, m.offset, m)

    def withhold(self, events: Batch) -> None:
        for event in cast("Sequence[EventT[bytes]]", events):
            # FAUST INTERNAL (0.15.3): Message.ack() does nothing for a message already marked
            # acked, so its offset never enters the consumer's _acked set (never committed)
            event.message.acked = True


# --- agents ------------------------------------------------------------------------------------
def define_batch_agent(app: faust.App, topic: TopicT, name: str,
                       run: Callable[[AsyncIterable[Batch]], Awaitable[None]], *,
                       batch_records: int, within_s: float,
                       declare: Sequence[TopicT] = ()) -> None:
    """A Faust agent on ``topic`` whose body creates the ``declare`` topics when missing, then
    hands ``run`` the stream's batches (``take_events(batch_records, within=within_s)``)."""

    async def body(stream: StreamT[bytes]) -> None:
        for t in declare:
            await t.maybe_declare()
        await run(cast("Stream[bytes]", stream).take_events(batch_records, within=within_s))

    app.agent(topic, name=name)(body)


# --- web server and rebalances -----------------------------------------------------------------
def web_application(app: faust.App) -> web.Application:
    """The aiohttp Application of the app's web server (middlewares, cleanup hooks)."""
    # FAUST INTERNAL (0.15.3): the aiohttp web driver keeps its Application as .web_app (not
    # on faust's Web base type, hence the ignore)
    return cast(web.Application, app.web.web_app)  # type: ignore[attr-defined]


Rebalance = Callable[[set[int]], Awaitable[None]]


def on_rebalance(app: faust.App, topic: str | None, *, assigned: Rebalance | None = None,
                 revoked: Rebalance | None = None) -> None:
    """Call ``assigned(partitions)`` / ``revoked(partitions)`` on every rebalance, with the
    partitions of ``topic`` (None: of every topic) assigned now / revoked."""

    def partitions(tps: Any) -> set[int]:
        return {tp.partition for tp in tps if topic is None or tp.topic == topic}

    # Faust calls receivers as receiver(sender, assigned_or_revoked, signal=...)
    if assigned is not None:
        on_assigned = assigned

        async def assigned_receiver(sender: Any, /, *args: Any, **kwargs: Any) -> None:
            await on_assigned(partitions(args[0]))

        app.on_partitions_assigned.connect(assigned_receiver, weak=False)
    if revoked is not None:
        on_revoked = revoked

        async def revoked_receiver(sender: Any, /, *args: Any, **kwargs: Any) -> None:
            await on_revoked(partitions(args[0]))

        app.on_partitions_revoked.connect(revoked_receiver, weak=False)
