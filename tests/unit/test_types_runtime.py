"""The event-types document, the breaking-change check of `types apply`, the live types of a
process and `segstream types validate` (offline)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from stream.cli import main
from stream.eventtypes import LiveTypes, TypesDoc, TypesDocError, breaking_changes
from stream.settings import Settings

TYPES = Path(__file__).resolve().parents[2] / "processors" / "event_types.yaml"
BASE = load_types(TYPES)
DEFS = load_definitions(
    'version: "d1"\nsegments:\n'
    "  - {name: unhappy, description: d, condition: 'count(review_posted where rating <= 2, "
    "30d) >= 1'}\n"
    "  - {name: heavy, description: d, condition: 'sum(app_session.minutes, 7d) >= 300'}\n"
    "  - {name: buyers, description: d, condition: 'count(purchase, 30d) >= 1'}\n", types=BASE)


def variant(edit: str) -> str:
    return TYPES.read_text().replace('version: "2026-12-07.1"', 'version: "2"').replace(
        *edit.split(" => "))


@pytest.mark.parametrize(("edit", "problem"), [
    ("      rating: {kind: integer, required: true, min: 1, max: 5}\n => ",
     "segment 'unhappy' uses review_posted.rating, which the new file removes"),
    ("rating: {kind: integer => rating: {kind: number",
     "segment 'unhappy' uses review_posted.rating: its kind changes from integer to number"),
    ("- name: app_session => - name: app_sessions",
     "segment 'heavy' uses type app_session, which the new file removes"),
])
def test_breaking_changes_name_the_segment(edit: str, problem: str) -> None:
    assert breaking_changes(BASE, load_types(variant(edit)), DEFS) == [problem]


@pytest.mark.parametrize("edit", [
    "      text: {kind: string}\n =>       text: {kind: string}\n      lang: {kind: string}\n",
    "types:\n => types:\n  - {name: wishlist_add, description: w}\n",
    "platform: {kind: enum, values: [ios, android, web]} => platform: {kind: enum, values: [ios]}",
    "      text: {kind: string}\n => ",  # a property no segment uses
])
def test_compatible_changes_pass(edit: str) -> None:
    assert breaking_changes(BASE, load_types(variant(edit)), DEFS) == []


def test_removing_every_type_breaks_the_segments_using_them() -> None:
    assert breaking_changes(BASE, None, DEFS) == [
        "segment 'unhappy' uses type review_posted, which the new file removes",
        "segment 'heavy' uses type app_session, which the new file removes"]


def test_document_round_trip_and_bad_records() -> None:
    doc, types = TypesDoc.of_text(TYPES.read_text(), name="t.yaml")
    assert TypesDoc.decode(doc.encode()) == doc and doc.types() == types == BASE
    for bad in (b"nope", b"[]", orjson.dumps({"version": 1, "text": "", "published_at": 0})):
        with pytest.raises(TypesDocError):
            TypesDoc.decode(bad)


def test_live_types_switch_on_a_new_version_only() -> None:
    live = LiveTypes(Settings.from_env({}))
    assert live.version is None and live.schema.custom == frozenset()
    doc, _ = TypesDoc.of_text(TYPES.read_text())
    assert live.apply(doc.encode())
    assert live.version == "2026-12-07.1" and "review_posted" in live.schema.custom
    assert not live.apply(b"garbage") and live.errors == 1
    bad = TypesDoc("9", "version: '9'\ntypes: [{name: purchase, description: x}]\n", 0)
    assert not live.apply(bad.encode()) and live.version == "2026-12-07.1"


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["types", "validate", str(TYPES)]) == 0
    assert "2 types (review_posted, app_session): OK" in capsys.readouterr().out
    bad = tmp_path / "t.yaml"
    bad.write_text('version: "1"\ntypes:\n  - {name: v, description: x, properties: '
                   "{d: {kind: numbr}}}\n")
    assert main(["types", "validate", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "type 'v': property 'd': kind 'numbr' is not a kind (did you mean 'number'?)" in err
    assert main(["types", "validate", str(tmp_path / "missing.yaml")]) == 4


def test_segments_validate_takes_the_types_file(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    defs = tmp_path / "d.yaml"
    defs.write_text('version: "1"\nsegments:\n  - {name: s, description: d, condition: '
                    "'count(review_posted where ratng <= 2, 30d) >= 1'}\n")
    assert main(["segments", "validate", str(defs)]) == 3
    assert "unknown event type 'review_posted'" in capsys.readouterr().err
    assert main(["segments", "validate", "--types", str(TYPES), str(defs)]) == 3
    assert "unknown property 'ratng' of review_posted (did you mean 'rating'?)" in \
        capsys.readouterr().err
