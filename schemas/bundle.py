"""Codec of the internal bundle topic: one Kafka record carries many canonical events.

Wire format (orjson, UTF-8 JSON)::

    {"v": 1, "kind": "events", "events": [<canonical event>, ...]}
    {"v": 1, "kind": "handoff", "customer_id": str, "anonymous_id": str,
     "state": "<base64 of the encoded state>", "event": <canonical alias event>}

``v`` is the format version; a reader rejects a version or kind it does not know with
:class:`BundleError` rather than guessing. ``events`` bundles are written by the ingest agent;
``handoff`` records carry an anonymous profile's encoded state to the partition of the customer
it is aliased to (written by the segmentation worker).

>>> data = encode_bundle([{"event_id": "e1"}])
>>> data
b'{"v":1,"kind":"events","events":[{"event_id":"e1"}]}'
>>> decode_bundle(data)
[{'event_id': 'e1'}]
>>> rec = decode_record(encode_handoff("c1", "a1", b"\\x00state", {"event_id": "e2"}))
>>> rec.kind, rec.customer_id, rec.state
('handoff', 'c1', b'\\x00state')
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from schemas.errors import SegstreamError

Event = dict[str, Any]

#: the only bundle format version this code reads and writes
BUNDLE_VERSION: Final = 1


class BundleError(SegstreamError, ValueError):
    """A bundle-topic record is malformed or of an unknown version or kind."""


@dataclass(frozen=True, slots=True)
class EventsRecord:
    """A bundle of canonical events, in the order they must be applied."""

    events: list[Event]
    kind: Literal["events"] = "events"


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """An anonymous profile's state handed to the customer it was aliased to."""

    customer_id: str
    anonymous_id: str
    state: bytes
    event: Event
    kind: Literal["handoff"] = "handoff"


def encode_bundle(events: Sequence[Event]) -> bytes:
    """Encode canonical events as one ``events`` record."""
    return orjson.dumps({"v": BUNDLE_VERSION, "kind": "events", "events": events})


def encode_handoff(customer_id: str, anonymous_id: str, state: bytes, event: Event) -> bytes:
    """Encode an alias hand-off: ``state`` (opaque bytes) travels base64-encoded."""
    return orjson.dumps(
        {
            "v": BUNDLE_VERSION,
            "kind": "handoff",
            "customer_id": customer_id,
            "anonymous_id": anonymous_id,
            "state": base64.b64encode(state).decode("ascii"),
            "event": event,
        }
    )


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if type(value) is not kind:
        raise BundleError(f"bundle field {name!r} must be {kind.__name__}, got {value!r:.60}")
    return value


def decode_record(data: bytes) -> EventsRecord | HandoffRecord:
    """Decode any bundle-topic record; raise :class:`BundleError` if it is not one we know."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise BundleError(f"bundle is not JSON: {err}") from None
    if type(obj) is not dict:
        raise BundleError(f"bundle must be a JSON object, got {type(obj).__name__}")
    version = obj.get("v")
    if version != BUNDLE_VERSION or type(version) is not int:
        raise BundleError(f"unknown bundle version {version!r} (this code reads {BUNDLE_VERSION})")
    kind = obj.get("kind")
    if kind == "events":
        events = _field(obj, "events", list)
        for i, event in enumerate(events):
            if type(event) is not dict:
                raise BundleError(f"bundle event {i} is not an object")
        return EventsRecord(events)
    if kind == "handoff":
        try:
            state = base64.b64decode(_field(obj, "state", str), validate=True)
        except binascii.Error as err:
            raise BundleError(f"hand-off state is not base64: {err}") from None
        return HandoffRecord(
            customer_id=_field(obj, "customer_id", str),
            anonymous_id=_field(obj, "anonymous_id", str),
            state=state,
            event=_field(obj, "event", dict),
        )
    raise BundleError(f"unknown bundle kind {kind!r} (known: 'events', 'handoff')")


def decode_bundle(data: bytes) -> list[Event]:
    """Decode an ``events`` record to its list of canonical events."""
    record = decode_record(data)
    if not isinstance(record, EventsRecord):
        raise BundleError(f"expected an 'events' bundle, got kind {record.kind!r}")
    return record.events
