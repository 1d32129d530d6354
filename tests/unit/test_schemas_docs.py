"""docs/events.md must stay true: its examples validate and its tables list every code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.bundle import decode_bundle
from schemas.changes import decode_change
from schemas.deadletter import decode_dead_letter
from schemas.errors import ErrorCode
from schemas.models import EVENT_TYPES
from schemas.partitioner import partition_for
from schemas.validation import parse_record, validate_event

DOC = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
BLOCKS = [orjson.loads(b) for b in re.findall(r"```json\n(.*?)```", DOC, flags=re.DOTALL)]
NOW = 1_795_478_400_000  # 2026-11-24T00:00:00Z, after every example


def examples() -> list[dict[str, Any]]:
    return [b for b in BLOCKS if isinstance(b, dict) and b.get("type") in EVENT_TYPES]


@pytest.mark.parametrize("event", examples(), ids=lambda e: e["event_id"])
def test_event_examples_are_valid(event: dict[str, Any]) -> None:
    canonical = validate_event(event, NOW)
    assert canonical["type"] == event["type"]


def test_every_type_has_an_example() -> None:
    assert {e["type"] for e in examples()} == set(EVENT_TYPES)


def test_every_error_code_is_documented() -> None:
    for code in ErrorCode:
        assert f"| `{code.value}` |" in DOC, code


def test_every_documented_code_exists() -> None:
    table = DOC.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert documented and set(documented) == {c.value for c in ErrorCode}


def test_custom_type_example_validates() -> None:
    from processors.lang.typesfile import load_types  # noqa: PLC0415
    from schemas.validation import Schema  # noqa: PLC0415

    (types_yaml,) = [b for b in re.findall(r"```yaml\n(.*?)```", DOC, flags=re.DOTALL)
                     if "types:" in b]
    schema = Schema(load_types(types_yaml))
    custom = [b for b in BLOCKS if isinstance(b, dict) and b.get("type") in schema.custom]
    assert custom
    for event in custom:
        assert validate_event(event, NOW, schema=schema)["type"] == event["type"]


def test_format_examples_decode() -> None:
    by_shape = {("v", "kind"): [], ("v", "code"): [], ("customer_id", "segment"): []}
    for block in BLOCKS:
        for keys, found in by_shape.items():
            if isinstance(block, dict) and all(k in block for k in keys):
                found.append(orjson.dumps(block))
    (bundle,), (letter,), (change,) = by_shape.values()
    assert decode_bundle(bundle)[0]["event_id"] == "e-1"
    assert decode_change(change).action == "enter"
    dead = decode_dead_letter(letter)
    _, rejected = parse_record(dead.raw, NOW)
    assert (rejected[0].code.value, rejected[0].message) == (dead.code, dead.message)


def test_partition_example() -> None:
    match = re.search(r'partition_for\("([^"]+)", (\d+)\) == (\d+)', DOC)
    assert match is not None
    assert partition_for(match[1], int(match[2])) == int(match[3])
