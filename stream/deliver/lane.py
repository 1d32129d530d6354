"""One destination's delivery lane: batching, retries with backoff and jitter, dead letters.

A lane takes the changes meant for its destination in the order they were consumed and sends
them in batches of at most ``max_changes``, a batch leaving when it is full or when its oldest
change has waited ``max_wait``. It has **one request in flight at a time** and retries a
failed batch as it is, before any later change: a customer's changes (one partition of the
changes topic, read in order) therefore reach the destination in order, retries included. A
batch that is refused (a 4xx other than 408/429) or that failed ``max_tries`` times goes to
the dead-letter callback and the lane goes on with the next batch.

Delay before try ``n + 1`` (full jitter): ``uniform(0, min(backoff_max, backoff_base * 2^(n-1)))``;
a ``Retry-After`` of a 429/503 raises it (capped by ``backoff_max``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import orjson

from stream.deliver.config import Destination
from stream.deliver.metrics import DeliverMetrics
from stream.deliver.offsets import Ticket

log = logging.getLogger("segstream.deliver")


@dataclass(slots=True)
class Item:
    """A change record for one or more destinations (shared: one ticket per record)."""

    ticket: Ticket
    customer_id: str
    #: the record value exactly as on the changes topic (a JSON object)
    value: bytes
    #: the record's Kafka timestamp (epoch ms): when the worker published the change
    published_ms: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt."""

    ok: bool
    retry: bool = False
    #: for the dead-letter record and the logs (never the URL: it may hold credentials)
    reason: str = ""
    #: the retries metric's cause label: timeout, connection, 408, 429, 5xx (or 4xx, 3xx)
    cause: str = ""
    retry_after_s: float | None = None


def classify(status: int, retry_after_s: float | None = None) -> Outcome:
    """An HTTP status as an outcome: 2xx delivered; 408, 429 and 5xx retried; the rest
    (redirects included: the URL is wrong) dead-lettered at once.

    >>> [(o.ok, o.retry, o.cause) for o in map(classify, (204, 503, 429, 408, 400, 301))]
    [(True, False, ''), (False, True, '5xx'), (False, True, '429'), (False, True, '408'), \
(False, False, '4xx'), (False, False, '3xx')]
    """
    if 200 <= status < 300:
        return Outcome(True)
    reason = f"HTTP {status}"
    if status in (408, 429):
        return Outcome(False, True, reason, str(status), retry_after_s)
    if 500 <= status < 600:
        return Outcome(False, True, reason, "5xx", retry_after_s)
    return Outcome(False, False, reason, f"{status // 100}xx")


def backoff_s(attempt: int, base_ms: int, max_ms: int, rng: random.Random) -> float:
    """Full-jitter delay (seconds) after failed try number ``attempt`` (1-based).

    >>> rng = random.Random(1)
    >>> all(0 <= backoff_s(a, 500, 60_000, rng) <= min(60.0, 0.5 * 2 ** (a - 1))
    ...     for a in range(1, 30) for _ in range(50))
    True
    """
    cap = min(float(max_ms), base_ms * 2.0 ** min(attempt - 1, 62)) / 1000.0
    return rng.uniform(0.0, cap)


def batch_body(destination: str, batch_id: str, items: Iterable[Item]) -> bytes:
    """The JSON body of a POST: the change records exactly as on the topic.

    >>> t = Ticket(0, 0, 1)
    >>> batch_body("crm", "b1", [Item(t, "c-1", b'{"customer_id":"c-1","version":1}', 0)])
    b'{"destination":"crm","batch_id":"b1","changes":[{"customer_id":"c-1","version":1}]}'
    """
    return orjson.dumps({"destination": destination, "batch_id": batch_id,
                         "changes": [orjson.Fragment(i.value) for i in items]})


Send = Callable[[Destination, bytes, int], Awaitable[Outcome]]
DeadLetter = Callable[[Destination, list[Item], str, int], Awaitable[None]]


