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


class ChangeError(ValueError):
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
