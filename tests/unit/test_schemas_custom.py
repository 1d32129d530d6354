"""Validation of custom event types (a types file): unknown_type with the nearest name,
bad_property naming the property and the expected kind, the same verdicts in arrays."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from processors.lang.typesfile import load_types
from schemas.errors import ErrorCode, InvalidEvent
from schemas.validation import NOW, Schema, parse_record, validate_event
from tests.unit.test_types_file import GOOD

SCHEMA = Schema(load_types(GOOD))


def ev(typ: str = "video_played", i: int = 1, **props: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "type": typ, "customer_id": "c", "timestamp": NOW,
            "properties": props}


def test_valid_custom_event_is_canonical() -> None:
    out = validate_event(ev(duration_s=3, quality="hd", started_at="2026-11-23T10:00:00+01:00",
                            extra_thing=[1]), NOW, schema=SCHEMA)
    assert out["properties"] == {"duration_s": 3, "quality": "hd",
                                 "started_at": 1_795_424_400_000, "extra_thing": [1]}
    assert validate_event(ev("trial_started"), NOW, schema=SCHEMA)["properties"] == {}


@pytest.mark.parametrize(("props", "message"), [
    ({}, "property `duration_s` of video_played: expected number >= 0 (missing)"),
    ({"duration_s": -1}, "property `duration_s` of video_played: expected number >= 0"),
    ({"duration_s": True}, "property `duration_s` of video_played: expected number >= 0"),
    ({"duration_s": 1, "quality": "4k"},
     "property `quality` of video_played: expected one of sd, hd, uhd or null"),
    ({"duration_s": 1, "views": 1.5}, "property `views` of video_played: expected integer >= 1"),
    ({"duration_s": 1, "live": "yes"}, "property `live` of video_played: expected boolean"),
    ({"duration_s": 1, "started_at": "yesterday"},
     "property `started_at` of video_played: expected timestamp"),
])
def test_bad_property(props: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEvent) as e:
        validate_event(ev(**props), NOW, schema=SCHEMA)
    assert e.value.code is ErrorCode.BAD_PROPERTY
    assert e.value.message.startswith(message)


def test_unknown_type_names_the_nearest_declared_type() -> None:
    with pytest.raises(InvalidEvent) as e:
        validate_event(ev("video_playd"), NOW, schema=SCHEMA)
    assert e.value.code is ErrorCode.UNKNOWN_TYPE
    assert "(did you mean 'video_played'?)" in e.value.message
    with pytest.raises(InvalidEvent) as e:
        validate_event(ev("purchas"), NOW)
    assert "(did you mean 'purchase'?)" in e.value.message


def test_custom_types_need_the_schema() -> None:
    with pytest.raises(InvalidEvent) as e:
        validate_event(ev(duration_s=1), NOW)
    assert e.value.code is ErrorCode.UNKNOWN_TYPE


def test_array_verdicts_match_single_events() -> None:
    events = [ev(i=0, duration_s=1),
              {"event_id": "p", "type": "page_view", "anonymous_id": "a", "timestamp": NOW,
               "properties": {"url": "/"}},
              ev(i=2, duration_s="x"), ev("trial_started", 3), ev("nope", 4),
              ev(i=5, duration_s=2, started_at=5)] * 7
    good, bad = parse_record(orjson.dumps(events), NOW, schema=SCHEMA)
    single_good, single_bad = [], []
    for i, e in enumerate(events):
        try:
            single_good.append(validate_event(e, NOW, schema=SCHEMA))
        except InvalidEvent as exc:
            single_bad.append((i, exc.code, exc.message))
    assert good == single_good
    assert [(r.index, r.code, r.message) for r in bad] == single_bad
    assert {r.code for r in bad} == {ErrorCode.BAD_PROPERTY, ErrorCode.UNKNOWN_TYPE}