class Lane:
    """The delivery loop of one destination (:meth:`run` is its task)."""

    def __init__(self, dest: Destination, send: Send, dead_letter: DeadLetter,
                 metrics: DeliverMetrics, *, on_done: Callable[[], None] = lambda: None,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 wall: Callable[[], float] = time.time) -> None:
        self.dest = dest
        self.send = send
        self.dead_letter = dead_letter
        self.metrics = metrics
        self.on_done = on_done
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.wall = wall
        self.queue: deque[tuple[float, Item]] = deque()  # (arrival, monotonic s), item
        self.in_flight: list[Item] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = metrics.pending.labels(dest.name)

    # --- feeding -----------------------------------------------------------------------------
    def put(self, item: Item) -> None:
        self.queue.append((time.monotonic(), item))
        if len(self.queue) == 1 or len(self.queue) >= self.dest.max_changes:
            self._wake.set()
        self._pending.inc()

    def pending(self) -> int:
        """Changes queued or in flight."""
        return len(self.queue) + len(self.in_flight)

    def drop(self, partitions: set[int]) -> int:
        """Remove the queued changes of revoked ``partitions`` (not the batch in flight)."""
        kept = deque(e for e in self.queue if e[1].ticket.partition not in partitions)
        dropped = len(self.queue) - len(kept)
        self.queue = kept
        self._pending.dec(dropped)
        return dropped

    def sending(self, partitions: set[int]) -> bool:
        """Whether the batch in flight holds a change of ``partitions``."""
        return any(i.ticket.partition in partitions for i in self.in_flight)

    async def wait_idle(self) -> None:
        """Until no batch is in flight."""
        await self._idle.wait()

    # --- the loop ----------------------------------------------------------------------------
    async def _next_batch(self) -> list[Item]:
        while True:
            while not self.queue:
                self._wake.clear()
                await self._wake.wait()
            deadline = self.queue[0][0] + self.dest.max_wait_ms / 1000.0
            while self.queue and len(self.queue) < self.dest.max_changes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._wake.wait()
            if self.queue:  # (a revocation may have emptied it)
                n = min(self.dest.max_changes, len(self.queue))
                return [self.queue.popleft()[1] for _ in range(n)]

    async def run(self) -> None:
        while True:
            batch = await self._next_batch()
            self.in_flight = batch
            self._idle.clear()
            try:
                await self.deliver(batch)
            finally:
                self.in_flight = []
                self._idle.set()
            for item in batch:
                item.ticket.done()
            self._pending.dec(len(batch))
            self.on_done()

    async def deliver(self, batch: list[Item]) -> None:
        """Send ``batch`` until it is delivered, refused or out of tries (then dead-letter)."""
        dest = self.dest
        body = batch_body(dest.name, uuid.uuid4().hex, batch)
        outcome = Outcome(False, True, "not sent")
        for attempt in range(1, dest.max_tries + 1):
            outcome = await self.send(dest, body, attempt)
            if outcome.ok:
                self.metrics.delivered.labels(dest.name).inc(len(batch))
                now = self.wall()
                histogram = self.metrics.latency.labels(dest.name)
                for item in batch:
                    histogram.observe(max(0.0, now - item.published_ms / 1000.0))
                return
            if not outcome.retry:
                log.warning("destination %s refused a batch of %d changes (%s): dead-lettered",
                            dest.name, len(batch), outcome.reason)
                await self._dead(batch, outcome.reason, attempt)
                return
            if attempt == dest.max_tries:
                break
            self.metrics.retries.labels(dest.name, outcome.cause).inc()
            delay = backoff_s(attempt, dest.backoff_base_ms, dest.backoff_max_ms, self.rng)
            if outcome.retry_after_s is not None:
                delay = max(delay, min(outcome.retry_after_s, dest.backoff_max_ms / 1000.0))
            log.info("destination %s: try %d of %d failed (%s); retrying in %.2f s",
                     dest.name, attempt, dest.max_tries, outcome.reason, delay)
            await self.sleep(delay)
        reason = f"gave up after {dest.max_tries} tries: {outcome.reason}"
        log.warning("destination %s: %s; %d changes dead-lettered", dest.name, reason,
                    len(batch))
        await self._dead(batch, reason, dest.max_tries)

    async def _dead(self, batch: list[Item], reason: str, tries: int) -> None:
        await self.dead_letter(self.dest, batch, reason, tries)
        self.metrics.dead_lettered.labels(self.dest.name).inc(len(batch))
