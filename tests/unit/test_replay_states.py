"""CompactStates (processors.replay_states): a replay keeping most profiles encoded gives the
same changes and final states as one keeping every profile decoded."""

from __future__ import annotations

from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_property_support import FIXTURES, SLOT, deliveries, examples, raw_events

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.replay import ReplayResult, replay
from processors.replay_states import CompactStates
from schemas.validation import validate_event
from state.codec import encode_state
from stream.tools.generate import GeneratorConfig, generate


@cache
def property_catalogue() -> Any:
    return compile_catalogue(load_definitions(FIXTURES / "property_segments.yaml"))


def both(catalogue: Any, events: list[dict[str, Any]], hot: int, **kw: Any
         ) -> tuple[tuple[list[Any], ReplayResult], tuple[list[Any], ReplayResult]]:
    plain: list[Any] = []
    a = replay(Engine(catalogue), events, on_change=plain.append, **kw)
    compact: list[Any] = []
    b = replay(Engine(catalogue), events, on_change=compact.append,
               resume=ReplayResult(states=CompactStates(hot)), **kw)
    return (plain, a), (compact, b)


def states_of(result: ReplayResult) -> dict[str, bytes]:
    return {rid: encode_state(result.states[rid]) for rid in sorted(result.states)}


@settings(max_examples=examples(80), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), hot=st.integers(1, 3))
def test_a_few_decoded_profiles_give_the_same_replay(data: st.DataObject, hot: int) -> None:
    events = data.draw(raw_events(forget=True))
    delivered = data.draw(deliveries(events, max_delay=4 * SLOT))
    end = max(e["timestamp"] for e in events) + 20 * 60_000
    (plain, a), (compact, b) = both(property_catalogue(), delivered, hot, until=end)
    assert compact == plain
    assert b.members == a.members and b.due == a.due
    assert states_of(b) == states_of(a)


def test_a_generated_month_with_fifty_decoded_profiles() -> None:
    catalogue = compile_catalogue(load_definitions(
        FIXTURES.parents[1] / "processors" / "catalogue.yaml"))
    cfg = GeneratorConfig(customers=400, events=6_000, seed=3, duplicate_share=0.02,
                          out_of_order_share=0.02)
    clock = cfg.start + 40 * 86_400_000
    events = [validate_event(e, clock) for e in generate(cfg)]
    (plain, a), (compact, b) = both(catalogue, events, 50, sweep_every=500)
    states = b.states
    assert isinstance(states, CompactStates) and states.decoded > 100
    assert len(plain) > 1_000 and compact == plain
    assert b.members == a.members
    assert states_of(b) == states_of(a)
