"""Segments built from segments (``segment.NAME``): loading, ordering, evaluation."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.errors import DefinitionError
from processors.lang.load import load_definitions
from processors.replay import replay

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle as O

T0 = 1_795_477_200_000
MIN = 60_000


def catalogue(*segments: tuple[str, str], disabled: str = "") -> str:
    body = "".join(
        f"  - name: {name}\n    description: d\n    condition: {cond}\n"
        + ("    enabled: false\n" if name == disabled else "")
        for name, cond in segments)
    return f'version: "r-1"\nsettings: {{allowed_lateness: 10m}}\nsegments:\n{body}'


def ev(eid: str, typ: str, ts: int, cid: str = "c1", **props: Any) -> dict[str, Any]:
    return {"event_id": eid, "type": typ, "customer_id": cid, "anonymous_id": None,
            "timestamp": T0 + ts, "source": "t", "schema_version": 1, "properties": props}


def test_segments_are_ordered_after_those_they_reference() -> None:
    cat = load_definitions(catalogue(("a", "segment.c and not segment.b"),
                                     ("b", "count(purchase, 1d) >= 1"),
                                     ("c", "segment.b or count(page_view, 1h) >= 1"),
                                     ("d", "count(email_open, 1d) >= 1")))
    assert [s.name for s in cat.segments] == ["b", "c", "a", "d"]


@pytest.mark.parametrize(("segments", "disabled", "message"), [
    ((("a", "segment.viewr"), ("viewer", "count(page_view, 1h) >= 1")), "",
     "unknown segment 'viewr' (did you mean 'viewer'?)"),
    ((("a", "segment.b"), ("b", "segment.c"), ("c", "segment.a")), "",
     "segments refer to each other in a cycle: a -> b -> c -> a"),
    ((("a", "segment.a or count(page_view, 1h) >= 1"),), "",
     "segments refer to each other in a cycle: a -> a"),
    ((("a", "segment.b"), ("b", "count(page_view, 1h) >= 1")), "b",
     "segment 'b' is disabled"),
    ((("a", "count(page_view where segment.b, 1h) >= 1"), ("b", "count(page_view, 1h) >= 1")),
     "", "'segment.NAME' cannot be used inside a where filter"),
    ((("a", "segment.b + 1 > 2"), ("b", "count(page_view, 1h) >= 1")), "",
     "cannot"),
])
def test_bad_references_are_definition_errors(segments: tuple[tuple[str, str], ...],
                                              disabled: str, message: str) -> None:
    with pytest.raises(DefinitionError) as err:
        load_definitions(catalogue(*segments, disabled=disabled))
    assert message in err.value.render()
    assert "segment 'a'" in err.value.render()


def test_a_disabled_segment_may_reference_others() -> None:
    cat = load_definitions(catalogue(("a", "segment.b"), ("b", "count(page_view, 1h) >= 1"),
                                     disabled="a"))
    assert [s.name for s in compile_catalogue(cat).segments] == ["b"]


def test_a_segment_and_its_dependents_change_in_the_same_step() -> None:
    text = catalogue(("viewer", "count(page_view, 10m) >= 1"),
                     ("quiet_buyer", "purchases.count >= 1 and not segment.viewer"),
                     ("vip_viewer", "segment.viewer and trait.vip == true"))
    events = [ev("i", "identify", 0, traits={"vip": True}),
              ev("p", "purchase", MIN, order_id="o", amount=5.0),
              ev("v", "page_view", 2 * MIN, url="/")]
    log: list[Any] = []
    cat = load_definitions(text)
    replay(Engine(compile_catalogue(cat)), events, until=T0 + 30 * MIN, on_change=log.append)
    trail = [(c.segment, c.action, c.at - T0, c.cause) for c in log]
    assert trail == [
        ("quiet_buyer", "enter", MIN, "p"),
        ("viewer", "enter", 2 * MIN, "v"), ("quiet_buyer", "exit", 2 * MIN, "v"),
        ("vip_viewer", "enter", 2 * MIN, "v"),
        # ten minutes after the view, with no event: all three move at the same instant
        ("viewer", "exit", 12 * MIN, "timer"), ("quiet_buyer", "enter", 12 * MIN, "timer"),
        ("vip_viewer", "exit", 12 * MIN, "timer"),
    ]
    for t in (MIN, 2 * MIN, 12 * MIN - 1, 12 * MIN, 30 * MIN):
        want = O.expected_members(cat, events, T0 + t).get("c1", frozenset())
        assert want == frozenset(c.segment for c in log if c.at - T0 <= t
                                 and _last(log, c.segment, T0 + t) == "enter")


def _last(log: list[Any], segment: str, t: int) -> str | None:
    actions = [c.action for c in log if c.segment == segment and c.at <= t]
    return actions[-1] if actions else None
