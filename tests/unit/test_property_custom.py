"""Property tests of custom event types and segments built from segments: the engine (driven
by processors.replay) against the brute-force oracle (tests/oracle.py, which knows nothing of
the compiler), on random streams of custom and built-in events with aliases, forgets,
duplicates, disorder within the lateness and late events."""

from __future__ import annotations

import random
import sys
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_property_support import (
    ANONS,
    CUSTOMERS,
    FIXTURES,
    MIN,
    SLOT,
    SLOTS,
    T0,
    boundary_instants,
    check_change_log,
    deliveries,
    durations_of,
    examples,
    expected_late,
    fold_log,
    mark_forgets,
    result_members,
)

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from processors.replay import replay

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle as O

TYPES = Path(__file__).resolve().parents[2] / "processors" / "event_types.yaml"
SETTINGS = settings(max_examples=examples(100), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@cache
def catalogue() -> Any:
    return load_definitions(FIXTURES / "property_custom_segments.yaml", types=load_types(TYPES))


def engine() -> Engine:
    return Engine(compile_catalogue(catalogue()))


KINDS = ("review_posted", "review_posted", "app_session", "app_session", "app_session",
         "page_view", "alias", "forget")


@st.composite
def custom_events(draw: st.DrawFn, max_events: int = 24,
                  forget: bool = True) -> list[dict[str, Any]]:
    """Custom and built-in events of three customers and two visitors, in time order."""
    out = []
    kinds = KINDS if forget else tuple(k for k in KINDS if k != "forget")
    for i in range(draw(st.integers(1, max_events))):
        typ = draw(st.sampled_from(kinds))
        ts = T0 + draw(st.integers(0, SLOTS)) * SLOT + draw(st.sampled_from((0, 0, 1, -1)))
        cid: str | None = draw(st.sampled_from(CUSTOMERS))
        anon: str | None = None
        props: dict[str, Any]
        if typ == "review_posted":
            props = {"rating": draw(st.integers(1, 5)), "product_id": "p1"}
        elif typ == "app_session":
            props = {"minutes": draw(st.sampled_from((2, 7.5, 12, 30)))}
        elif typ == "page_view":
            props = {"url": "/x"}
        elif typ == "alias":
            anon, props = draw(st.sampled_from(ANONS)), {}
        else:
            props = {"reason": "test"}
        if typ in ("review_posted", "app_session", "page_view") and draw(st.integers(0, 3)) == 0:
            cid, anon = None, draw(st.sampled_from(ANONS))
        out.append({"event_id": f"e{i}", "type": typ, "customer_id": cid, "anonymous_id": anon,
                    "timestamp": ts, "source": "prop", "schema_version": 1,
                    "properties": props})
    out.sort(key=lambda e: e["timestamp"])
    return out


def expected(events: list[dict[str, Any]], t: int, skip: Any = ()) -> dict[str, frozenset[str]]:
    return O.expected_members(catalogue(), events, t, skip=skip)


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_in_order_change_log_matches_oracle(data: st.DataObject, seed: int) -> None:
    events = data.draw(deliveries(data.draw(custom_events()), max_delay=0))
    end = events[-1]["timestamp"] + 20 * MIN
    log: list[Any] = []
    result = replay(mark_forgets(engine(), log), events, until=end, on_change=log.append)
    check_change_log(log)
    instants = [t for t in boundary_instants(events, durations_of(catalogue()), extra=(end,))
                if t <= end]
    for t in sorted(random.Random(seed).sample(instants, min(30, len(instants)))):
        prefix = [e for e in events if e["timestamp"] <= t]
        assert fold_log(log, t) == expected(prefix, t), f"at {t}"
    assert result_members(result) == expected(events, end)


@SETTINGS
@given(data=st.data())
def test_disorder_within_lateness_with_forgets_gives_the_ordered_result(
        data: st.DataObject) -> None:
    events = data.draw(custom_events())
    lateness = catalogue().allowed_lateness_ms
    delivered = data.draw(deliveries(events, max_delay=lateness - SLOT))
    end = events[-1]["timestamp"] + 20 * MIN
    log: list[Any] = []
    result = replay(mark_forgets(engine(), log), delivered, until=end, on_change=log.append)
    check_change_log(log)
    assert not result.late
    assert result_members(result) == expected(delivered, end)


@SETTINGS
@given(data=st.data())
def test_disorder_and_late_events(data: st.DataObject) -> None:
    events = data.draw(custom_events(forget=False))
    lateness = catalogue().allowed_lateness_ms
    delivered = data.draw(deliveries(events, max_delay=4 * SLOT, late_delay=lateness + 2 * SLOT))
    late = expected_late(delivered, lateness)
    end = events[-1]["timestamp"] + 20 * MIN
    log: list[Any] = []
    result = replay(engine(), delivered, until=end, on_change=log.append)
    assert result.late == len(late)
    check_change_log(log)
    assert result_members(result) == expected(delivered, end, skip=set(late))
    wm = result.watermark
    later = [t for t in boundary_instants(events, durations_of(catalogue())) if wm <= t <= end]
    for t in [wm, *later[:8]]:
        assert fold_log(log, t) == expected(delivered, t, skip=set(late)), f"at {t}"
