"""Packing validated events into per-partition bundles: the pure part of the ingest agent.

No Kafka here. :class:`Bundler` keeps one pending list of events per bundle-topic partition,
appends each event to the list of the partition its routing id hashes to (so the order of the
events of one routing id is their arrival order) and hands out a :class:`Bundle` when a list
reaches ``max_events`` events or ``max_bytes`` estimated bytes; :meth:`Bundler.drain` hands out
the rest at the end of an ingest batch. Bundles of one partition come out oldest first, and the
agent produces them in that order to that explicit partition.

Sizes are *estimates* (the caller passes each event's share of its raw record plus a constant),
so that no event is encoded twice; :func:`encode_within` encodes a bundle and splits it in halves
in the rare case the real size goes over the limit, which keeps every record under the broker's
``message.max.bytes``.

>>> b = Bundler(num_partitions=2, max_events=2, max_bytes=10_000,
...             partition_of=lambda rid: len(rid) % 2)
>>> b.add({"n": 1}, "a", 10); b.add({"n": 2}, "bb", 10); b.add({"n": 3}, "cc", 10)
>>> [(x.partition, [e["n"] for e in x.events]) for x in b.drain()]
[(0, [2, 3]), (1, [1])]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.errors import ErrorCode

Event = dict[str, Any]

#: Bytes added to each event's share of its raw record in the size estimate: the canonical form
#: spells out defaults (source, schema_version, null ids) that the raw event may omit.
EVENT_OVERHEAD_BYTES = 96


@dataclass(slots=True)
class Bundle:
    """Events bound for one partition of the bundle topic, in arrival order."""

    partition: int
    events: list[Event]
    estimated_bytes: int


class PartitionCache:
    """``routing id -> partition`` memo in front of a (slow, pure-Python) murmur2 partitioner.

    Customers send many events, so most look-ups hit. The memo is cleared when it reaches
    ``max_entries`` (simple, bounded memory, no per-hit bookkeeping).

    >>> calls = []
    >>> cache = PartitionCache(lambda rid, n: calls.append(rid) or len(rid) % n, 4, max_entries=2)
    >>> [cache("abc"), cache("abc"), cache("z"), cache("abcd"), cache("abc")], calls
    ([3, 3, 1, 0, 3], ['abc', 'z', 'abcd', 'abc'])
    """

    __slots__ = ("_max", "_n", "_partition_for", "memo")

    def __init__(self, partition_for: Callable[[str, int], int], num_partitions: int,
                 max_entries: int = 200_000) -> None:
        self._partition_for = partition_for
        self._n = num_partitions
        self._max = max_entries
        #: the memo itself: hot loops read it directly (``memo.get``) and call us on a miss
        self.memo: dict[str, int] = {}

    def __call__(self, routing_id: str) -> int:
        p = self.memo.get(routing_id)
        if p is None:
            p = self._partition_for(routing_id, self._n)
            if len(self.memo) >= self._max:
                self.memo.clear()
            self.memo[routing_id] = p
        return p


class Bundler:
    """Per-partition packing of events with size- and count-based flushing."""

    __slots__ = ("_events", "_max_bytes", "_max_events", "_partition_of", "_ready", "_sizes",
                 "num_partitions")

    def __init__(self, num_partitions: int, max_events: int, max_bytes: int,
                 partition_of: Callable[[str], int]) -> None:
        if num_partitions < 1 or max_events < 1 or max_bytes < 1:
            raise ValueError("num_partitions, max_events and max_bytes must be >= 1")
        self.num_partitions = num_partitions
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._partition_of = partition_of
        self._events: list[list[Event]] = [[] for _ in range(num_partitions)]
        self._sizes = [0] * num_partitions
        self._ready: list[Bundle] = []

    def add(self, event: Event, routing_id: str, size: int) -> None:
        """Append *event* to its partition's pending bundle; full bundles become ready."""
        p = self._partition_of(routing_id)
        pending = self._events[p]
        if pending and self._sizes[p] + size > self._max_bytes:
            self._close(p)
            pending = self._events[p]
        pending.append(event)
        self._sizes[p] += size
        if len(pending) >= self._max_events:
            self._close(p)

    def add_events(self, events: Sequence[Event], routing_id: Callable[[Event], str], size: int,
                   type_counts: dict[str, int]) -> list[tuple[Event, Exception]]:
        """:meth:`add` for many events of *size* each (the hot loop), counting their types.

        An event whose routing id, partition or ``type`` cannot be read is skipped and returned
        with its exception (the caller dead-letters it); the others are packed.
        """
        failures: list[tuple[Event, Exception]] = []
        partition_of = self._partition_of
        memo = getattr(partition_of, "memo", None)
        memo_get = memo.get if isinstance(memo, dict) else None
        lists, sizes = self._events, self._sizes
        max_bytes, max_events = self._max_bytes, self._max_events
        start, n = 0, len(events)
        while start < n:
            i = start
            try:
                for i in range(start, n):
                    event = events[i]
                    rid = routing_id(event)
                    p = memo_get(rid) if memo_get is not None else None
                    if p is None:
                        p = partition_of(rid)
                    kind = event["type"]
                    # nothing below raises: the event is packed and counted, or neither
                    pending = lists[p]
                    if pending and sizes[p] + size > max_bytes:
                        self._close(p)
                        pending = lists[p]
                    pending.append(event)
                    sizes[p] += size
                    if len(pending) >= max_events:
                        self._close(p)
                    type_counts[kind] = type_counts.get(kind, 0) + 1
                start = n
            except Exception as exc:  # the loop is re-entered after the bad event
                failures.append((events[i], exc))
                start = i + 1
        return failures

    def take_ready(self) -> list[Bundle]:
        """The bundles that are full, oldest first (they leave the bundler)."""
        ready, self._ready = self._ready, []
        return ready

    def drain(self) -> list[Bundle]:
        """Every bundle, full or not, oldest first per partition; the bundler is empty after."""
        for p in range(self.num_partitions):
            if self._events[p]:
                self._close(p)
        return self.take_ready()

    @property
    def pending_events(self) -> int:
        """Events added and not yet handed out (ready bundles included)."""
        return sum(map(len, self._events)) + sum(len(b.events) for b in self._ready)

    def _close(self, p: int) -> None:
        self._ready.append(Bundle(p, self._events[p], self._sizes[p]))
        self._events[p] = []
        self._sizes[p] = 0


