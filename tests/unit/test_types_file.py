"""The event-types file: its checks (every problem at once, naming type and property) and
conditions on custom types, with property names checked against the declarations."""

from __future__ import annotations

from typing import Any

import pytest

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.errors import DefinitionError
from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from schemas.eventtypes import PropertyDecl

T0 = 1_798_761_600_000  # 2027-01-01T00:00:00Z
D = 86_400_000
GOOD = """\
version: "2026-12-06.1"
types:
  - name: video_played
    description: A video was watched.
    properties:
      duration_s: {kind: number, required: true, min: 0}
      title: {kind: string}
      quality: {kind: enum, values: [sd, hd, uhd]}
      views: {kind: integer, min: 1, max: 10}
      live: {kind: boolean}
      started_at: {kind: timestamp}
  - name: trial_started
    description: A trial began.
"""


def test_the_issue_shape_loads() -> None:
    t = load_types(GOOD)
    assert t.version == "2026-12-06.1" and t.names == ("video_played", "trial_started")
    v = t.get("video_played")
    assert v is not None
    assert v.properties["duration_s"] == PropertyDecl("number", True, 0, None)
    assert v.properties["quality"] == PropertyDecl("enum", values=("sd", "hd", "uhd"))
    assert [p.kind for p in v.properties.values()] == [
        "number", "string", "enum", "integer", "boolean", "timestamp"]


@pytest.mark.parametrize(("body", "message"), [
    ("  - name: purchase\n    description: x\n",
     "t.yaml:3: type 'purchase': name: a built-in type cannot be redefined"),
    ("  - name: Video\n    description: x\n",
     "t.yaml:3: type 'Video': name must match [a-z][a-z0-9_]*"),
    ("  - name: v\n    descripton: x\n",
     "t.yaml:4: type 'v': unknown key 'descripton' (did you mean 'description'?)"),
    ("  - name: v\n    description: x\n    properties:\n      d: {kind: numbr}\n",
     "t.yaml:6: type 'v': property 'd': kind 'numbr' is not a kind (did you mean 'number'?)"),
    ("  - name: v\n    description: x\n    properties:\n      d: {kind: number, requird: true}\n",
     "t.yaml:6: type 'v': property 'd': unknown key 'requird' (did you mean 'required'?)"),
    ("  - name: v\n    description: x\n    properties:\n      d: {kind: enum}\n",
     "type 'v': property 'd': an enum needs values"),
    ("  - name: v\n    description: x\n    properties:\n      d: {kind: string, max: 3}\n",
     "type 'v': property 'd': max applies to kinds number and integer only"),
    ("  - name: v\n    description: x\n    properties:\n      d: {kind: number, min: 5, max: 1}\n",
     "type 'v': property 'd': max 1 is below min 5"),
    ("  - name: v\n    description: x\n    properties:\n      d: {kind: number, required: 1}\n",
     "type 'v': property 'd': required must be true or false"),
    ("  - name: v\n    description: x\n    properties:\n      timestamp: {kind: number}\n",
     "type 'v': property 'timestamp': the name is reserved"),
    ("  - name: v\n    description: x\n  - name: v\n    description: y\n",
     "t.yaml:5: type 'v': duplicate type name (first on line 3)"),
])
def test_bad_types_file(body: str, message: str) -> None:
    with pytest.raises(DefinitionError) as e:
        load_types(f'version: "1"\ntypes:\n{body}', name="t.yaml")
    assert message in str(e.value)


def test_every_problem_at_once() -> None:
    with pytest.raises(DefinitionError) as e:
        load_types('version: 1\ntypo: []\ntypes:\n  - {name: v, description: x, '
                   'properties: {a: {kind: enum}, b: {kind: nope}}}\n', name="t.yaml")
    lines = str(e.value).splitlines()
    assert lines[0].startswith("t.yaml:1: version must be a string")
    assert lines[1].startswith("t.yaml:2: unknown key 'typo' in the file; allowed: version, types")
    assert len(lines) == 4


def test_not_a_mapping() -> None:
    with pytest.raises(DefinitionError, match="must be a mapping with version and types"):
        load_types("- a\n", name="t.yaml")


def _defs(condition: str) -> str:
    return (f'version: "1"\nsegments:\n  - name: s\n    description: d\n'
            f"    condition: '{condition}'\n")


def test_custom_type_needs_the_types_file() -> None:
    with pytest.raises(DefinitionError, match="unknown event type 'video_played'"):
        load_definitions(_defs("count(video_played, 7d) >= 2"))


@pytest.mark.parametrize(("condition", "message"), [
    ("count(video_played where duraton_s >= 30, 7d) >= 2",
     "unknown property 'duraton_s' of video_played (did you mean 'duration_s'?)"),
    ("sum(video_played.title, 7d) > 0", "sum() needs a number property: video_played.title is"),
    ("count(video_playd, 7d) > 0", "unknown event type 'video_playd' (did you mean "
                                   "'video_played'?)"),
])
def test_custom_property_names_are_checked(condition: str, message: str) -> None:
    with pytest.raises(DefinitionError) as e:
        load_definitions(_defs(condition), types=load_types(GOOD))
    assert message in str(e.value)


def _ev(i: int, typ: str, ts: int, **props: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "type": typ, "customer_id": "c", "anonymous_id": None,
            "timestamp": ts, "source": "t", "schema_version": 1, "properties": props}


def test_conditions_on_custom_types_like_built_ins() -> None:
    cat = load_definitions(
        'version: "1"\nsegments:\n'
        "  - {name: watcher, description: d, condition: "
        "'count(video_played where duration_s >= 30, 7d) >= 2'}\n"
        "  - {name: long, description: d, condition: 'sum(video_played.duration_s, 7d) >= 100'}\n"
        "  - {name: trial, description: d, condition: 'last(trial_started) within 14d'}\n",
        types=load_types(GOOD))
    eng = Engine(compile_catalogue(cat))
    st = None
    seen: list[tuple[str, str, int]] = []
    for e in (_ev(1, "video_played", T0, duration_s=10), _ev(2, "trial_started", T0 + 1),
              _ev(3, "video_played", T0 + 2, duration_s=40),
              _ev(4, "video_played", T0 + 3, duration_s=60)):
        step = eng.apply(st, e, e["timestamp"])
        st = step.state
        seen += [(c.segment, c.action, c.at - T0) for c in step.changes]
    assert st is not None
    seen += [(c.segment, c.action, c.at - T0) for c in eng.advance(st, T0 + 30 * D).changes]
    # long: 110 at 3; still 100 when the 10 leaves at 7d; 60 when the 40 leaves at 7d + 2
    assert sorted(seen, key=lambda c: c[2]) == [
        ("trial", "enter", 1), ("watcher", "enter", 3), ("long", "enter", 3),
        ("watcher", "exit", 7 * D + 2), ("long", "exit", 7 * D + 2), ("trial", "exit", 14 * D + 1)]
