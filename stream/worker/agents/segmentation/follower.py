"""The definitions follower: a second consumer reading the definitions topic, then following it.

Every worker reads the whole topic (no consumer group): definitions are broadcast. The latest
document wins; bundles wait until the first read reached the end (:attr:`ready`), so no change
is emitted under definitions that are already replaced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter

from stream.connections import kafka_kwargs
from stream.definitions import DefinitionsDoc, DefinitionsDocError
from stream.settings import Settings
from stream.topics import DEFINITIONS_PARTITION

log = logging.getLogger(__name__)


class DefinitionsFollower:
    """Hands every published definitions document to ``switch`` (the latest only, while
    catching up); :attr:`ready` is set once the topic was read to its end."""

    def __init__(self, settings: Settings, switch: Callable[[DefinitionsDoc], Awaitable[None]],
                 errors: Counter, declare: Callable[[], Awaitable[None]] | None = None) -> None:
        self.settings = settings
        self.switch = switch
        self.errors = errors  # segstream_definitions_errors_total
        self.declare = declare  # creates the topic when missing
        self.ready = asyncio.Event()

    async def follow(self) -> None:
        """Follow the topic forever (an app task); a failure (Kafka unreachable) is retried."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors.inc()
                log.exception("reading the definitions topic failed; retrying in 2 s")
                await asyncio.sleep(2.0)

    async def _follow(self) -> None:
        tp = TopicPartition(self.settings.topic("definitions"), DEFINITIONS_PARTITION)
        if self.declare is not None:
            await self.declare()
        consumer = AIOKafkaConsumer(**kafka_kwargs(self.settings),
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            latest: bytes | None = None
            while True:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                values = [r.value for r in batches.get(tp, ()) if r.value is not None]
                latest = values[-1] if values else latest
                if not self.ready.is_set() and await consumer.position(tp) < end:
                    continue  # still catching up: only the last document matters
                if latest is not None:
                    await self.apply(latest)
                    latest = None
                self.ready.set()
        finally:
            await consumer.stop()

    async def apply(self, record: bytes) -> None:
        """Switch to the document in ``record`` (an unreadable one is counted and ignored)."""
        try:
            doc = DefinitionsDoc.decode(record)
        except DefinitionsDocError as err:
            self.errors.inc()
            log.error("ignoring a definitions record: %s", err)
            return
        await self.switch(doc)
