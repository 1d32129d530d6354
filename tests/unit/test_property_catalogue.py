"""Property tests of the default catalogue (processors/catalogue.yaml) against the oracle.

Its windows run from an hour to a year, so the streams here spread a few dozen events over
about 17 months (2026-01 to 2027-05) on an hourly grid: the holiday-season dates, birthdays,
age bands, 30/90/180/365-day windows and hour-of-day shares all get crossed.
"""

from __future__ import annotations

import random
import sys
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_property_support import (
    DAY,
    HOUR,
    boundary_instants,
    check_change_log,
    deliveries,
    durations_of,
    examples,
    fold_log,
    raw_events,
    result_members,
)

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.replay import replay

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle as O

CATALOGUE = Path(__file__).resolve().parents[2] / "processors" / "catalogue.yaml"
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPAN_H = 510 * 24  # hours, to 2027-05-26
HOLIDAY = (1_795_132_800_000, 1_798_761_600_000)  # 2026-11-20, 2027-01-01 (00:00Z)
SETTINGS = settings(max_examples=examples(60), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@cache
def catalogue() -> Any:
    return load_definitions(CATALOGUE)


def long_events(max_events: int = 30) -> st.SearchStrategy[list[dict[str, Any]]]:
    return raw_events(max_events=max_events, slot=HOUR, slots=SPAN_H, t0=START)


def instants(events: list[dict[str, Any]], k: int, seed: int, end: int) -> list[int]:
    extra = [h + d for h in HOLIDAY for d in (-1, 0, 1)]
    cands = [t for t in boundary_instants(events, durations_of(catalogue()), extra) if t <= end]
    return sorted(random.Random(seed).sample(cands, min(k, len(cands))))


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_default_catalogue_in_order(data: st.DataObject, seed: int) -> None:
    events = data.draw(deliveries(data.draw(long_events()), max_delay=0))
    end = events[-1]["timestamp"] + 400 * DAY
    log: list[Any] = []
    result = replay(Engine(compile_catalogue(catalogue())), events, until=end,
                    on_change=log.append)
    check_change_log(log)
    for t in instants(events, 25, seed, end):
        prefix = [e for e in events if e["timestamp"] <= t]
        assert fold_log(log, t) == O.expected_members(catalogue(), prefix, t), f"at {t}"
    assert result_members(result) == O.expected_members(catalogue(), events, end)


@SETTINGS
@given(data=st.data())
def test_default_catalogue_disorder_within_lateness(data: st.DataObject) -> None:
    events = data.draw(long_events())
    delivered = data.draw(deliveries(events, max_delay=catalogue().allowed_lateness_ms // 2))
    end = events[-1]["timestamp"] + data.draw(st.integers(0, 400)) * DAY
    log: list[Any] = []
    result = replay(Engine(compile_catalogue(catalogue())), delivered, until=end,
                    on_change=log.append)
    assert result.late == 0
    check_change_log(log)
    assert result_members(result) == O.expected_members(catalogue(), delivered, end)
    assert fold_log(log) == result_members(result)


@settings(max_examples=examples(8), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 2**32 - 1), disorder=st.booleans())
def test_generated_streams_match_the_oracle(seed: int, disorder: bool) -> None:
    """Realistic sessions (stream.tools.generate) for a handful of customers over 60 days."""
    from stream.tools.generate import GeneratorConfig, generate  # noqa: PLC0415

    cfg = GeneratorConfig(customers=6, events=150, days=60, seed=seed, forget_share=0.2,
                          duplicate_share=0.05 if disorder else 0.0,
                          out_of_order_share=0.05 if disorder else 0.0,
                          out_of_order_max_ms=20 * 60_000)
    events = [{**e, "schema_version": 1} for e in generate(cfg)]
    end = max(e["timestamp"] for e in events) + 40 * DAY
    log: list[Any] = []
    result = replay(Engine(compile_catalogue(catalogue())), events, until=end,
                    on_change=log.append)
    assert result.late == 0
    assert result_members(result) == O.expected_members(catalogue(), events, end)
    if not disorder:
        for t in instants(events, 10, seed, end):
            prefix = [e for e in events if e["timestamp"] <= t]
            assert fold_log(log, t) == O.expected_members(catalogue(), prefix, t), f"at {t}"
