"""Segment-change records: what ad and email platforms consume (one Kafka record per change).

Wire format (UTF-8 JSON, keyed by the customer id so one customer's changes stay in order)::

    {"customer_id": "c-42", "segment": "cart_abandoners", "action": "enter",
     "at": 1795424400000, "version": 3, "cause": "e-981", "definition_version": "2026-11-01"}

``version`` counts the changes of one (customer, segment): odd versions are ENTER and even ones
EXIT, so a consumer drops a duplicate by keeping the highest version it has applied, and a
re-processed input can never give one version two different actions.

>>> change = SegmentChange(customer_id="c-42", segment="vip", action="enter", at=1, version=1,
...                        cause="e-1", definition_version="v1")
>>> decode_change(encode_change(change)) == change, change_key("c-42")
(True, b'c-42')
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, Protocol

import msgspec
from msgspec import Meta, Struct

from schemas.errors import SegstreamError


class SegmentChange(Struct, frozen=True, kw_only=True):
    """A customer entered or left a segment at instant ``at`` (epoch ms, event time)."""

    customer_id: Annotated[str, Meta(min_length=1)]
    segment: Annotated[str, Meta(min_length=1)]
    action: Literal["enter", "exit"]
    #: the exact instant of the change in event time (never the wall clock)
    at: int
    #: per (customer, segment) counter: odd = enter, even = exit
    version: Annotated[int, Meta(ge=1)]
    #: an event id, "timer", "alias:<event_id>", "forget:<event_id>" or "definitions:<version>"
    cause: str
    #: the ``version`` of the segment definitions file that produced the change
    definition_version: str


class ChangeLike(Protocol):
    """What the engine emits (``processors.types.Change`` satisfies it)."""

    @property
    def customer_id(self) -> str: ...
    @property
    def segment(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def at(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def cause(self) -> str: ...


class ChangeError(SegstreamError, ValueError):
    """A segment-change record is malformed."""


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(SegmentChange)


def from_change(change: ChangeLike, definition_version: str) -> SegmentChange:
    """The published record of an engine change."""
    if change.action not in ("enter", "exit"):
        raise ChangeError(f"action must be 'enter' or 'exit', got {change.action!r}")
    return SegmentChange(
        customer_id=change.customer_id,
        segment=change.segment,
        action=change.action,  # type: ignore[arg-type]
        at=change.at,
        version=change.version,
        cause=change.cause,
        definition_version=definition_version,
    )


def encode_change(change: SegmentChange) -> bytes:
    """The record value (compact JSON, fields in the documented order)."""
    return _ENCODER.encode(change)


def change_key(customer_id: str) -> bytes:
    """The record key: the customer id in UTF-8 (Kafka's default partitioner then keeps a
    customer's changes in one partition, in order)."""
    return customer_id.encode()


def decode_change(data: bytes) -> SegmentChange:
    """Decode and check a record value; raise :class:`ChangeError` if malformed."""
    try:
        change = _DECODER.decode(data)
    except msgspec.DecodeError as err:
        raise ChangeError(f"bad segment-change record: {err}") from None
    if (change.version % 2 == 1) != (change.action == "enter"):
        raise ChangeError(
            f"version {change.version} cannot be {change.action!r} (odd = enter, even = exit)"
        )
    return change


class ChangeDeduplicator:
    """What a downstream consumer keeps to apply each change once: the highest version it has
    applied per (customer, segment). Changes are delivered at least once (a worker that dies
    between producing changes and committing its state emits them again, with the same
    versions); :meth:`accept` is False for such a repeat: a version at or below the last one
    applied. One customer's changes share a Kafka partition (keyed by customer), so the versions
    of a pair arrive in order; :attr:`skipped` counts accepted changes that jumped over a
    version (0 in every fault scenario of the test suite). A real consumer keeps the map in its
    own store next to what it applied (e.g. a ``version`` column), in the same transaction.

    >>> def ch(action: Literal["enter", "exit"], version: int) -> SegmentChange:
    ...     return SegmentChange(customer_id="c-1", segment="vip", action=action, at=version,
    ...                          version=version, cause="e", definition_version="v1")
    >>> d = ChangeDeduplicator()
    >>> [d.accept(c) for c in (ch("enter", 1), ch("exit", 2), ch("enter", 1), ch("exit", 2),
    ...                        ch("enter", 3))]
    [True, True, False, False, True]
    >>> d.is_member("c-1", "vip"), d.dropped, d.skipped
    (True, 2, 0)
    """

    __slots__ = ("_last", "dropped", "skipped")

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}
        self.dropped = 0  # repeats dropped
        self.skipped = 0  # accepted changes whose previous version never arrived

    def accept(self, change: SegmentChange) -> bool:
        """True: apply ``change``; False: a repeat, drop it."""
        key = (change.customer_id, change.segment)
        last = self._last.get(key, 0)
        if change.version <= last:
            self.dropped += 1
            return False
        if change.version != last + 1:
            self.skipped += 1
        self._last[key] = change.version
        return True

    def is_member(self, customer_id: str, segment: str) -> bool:
        """Whether the changes applied so far leave ``customer_id`` in ``segment``."""
        return self._last.get((customer_id, segment), 0) % 2 == 1
