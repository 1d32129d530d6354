"""The narrow interfaces the worker's parts depend on (no Faust here).

The agents and their parts never see the Faust app: they are handed a :class:`RecordSink` (the
producer), a :class:`PartitionCursor` (the consumer's positions), a :class:`Clock` and a
:class:`Fatal` handler by the composition root (:mod:`stream.worker.bootstrap`), which builds
the Faust-backed ones from :mod:`stream.worker.faust_adapter`. Tests hand them in-memory fakes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

#: Resolves when Kafka acknowledged a record (raises if it refused it).
Delivery = Awaitable[Any]


class ConsumedMessage(Protocol):
    """A record as the consumer fetched it (Faust's ``Message``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def timestamp(self) -> float | None: ...


class ConsumedEvent(Protocol):
    """One item of a batch of consumed records (Faust's ``Event``)."""

    @property
    def message(self) -> ConsumedMessage: ...


#: One batch of consumed records (``take_events``), in offset order per partition.
Batch = Sequence[ConsumedEvent]


class RecordSink(Protocol):
    """Hands records to Kafka, in call order per partition."""

    async def send(self, topic: str, key: bytes | None, value: bytes, *,
                   partition: int | None = None, timestamp_s: float | None = None
                   ) -> Delivery:
        """Queue one record (``partition`` None: by key / round robin; ``timestamp_s`` None:
        now); returns once it is queued, with the awaitable of its acknowledgement."""
        ...


class PartitionCursor(Protocol):
    """The consumer's view of the partitions this worker is assigned."""

    def assigned(self, topic: str) -> list[int]:
        """The partitions of ``topic`` assigned to this worker now."""
        ...

    def highwater(self, topic: str, partition: int) -> int | None:
        """The high-water mark from the last fetch response (no request); None when not
        fetched yet or not assigned (any more)."""
        ...

    def committed(self, topic: str, partition: int) -> int | None:
        """The offset the consumer group last committed for it (None: never)."""
        ...

    async def earliest(self, topic: str, partition: int) -> int:
        """The first offset still in Kafka (asks the broker)."""
        ...

    async def latest(self, topic: str, partition: int) -> int:
        """The high-water mark (asks the broker)."""
        ...

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``partition`` again from ``offset``."""
        ...


class Clock(Protocol):
    """Wall clock (epoch ms) and a monotonic clock (seconds)."""

    def now_ms(self) -> int: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clocks."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class Fatal(Protocol):
    """Stops the worker after an error it must not continue past (its successor resumes from
    what was committed)."""

    async def crash(self, exc: BaseException) -> None: ...


class BatchOffsets(Protocol):
    """Controls when the consumer may commit a batch of consumed records (the ingest agent's
    at-least-once invariant: an offset is committed only after its output is acknowledged)."""

    def hold(self, events: Batch) -> None:
        """Keep the batch's offsets from being committed when the stream moves on."""
        ...

    def release(self, events: Batch) -> None:
        """The batch's output is acknowledged: its offsets may be committed."""
        ...

    def withhold(self, events: Batch) -> None:
        """Never commit the batch's offsets (its output failed; the worker stops)."""
        ...
