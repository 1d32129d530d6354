"""Round trips and failure modes of the bundle, segment-change and dead-letter codecs."""

from __future__ import annotations

from collections import namedtuple

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.bundle import (
    BundleError,
    EventsRecord,
    HandoffRecord,
    decode_bundle,
    decode_record,
    encode_bundle,
    encode_handoff,
)
from schemas.changes import (
    ChangeError,
    SegmentChange,
    change_key,
    decode_change,
    encode_change,
    from_change,
)
from schemas.deadletter import decode_dead_letter, encode_dead_letter
from schemas.errors import ErrorCode

EVENT = {
    "event_id": "e1", "type": "page_view", "customer_id": "c1", "anonymous_id": None,
    "timestamp": 1_795_000_000_000, "source": "web", "schema_version": 1,
    "properties": {"url": "/", "price": 1.5, "tags": ["ü", "日本"]},
}  # fmt: skip


def test_bundle_round_trip() -> None:
    events = [EVENT, {**EVENT, "event_id": "e2"}]
    data = encode_bundle(events)
    assert decode_bundle(data) == events
    assert orjson.loads(data)["v"] == 1
    assert decode_bundle(encode_bundle([])) == []


def test_handoff_round_trip() -> None:
    state = bytes(range(256))
    record = decode_record(encode_handoff("c1", "a1", state, EVENT))
    assert record == HandoffRecord(customer_id="c1", anonymous_id="a1", state=state, event=EVENT)
    assert isinstance(decode_record(encode_bundle([EVENT])), EventsRecord)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"nope", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"kind": "events", "events": []}', "version"),
        (b'{"v": 2, "kind": "events", "events": []}', "version"),
        (b'{"v": true, "kind": "events", "events": []}', "version"),
        (b'{"v": 1, "kind": "snapshot"}', "kind"),
        (b'{"v": 1, "kind": "events", "events": {}}', "events"),
        (b'{"v": 1, "kind": "events", "events": [1]}', "event 0"),
        (b'{"v": 1, "kind": "handoff", "customer_id": "c", "anonymous_id": "a", '
         b'"state": "!!", "event": {}}', "base64"),
        (b'{"v": 1, "kind": "handoff", "customer_id": 1, "anonymous_id": "a", '
         b'"state": "", "event": {}}', "customer_id"),
    ],
)
def test_bundle_errors(data: bytes, match: str) -> None:
    with pytest.raises(BundleError, match=match):
        decode_record(data)


def test_decode_bundle_refuses_a_handoff() -> None:
    with pytest.raises(BundleError, match="'events'"):
        decode_bundle(encode_handoff("c", "a", b"", EVENT))


Change = namedtuple("Change", "customer_id segment action at version cause")


def test_change_round_trip_and_key() -> None:
    change = from_change(Change("c-42", "vip", "exit", 5, 2, "timer"), "v7")
    data = encode_change(change)
    assert orjson.loads(data) == {
        "customer_id": "c-42", "segment": "vip", "action": "exit", "at": 5, "version": 2,
        "cause": "timer", "definition_version": "v7",
    }  # fmt: skip
    assert decode_change(data) == change
    assert change_key("c-日本") == "c-日本".encode()


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b'{"customer_id":"c","segment":"s","action":"join","at":1,"version":1,"cause":"e",'
        b'"definition_version":"v"}',
        b'{"customer_id":"c","segment":"s","action":"enter","at":1,"version":2,"cause":"e",'
        b'"definition_version":"v"}',
        b'{"customer_id":"c","segment":"s","action":"enter","at":1,"version":0,"cause":"e",'
        b'"definition_version":"v"}',
    ],
)
def test_change_errors(data: bytes) -> None:
    with pytest.raises(ChangeError):
        decode_change(data)


def test_from_change_rejects_unknown_action() -> None:
    with pytest.raises(ChangeError):
        from_change(Change("c", "s", "stay", 1, 1, "e"), "v")
    assert isinstance(from_change(Change("c", "s", "enter", 1, 1, "e"), "v"), SegmentChange)


@given(raw=st.binary(max_size=200), index=st.none() | st.integers(0, 999))
def test_dead_letter_keeps_raw_bytes_exactly(raw: bytes, index: int | None) -> None:
    data = encode_dead_letter(ErrorCode.BAD_ID, "msg", raw, "events.raw", 3, 99, index, 1234)
    letter = decode_dead_letter(data)
    assert letter.raw == raw
    assert (letter.code, letter.index, letter.partition, letter.offset) == ("bad_id", index, 3, 99)
    assert letter.received_at_ms == 1234 and letter.source_topic == "events.raw"


def test_dead_letter_text_stays_readable() -> None:
    data = encode_dead_letter(ErrorCode.UNPARSABLE, "m", b'{"a": "\xc3\xa9"', "t", 0, 0, None, 0)
    obj = orjson.loads(data)
    assert obj["raw_encoding"] == "utf-8" and obj["raw"] == '{"a": "é"'
    obj = orjson.loads(encode_dead_letter(ErrorCode.UNPARSABLE, "m", b"\xff", "t", 0, 0, None, 0))
    assert obj["raw_encoding"] == "base64" and obj["raw"] == "/w=="
