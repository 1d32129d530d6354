"""Table-driven tests of event validation: one case per error code and per type."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from schemas.errors import ErrorCode, InvalidEvent
from schemas.models import EVENT_TYPES
from schemas.validation import (
    CHUNK,
    DEFAULT_LIMITS,
    Limits,
    Rejected,
    parse_record,
    routing_id,
    validate_event,
)

NOW = 1_795_478_400_000  # 2026-11-24T00:00:00Z
TS = NOW - 3_600_000

#: one minimal valid event per type
VALID: dict[str, dict[str, Any]] = {
    "page_view": {"url": "https://shop.example/p/1"},
    "cart_add": {"product_id": "p1", "price": 19.99},
    "cart_remove": {"product_id": "p1"},
    "checkout": {},
    "purchase": {"order_id": "o1", "amount": 42, "currency": "EUR"},
    "email_sent": {"campaign_id": "c1"},
    "email_open": {"campaign_id": "c1"},
    "email_click": {"campaign_id": "c1", "url": "https://x.example"},
    "email_unsubscribe": {},
    "email_bounce": {"kind": "hard"},
    "identify": {"traits": {"email": "a@b.example", "country": "FR", "vip": True}},
    "alias": {},
    "forget": {"reason": "user request"},
}


def make(kind: str = "page_view", **over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "type": kind,
        "customer_id": "c-1",
        "anonymous_id": "a-1",
        "timestamp": TS,
        "properties": copy.deepcopy(VALID[kind]),
    }
    for key, value in over.items():
        if value is DROP:
            event.pop(key, None)
        else:
            event[key] = value
    return event


DROP = object()


def test_every_type_has_a_valid_example() -> None:
    assert set(VALID) == set(EVENT_TYPES)


@pytest.mark.parametrize("kind", list(VALID))
def test_valid_event_of_each_type_is_canonical(kind: str) -> None:
    raw = make(kind)
    before = copy.deepcopy(raw)
    ev = validate_event(raw, NOW)
    assert raw == before, "the input must not be modified"
    assert list(ev) == [
        "event_id", "type", "customer_id", "anonymous_id", "timestamp", "source",
        "schema_version", "properties",
    ]  # fmt: skip
    assert ev["type"] == kind
    assert ev["timestamp"] == TS
    assert ev["source"] == "unknown"
    assert ev["schema_version"] == 1
    for key, value in VALID[kind].items():
        assert ev["properties"][key] == value


def test_defaults_are_materialised() -> None:
    ev = validate_event(make("cart_add"), NOW)
    assert ev["properties"]["quantity"] == 1
    raw = make("purchase")
    raw["properties"]["items"] = [{"product_id": "p1"}, {"product_id": "p2", "quantity": 3}]
    ev = validate_event(raw, NOW)
    assert [i["quantity"] for i in ev["properties"]["items"]] == [1, 3]
    assert "quantity" not in raw["properties"]["items"][0]
    ev = validate_event(make("cart_remove"), NOW)
    assert "quantity" not in ev["properties"], "absent quantity means 'remove all'"


def test_absent_properties_become_empty_object() -> None:
    ev = validate_event(make("checkout", properties=DROP), NOW)
    assert ev["properties"] == {}


def test_extra_properties_are_kept_and_extra_envelope_fields_dropped() -> None:
    raw = make("page_view", context={"ip": "1.2.3.4"})
    raw["properties"]["utm"] = {"source": "news", "tags": ["a", "b"]}
    ev = validate_event(raw, NOW)
    assert ev["properties"]["utm"] == {"source": "news", "tags": ["a", "b"]}
    assert "context" not in ev


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-23T10:00:00Z", 1_795_428_000_000),
        ("2026-11-23T10:00:00+02:00", 1_795_420_800_000),
        ("2026-11-23T10:00:00.123456-01:30", 1_795_433_400_123),
        ("2026-11-23 10:00:00z", 1_795_428_000_000),
        (1_795_428_000_000, 1_795_428_000_000),
    ],
)
def test_timestamp_forms(stamp: object, expected: int) -> None:
    assert validate_event(make(timestamp=stamp), NOW)["timestamp"] == expected


P = "properties"
CASES: list[tuple[str, dict[str, Any], ErrorCode]] = [
    ("not an object", {"__replace__": [1, 2]}, ErrorCode.NOT_OBJECT),
    ("type missing", {"type": DROP}, ErrorCode.UNKNOWN_TYPE),
    ("type unknown", {"type": "page_veiw"}, ErrorCode.UNKNOWN_TYPE),
    ("type not a string", {"type": 3}, ErrorCode.UNKNOWN_TYPE),
    ("event_id missing", {"event_id": DROP}, ErrorCode.MISSING_ID),
    ("event_id null", {"event_id": None}, ErrorCode.MISSING_ID),
    ("event_id int", {"event_id": 17}, ErrorCode.BAD_ID),
    ("event_id empty", {"event_id": ""}, ErrorCode.BAD_ID),
    ("event_id too long", {"event_id": "x" * 129}, ErrorCode.BAD_ID),
    ("event_id control char", {"event_id": "a\nb"}, ErrorCode.BAD_ID),
    ("event_id DEL", {"event_id": "a\x7f"}, ErrorCode.BAD_ID),
    ("customer_id int", {"customer_id": 5}, ErrorCode.BAD_ID),
    ("anonymous_id empty", {"anonymous_id": ""}, ErrorCode.BAD_ID),
    ("timestamp missing", {"timestamp": DROP}, ErrorCode.BAD_TIMESTAMP),
    ("timestamp float", {"timestamp": float(TS)}, ErrorCode.BAD_TIMESTAMP),
    ("timestamp bool", {"timestamp": True}, ErrorCode.BAD_TIMESTAMP),
    ("timestamp naive ISO", {"timestamp": "2026-11-23T10:00:00"}, ErrorCode.BAD_TIMESTAMP),
    ("timestamp date only", {"timestamp": "2026-11-23"}, ErrorCode.BAD_TIMESTAMP),
    ("timestamp garbage", {"timestamp": "yesterday"}, ErrorCode.BAD_TIMESTAMP),
    ("timestamp in seconds", {"timestamp": TS // 1000}, ErrorCode.ABSURD_TIMESTAMP),
    ("timestamp negative", {"timestamp": -5}, ErrorCode.ABSURD_TIMESTAMP),
    ("timestamp 1999", {"timestamp": "1999-12-31T23:59:59Z"}, ErrorCode.ABSURD_TIMESTAMP),
    ("timestamp far future", {"timestamp": NOW + 600_001}, ErrorCode.ABSURD_TIMESTAMP),
    ("timestamp huge", {"timestamp": 2**62}, ErrorCode.ABSURD_TIMESTAMP),
    ("no routing id", {"customer_id": None, "anonymous_id": DROP}, ErrorCode.MISSING_ROUTING_ID),
    ("properties null", {P: None}, ErrorCode.BAD_PROPERTIES),
    ("properties list", {P: [1]}, ErrorCode.BAD_PROPERTIES),
    ("url missing", {P: {}}, ErrorCode.BAD_PROPERTIES),
    ("url int", {P: {"url": 5}}, ErrorCode.BAD_PROPERTIES),
    ("price negative", {P: {"url": "/", "price": -0.01}}, ErrorCode.BAD_PROPERTIES),
    ("price bool", {P: {"url": "/", "price": True}}, ErrorCode.BAD_PROPERTIES),
    ("price string", {P: {"url": "/", "price": "9.99"}}, ErrorCode.BAD_PROPERTIES),
    ("reserved name", {P: {"url": "/", "timestamp": 1}}, ErrorCode.BAD_PROPERTIES),
    ("extra too deep", {P: {"url": "/", "x": [[[[[[[[[1]]]]]]]]]}}, ErrorCode.BAD_PROPERTIES),
    ("extra string huge", {P: {"url": "/", "x": "y" * 8193}}, ErrorCode.BAD_PROPERTIES),
    ("url too long", {P: {"url": "y" * 8193}}, ErrorCode.BAD_PROPERTIES),
    ("source int", {"source": 1}, ErrorCode.BAD_ENVELOPE),
    ("source empty", {"source": ""}, ErrorCode.BAD_ENVELOPE),
    ("schema_version 2", {"schema_version": 2}, ErrorCode.BAD_ENVELOPE),
    ("schema_version bool", {"schema_version": True}, ErrorCode.BAD_ENVELOPE),
]


@pytest.mark.parametrize(("what", "over", "code"), CASES, ids=[c[0] for c in CASES])
def test_error_codes(what: str, over: dict[str, Any], code: ErrorCode) -> None:
    raw: object = over["__replace__"] if "__replace__" in over else make(**over)
    with pytest.raises(InvalidEvent) as info:
        validate_event(raw, NOW)
    assert info.value.code is code, info.value.message
    assert info.value.message


TYPE_CASES: list[tuple[str, dict[str, Any], ErrorCode]] = [
    ("cart_add", {"product_id": "p"}, ErrorCode.BAD_PROPERTIES),
    ("cart_add", {"product_id": "p", "price": 1, "quantity": 0}, ErrorCode.BAD_PROPERTIES),
    ("cart_add", {"product_id": "p", "price": 1, "quantity": 1.5}, ErrorCode.BAD_PROPERTIES),
    ("cart_add", {"product_id": "p", "price": 1, "quantity": None}, ErrorCode.BAD_PROPERTIES),
    ("cart_remove", {"quantity": 1}, ErrorCode.BAD_PROPERTIES),
    ("checkout", {"cart_value": -1}, ErrorCode.BAD_PROPERTIES),
    ("purchase", {"order_id": "o", "amount": 1, "currency": "eur"}, ErrorCode.BAD_PROPERTIES),
    ("purchase", {"order_id": "o", "amount": 1}, ErrorCode.BAD_PROPERTIES),
    (
        "purchase",
        {"order_id": "o", "amount": 1, "currency": "EUR", "items": [{"quantity": 1}]},
        ErrorCode.BAD_PROPERTIES,
    ),
    ("email_sent", {}, ErrorCode.BAD_PROPERTIES),
    ("email_open", {"campaign_id": 7}, ErrorCode.BAD_PROPERTIES),
    ("email_bounce", {"kind": "medium"}, ErrorCode.BAD_PROPERTIES),
    ("identify", {}, ErrorCode.BAD_PROPERTIES),
    ("identify", {"traits": {"country": "France"}}, ErrorCode.BAD_PROPERTIES),
    ("identify", {"traits": {"birthday": "1990-02-30"}}, ErrorCode.BAD_PROPERTIES),
    ("identify", {"traits": {"satisfaction": 11}}, ErrorCode.BAD_PROPERTIES),
    ("identify", {"traits": {"pets": ["cat"]}}, ErrorCode.BAD_PROPERTIES),
    ("identify", {"traits": {"bio": "x" * 8193}}, ErrorCode.BAD_PROPERTIES),
    ("forget", {"reason": 3}, ErrorCode.BAD_PROPERTIES),
]


@pytest.mark.parametrize(("kind", "props", "code"), TYPE_CASES)
def test_type_rules(kind: str, props: dict[str, Any], code: ErrorCode) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(make(kind, properties=props), NOW)
    assert info.value.code is code, info.value.message
    assert "$.properties" in info.value.message


def test_alias_needs_both_distinct_ids() -> None:
    assert routing_id(validate_event(make("alias"), NOW)) == "c-1"
    for over, code in [
        ({"anonymous_id": None}, ErrorCode.MISSING_ROUTING_ID),
        ({"customer_id": DROP}, ErrorCode.MISSING_ROUTING_ID),
        ({"anonymous_id": "c-1"}, ErrorCode.BAD_ENVELOPE),
    ]:
        with pytest.raises(InvalidEvent) as info:
            validate_event(make("alias", **over), NOW)
        assert info.value.code is code


def test_routing_id_prefers_customer() -> None:
    assert routing_id(validate_event(make(), NOW)) == "c-1"
    assert routing_id(validate_event(make(customer_id=None), NOW)) == "a-1"


# --- parse_record ------------------------------------------------------------------------


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_single_object_record() -> None:
    good, bad = parse_record(dumps(make()), NOW)
    assert [e["event_id"] for e in good] == ["e-1"] and bad == []


def test_single_invalid_object_keeps_record_bytes() -> None:
    raw = dumps(make(event_id=None))
    expected = Rejected(None, ErrorCode.MISSING_ID, "`event_id` is null", raw)
    assert parse_record(raw, NOW) == ([], [expected])


def test_array_record_mixes_valid_and_invalid_in_order() -> None:
    events = [make(event_id=f"e{i}") for i in range(5)]
    events[1]["timestamp"] = "never"
    events[3]["properties"] = {"url": 1}
    raw = b"[" + b", ".join(dumps(e) for e in events) + b", [1], 7]"
    good, bad = parse_record(raw, NOW)
    assert [e["event_id"] for e in good] == ["e0", "e2", "e4"]
    assert [(r.index, r.code) for r in bad] == [
        (1, ErrorCode.BAD_TIMESTAMP), (3, ErrorCode.BAD_PROPERTIES),
        (5, ErrorCode.NOT_OBJECT), (6, ErrorCode.NOT_OBJECT),
    ]  # fmt: skip
    assert bad[0].raw == dumps(events[1]), "an element's original bytes"
    assert bad[2].raw == b"[1]" and bad[3].raw == b"7"


def test_fast_path_post_check_failure_falls_back() -> None:
    events = [make(event_id="ok"), make(event_id="late", timestamp=1)]
    good, bad = parse_record(dumps(events), NOW)
    assert [e["event_id"] for e in good] == ["ok"]
    assert [(r.index, r.code) for r in bad] == [(1, ErrorCode.ABSURD_TIMESTAMP)]


def test_empty_array_is_nothing() -> None:
    assert parse_record(b"[]", NOW) == ([], [])
    assert parse_record(b" [ ] ", NOW) == ([], [])


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, ErrorCode.UNPARSABLE),
        (b"", ErrorCode.UNPARSABLE),
        (b"{", ErrorCode.UNPARSABLE),
        (b'{"a": NaN}', ErrorCode.UNPARSABLE),
        (b"[Infinity]", ErrorCode.UNPARSABLE),
        (b'{"event_id": "\xff"}', ErrorCode.UNPARSABLE),
        (b'{"event_id": "\\ud800"}', ErrorCode.UNPARSABLE),
        (b"[" * 2000 + b"]" * 2000, ErrorCode.UNPARSABLE),
        (b'"just a string"', ErrorCode.NOT_OBJECT),
        (b"42", ErrorCode.NOT_OBJECT),
        (b"null", ErrorCode.NOT_OBJECT),
    ],
)
def test_whole_record_rejections(raw: bytes | None, code: ErrorCode) -> None:
    good, bad = parse_record(raw, NOW)
    assert good == []
    assert [(r.index, r.code, r.raw) for r in bad] == [(None, code, raw or b"")]


def test_size_and_count_limits() -> None:
    limits = Limits(max_event_bytes=300, max_record_bytes=2_000, max_events_per_record=4)
    small = make()
    big = make(event_id="big")
    big["properties"]["blob"] = "z" * 300
    assert parse_record(dumps(big), NOW, limits)[1][0].code is ErrorCode.OVERSIZED
    good, bad = parse_record(dumps([small, big, small]), NOW, limits)
    assert len(good) == 2
    assert [(r.index, r.code, r.raw) for r in bad] == [(1, ErrorCode.OVERSIZED, dumps(big))]
    assert parse_record(dumps([small] * 5), NOW, limits)[1][0].code is ErrorCode.TOO_MANY_EVENTS
    huge = dumps([small] * 4 + [{"pad": "p" * 2000}])
    assert parse_record(huge, NOW, limits)[1][0].code is ErrorCode.OVERSIZED


def test_duplicate_keys_last_wins() -> None:
    raw = dumps(make())[:-1] + b',"event_id":"second"}'
    assert parse_record(raw, NOW)[0][0]["event_id"] == "second"


def test_default_limits_are_the_documented_ones() -> None:
    assert DEFAULT_LIMITS.max_event_bytes == 32_768
    assert DEFAULT_LIMITS.max_record_bytes == 1_048_576
    assert DEFAULT_LIMITS.max_events_per_record == 1_000
    assert DEFAULT_LIMITS.min_timestamp_ms == 946_684_800_000


def test_large_array_spanning_chunks_keeps_order_and_indexes() -> None:
    n = 3 * CHUNK + 5
    events: list[Any] = [make(event_id=f"e{i}", customer_id=f"c{i % 7}") for i in range(n)]
    broken = {0: ErrorCode.MISSING_ID, CHUNK - 1: ErrorCode.BAD_TIMESTAMP,
              CHUNK: ErrorCode.NOT_OBJECT, 2 * CHUNK + 3: ErrorCode.ABSURD_TIMESTAMP,
              n - 1: ErrorCode.UNKNOWN_TYPE}  # fmt: skip
    events[0]["event_id"] = None
    events[CHUNK - 1]["timestamp"] = "soon"
    events[CHUNK] = "not an event"
    events[2 * CHUNK + 3]["timestamp"] = NOW + 3_600_000
    events[n - 1]["type"] = "page_views"
    good, bad = parse_record(dumps(events), NOW)
    assert [e["event_id"] for e in good] == [f"e{i}" for i in range(n) if i not in broken]
    assert [(r.index, r.code) for r in bad] == sorted(broken.items())
    assert all(orjson.loads(r.raw) == events[r.index] for r in bad if r.index is not None)


def test_oversized_element_in_a_later_chunk() -> None:
    events = [make(event_id=f"e{i}") for i in range(2 * CHUNK)]
    events[CHUNK + 1]["properties"]["blob"] = "b" * 2_000
    limits = Limits(max_event_bytes=1_000)
    good, bad = parse_record(dumps(events), NOW, limits)
    assert len(good) == 2 * CHUNK - 1
    assert [(r.index, r.code) for r in bad] == [(CHUNK + 1, ErrorCode.OVERSIZED)]


@pytest.mark.parametrize(
    "bad", [{"max_event_bytes": -1}, {"max_depth": 2.5}, {"max_future_ms": None}]
)
def test_limits_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Limits"):
        Limits(**bad)


def test_messages_stay_short_with_huge_bad_values() -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(make("email_bounce", properties={"kind": "x" * 5_000}), NOW)
    assert info.value.code is ErrorCode.BAD_PROPERTIES
    assert len(info.value.message) < 300 and info.value.message.endswith("`$.properties.kind`")
    with pytest.raises(InvalidEvent) as info:
        validate_event(make(type="t" * 5_000), NOW)
    assert len(info.value.message) < 400


# --- regressions found by the fuzz tests (tests/fuzz_inputs.py) ---------------------------------

def _at_stack_depth(depth: int, call: Any) -> Any:
    """Run ``call()`` with ``depth`` frames below it (a worker's stack is deep: Faust, asyncio)."""
    return call() if depth == 0 else _at_stack_depth(depth - 1, call)


@pytest.mark.parametrize("depth", [990, 1000, 1020])
@pytest.mark.parametrize("big", [False, True])
def test_array_element_nested_just_under_the_parser_limit(depth: int, big: bool) -> None:
    # msgspec's raw-element split raised RecursionError on an element nested ~1000 deep (orjson
    # accepts up to 1024): parse_record raised, so ingest dead-lettered the whole record as
    # internal_error (its valid events lost) and the collector answered 500.
    limits = Limits(max_event_bytes=4_000)  # a bigger record has its elements split at once
    good_ev = make("page_view", properties={"url": "/", "pad": "p" * (3_000 if big else 0)})
    nested = b"[" * depth + b"]" * depth
    record = b"[" + orjson.dumps(good_ev) + b" ,\n" + nested + b"]"
    assert (len(record) > limits.max_event_bytes) is big
    good, bad = _at_stack_depth(800, lambda: parse_record(record, NOW, limits))
    assert [e["event_id"] for e in good] == ["e-1"]
    assert [(r.index, r.code, r.raw) for r in bad] == [(1, ErrorCode.NOT_OBJECT, nested)]


@pytest.mark.parametrize("depth", [990, 1000, 1020])
def test_type_nested_just_under_the_parser_limit(depth: int) -> None:
    # the message quoted repr(type), which raised RecursionError for a deeply nested value
    record = b'{"type":' + b"[" * depth + b"]" * depth + b"}"
    good, bad = _at_stack_depth(800, lambda: parse_record(record, NOW))
    assert not good
    assert [(r.index, r.code) for r in bad] == [(None, ErrorCode.UNKNOWN_TYPE)]
    assert "`type` is array [...]" in bad[0].message
    with pytest.raises(InvalidEvent, match="object"):
        validate_event(make(type={"a": 1}), NOW)
    with pytest.raises(InvalidEvent, match="'xxxxx"):
        validate_event(make(type="x" * 100_000), NOW)


def test_extra_property_and_trait_names_are_bounded() -> None:
    # only values and the keys *inside* an extra property were bounded: a property (or trait)
    # name of any length up to max_event_bytes passed
    limit = DEFAULT_LIMITS.max_string_chars
    ok = make("page_view", properties={"url": "/", "k" * limit: 1})
    assert validate_event(ok, NOW)["properties"]["k" * limit] == 1
    with pytest.raises(InvalidEvent) as exc:
        validate_event(make("page_view", properties={"url": "/", "k" * (limit + 1): 1}), NOW)
    assert exc.value.code is ErrorCode.BAD_PROPERTIES and "property name longer" in str(exc.value)
    with pytest.raises(InvalidEvent) as exc:
        validate_event(make("identify", properties={"traits": {"t" * (limit + 1): 1}}), NOW)
    assert exc.value.code is ErrorCode.BAD_PROPERTIES and "trait name longer" in str(exc.value)