def encode_within(events: Sequence[Event], max_bytes: int,
                  encode: Callable[[Sequence[Event]], bytes]) -> list[tuple[int, bytes]]:
    """Encode *events* as one bundle, or as several (halving) when the result is too big.

    Returns ``(number of events, encoded bundle)`` pairs in order. A single event is never
    split, whatever its size (validation bounds event sizes).

    >>> import json
    >>> enc = lambda evs: json.dumps(list(evs)).encode()
    >>> [(n, len(b)) for n, b in encode_within([{"k": "x" * 10}] * 4, 60, enc)]
    [(2, 42), (2, 42)]
    """
    data = encode(events)
    if len(data) <= max_bytes or len(events) <= 1:
        return [(len(events), data)]
    mid = len(events) // 2
    return encode_within(events[:mid], max_bytes, encode) + encode_within(
        events[mid:], max_bytes, encode)


# --- one ingest batch: raw records in, bundles + dead letters out -----------------------------

@dataclass(slots=True)
class BatchResult:
    """What one ingest batch must produce before its raw offsets may be committed."""

    bundles: list[Bundle]
    dead_letters: list[bytes]
    records: int
    valid_by_type: dict[str, int]
    invalid_by_code: dict[str, int]


class RecordPacker:
    """Validates raw records and packs them: the per-record work of the ingest agent.

    Pure apart from logging; the validator, routing, partitioning and dead-letter codec are
    passed in (``schemas`` functions in the agent, fakes in tests) so the logic is tested
    without Kafka. No exception escapes :meth:`add_record`: a failure of the validator or of the
    packing of one event dead-letters that record/event with code ``internal_error``.
    """

    __slots__ = ("_bundler", "_counts", "_dead", "_encode_dead_letter", "_invalid", "_log",
                 "_now_ms", "_parse", "_records", "_routing_id", "_to_json")

    def __init__(self, bundler: Bundler, *,
                 parse: Callable[[bytes | None], tuple[list[Event], Sequence[Any]]],
                 routing_id: Callable[[Event], str],
                 encode_dead_letter: Callable[..., bytes],
                 to_json: Callable[[Any], bytes],
                 now_ms: Callable[[], int],
                 log: Callable[..., None]) -> None:
        self._bundler = bundler
        self._parse = parse
        self._routing_id = routing_id
        self._encode_dead_letter = encode_dead_letter
        self._to_json = to_json
        self._now_ms = now_ms
        self._log = log
        self._reset()

    def _reset(self) -> None:
        self._dead: list[bytes] = []
        self._records = 0
        self._counts: dict[str, int] = {}
        self._invalid: dict[str, int] = {}

    def add_record(self, value: bytes | None, topic: str, partition: int, offset: int) -> None:
        """Validate one raw record; its valid events go to the bundler, the others die."""
        self._records += 1
        raw = value if value is not None else b""
        try:
            valid, rejected = self._parse(value)
        except Exception as exc:  # a validator bug must not kill the agent
            self._log("validator failed on %s[%d]@%d: %r", topic, partition, offset, exc)
            self._dead_letter(ErrorCode.INTERNAL_ERROR, f"validator failed: {exc!r}", raw,
                              (topic, partition, offset), None)
            return
        for r in rejected:
            self._dead_letter(r.code, r.message, r.raw, (topic, partition, offset),
                              r.index)
        if not valid:
            return
        size = len(raw) // (len(valid) + len(rejected)) + EVENT_OVERHEAD_BYTES
        failures = self._bundler.add_events(valid, self._routing_id, size, self._counts)
        for event, error in failures:  # one bad event must not kill the agent
            self._log("packing failed on %s[%d]@%d: %r", topic, partition, offset, error)
            self._dead_letter(ErrorCode.INTERNAL_ERROR, f"packing failed: {error!r}",
                              self._safe_json(event), (topic, partition, offset), None)

    def finish(self) -> BatchResult:
        """Everything the batch must produce (all bundles drained); the packer is reset."""
        result = BatchResult(self._bundler.drain(), self._dead, self._records, self._counts,
                             self._invalid)
        self._reset()
        return result

    def _dead_letter(self, code: ErrorCode, message: str, raw: bytes,
                     origin: tuple[str, int, int], index: int | None) -> None:
        self._invalid[code] = self._invalid.get(code, 0) + 1
        topic, partition, offset = origin
        self._dead.append(self._encode_dead_letter(
            code, message, raw, topic, partition, offset, index, self._now_ms()))

    def _safe_json(self, event: Any) -> bytes:
        try:
            return self._to_json(event)
        except Exception:
            return repr(event).encode()
