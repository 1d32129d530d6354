"""The committed JSON Schema files are exactly what the models generate, and are valid schemas."""

from __future__ import annotations

import argparse
from pathlib import Path

import jsonschema
import orjson
import pytest

from schemas.models import EVENT_TYPES
from schemas.publish import build_schemas, export
from stream.cli import cmd_schemas

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"


def test_committed_files_have_not_drifted(tmp_path: Path) -> None:
    written = export(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in COMMITTED.glob("*.json"))
    for path in written:
        assert path.read_bytes() == (COMMITTED / path.name).read_bytes(), (
            f"{path.name} is out of date: run `make schemas` and commit schemas/jsonschema/"
        )


def main(argv: list[str]) -> int:
    """`segstream schemas ...` without importing the other sub-commands."""
    parser = argparse.ArgumentParser(prog="segstream")
    cmd_schemas.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_export_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "export", str(tmp_path / "out")]) == 0
    assert main(["schemas", "export", "--check", str(tmp_path / "out")]) == 0
    (tmp_path / "out" / "purchase.json").write_text("{}")
    assert main(["schemas", "export", "--check", str(tmp_path / "out")]) == 1
    assert "purchase" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(build_schemas()))
def test_each_file_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = orjson.loads((COMMITTED / f"{name}.json").read_bytes())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_one_file_per_type_plus_union_record_and_change() -> None:
    assert set(build_schemas()) == {*EVENT_TYPES, "event", "record", "segment_change"}


def test_record_schema_accepts_one_event_or_an_array() -> None:
    record = jsonschema.Draft202012Validator(
        orjson.loads((COMMITTED / "record.json").read_bytes())
    )
    event = {"event_id": "e", "type": "checkout", "customer_id": "c", "timestamp": 1}
    assert record.is_valid(event)
    assert record.is_valid([event, event])
    assert record.is_valid([])
    assert not record.is_valid([[event]])
    assert not record.is_valid({**event, "customer_id": None})


def test_custom_types_get_schemas_like_the_built_ins(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    types = Path(__file__).resolve().parents[2] / "processors" / "event_types.yaml"
    out = tmp_path / "out"
    assert main(["schemas", "export", "--types", str(types), str(out)]) == 0
    assert main(["schemas", "export", "--types", str(types), "--check", str(out)]) == 0
    review = orjson.loads((out / "review_posted.json").read_bytes())
    jsonschema.Draft202012Validator.check_schema(review)
    one = jsonschema.Draft202012Validator(review)
    record = jsonschema.Draft202012Validator(orjson.loads((out / "record.json").read_bytes()))
    event = {"event_id": "e", "type": "review_posted", "customer_id": "c", "timestamp": 1,
             "properties": {"rating": 5}}
    assert one.is_valid(event) and record.is_valid([event])
    for bad in ({"rating": 6}, {"rating": 2.5}, {}, {"rating": 3, "product_id": 7}):
        assert not one.is_valid({**event, "properties": bad}), bad
        assert not record.is_valid({**event, "properties": bad}), bad
    assert not record.is_valid({**event, "type": "review_postd"})
    bad_types = tmp_path / "t.yaml"
    bad_types.write_text('version: "1"\ntypes: [{name: purchase, description: x}]\n')
    capsys.readouterr()
    assert main(["schemas", "export", "--types", str(bad_types), str(out)]) == 3
    assert "a built-in type cannot be redefined" in capsys.readouterr().err
