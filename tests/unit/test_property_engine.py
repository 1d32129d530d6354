"""Property tests: the engine (driven by processors.replay) against the brute-force oracle.

Streams are small (a few customers and anonymous visitors, minutes apart, around a UTC
midnight so that date functions flip), the definitions (tests/fixtures/property_segments.yaml)
use every AST node kind with windows of minutes. What is checked:

- in-order delivery: the change log is well formed and the membership it implies at sampled
  instants (event times, every event time + each window +-1 ms, midnight) equals the oracle;
  replaying only the events up to t (``until=t``) gives the oracle's members at t and leaves
  nothing for ``advance(state, t)`` to change (next_due was not missed);
- out-of-order delivery within the allowed lateness, with duplicates and aliases: no event is
  refused, and at every delivery point and at instants after the last event the engine's
  members equal the oracle over what was delivered;
- late events: exactly those older than watermark - lateness are refused and counted, and the
  result equals the oracle without them;
- a processing clock ahead of event time (live mode), and forget.
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
    FIXTURES,
    MIDNIGHT,
    MIN,
    SLOT,
    boundary_instants,
    check_change_log,
    deliveries,
    durations_of,
    examples,
    expected_late,
    fold_log,
    live_run,
    mark_forgets,
    raw_events,
    result_members,
)

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.replay import replay

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle as O

SETTINGS = settings(max_examples=examples(150), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@cache
def catalogue() -> Any:
    return load_definitions(FIXTURES / "property_segments.yaml")


def engine() -> Engine:
    return Engine(compile_catalogue(catalogue()))


def run(events: list[dict[str, Any]], until: int | None = None) -> tuple[Any, list[Any]]:
    log: list[Any] = []
    result = replay(engine(), events, until=until, on_change=log.append)
    return result, log


def expected(events: list[dict[str, Any]], t: int, skip: Any = ()) -> dict[str, frozenset[str]]:
    return O.expected_members(catalogue(), events, t, skip=skip)


def sample(instants: list[int], k: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return sorted(rng.sample(instants, min(k, len(instants))))


# --- in order -----------------------------------------------------------------------------
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_in_order_change_log_matches_oracle(data: st.DataObject, seed: int) -> None:
    events = data.draw(deliveries(data.draw(raw_events()), max_delay=0))  # + adjacent copies
    end = events[-1]["timestamp"] + 20 * MIN
    result, log = run(events, until=end)
    assert result.late == 0
    check_change_log(log)
    instants = boundary_instants(events, durations_of(catalogue()),
                                 extra=(MIDNIGHT - 1, MIDNIGHT, MIDNIGHT + 1, end))
    for t in sample([t for t in instants if t <= end], 40, seed):
        prefix = [e for e in events if e["timestamp"] <= t]
        assert fold_log(log, t) == expected(prefix, t), f"at {t}"
    assert result_members(result) == expected(events, end)


@SETTINGS
@given(events=raw_events(max_events=16), seed=st.integers(0, 2**16))
def test_replay_until_t_matches_oracle_and_nothing_left_due(events: list[dict[str, Any]],
                                                            seed: int) -> None:
    instants = boundary_instants(events, durations_of(catalogue()), extra=(MIDNIGHT,))
    eng = engine()
    for t in sample(instants, 6, seed):
        result = replay(eng, events, until=t)
        prefix = [e for e in events if e["timestamp"] <= t]
        assert result_members(result) == expected(prefix, t), f"at {t}"
        for rid, state in result.states.items():
            step = eng.advance(state, t)
            assert step.changes == [], f"{rid} at {t}: timer missed: {step.changes}"


# --- out of order, duplicates, aliases ----------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_disorder_within_lateness_gives_the_ordered_result(data: st.DataObject) -> None:
    events = data.draw(raw_events())
    lateness = catalogue().allowed_lateness_ms
    delivered = data.draw(deliveries(events, max_delay=lateness - SLOT))
    assert expected_late(delivered, lateness) == []
    end = events[-1]["timestamp"] + 20 * MIN
    result, log = run(delivered, until=end)
    assert result.late == 0
    check_change_log(log)
    assert result_members(result) == expected(delivered, end)
    # from the last event on, only timers remain: they must land where the oracle says
    wm = result.watermark
    later = [t for t in boundary_instants(events, durations_of(catalogue())) if wm <= t <= end]
    for t in [wm, *sample(later, 8, data.draw(st.integers(0, 2**16)))]:
        assert fold_log(log, t) == expected(delivered, t), f"at {t}"


@SETTINGS
@given(data=st.data())
def test_disorder_every_delivery_prefix_matches_oracle_at_watermark(data: st.DataObject) -> None:
    events = data.draw(raw_events(max_events=14))
    lateness = catalogue().allowed_lateness_ms
    delivered = data.draw(deliveries(events, max_delay=lateness - SLOT))
    eng = engine()
    for k in range(1, len(delivered) + 1):
        prefix = delivered[:k]
        result = replay(eng, prefix)
        assert result_members(result) == expected(prefix, result.watermark), f"after {k}"


@SETTINGS
@given(data=st.data())
def test_late_events_are_refused_counted_and_left_out(data: st.DataObject) -> None:
    events = data.draw(raw_events())
    lateness = catalogue().allowed_lateness_ms
    delivered = data.draw(deliveries(events, max_delay=4 * SLOT, late_delay=lateness + 2 * SLOT))
    late = expected_late(delivered, lateness)
    result, log = run(delivered)
    assert result.late == len(late)
    assert result.late_ids == [delivered[i]["event_id"] for i in late]
    check_change_log(log)
    assert result_members(result) == expected(delivered, result.watermark, skip=set(late))


# --- processing clock and forget ----------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_processing_clock_ahead_of_event_time(data: st.DataObject) -> None:
    """Live mode: now = a processing clock (event time + jitter, never going back)."""
    events = [e for e in data.draw(raw_events(alias=False)) if e["customer_id"] is not None]
    if not events:
        return
    lateness = catalogue().allowed_lateness_ms
    delivered = data.draw(deliveries(events, max_delay=lateness // 2))
    clock: list[int] = []
    now = 0
    for ev in delivered:  # some events are up to a minute ahead of the clock (device skew)
        now = max(now, ev["timestamp"] + data.draw(st.integers(-4, 8)) * SLOT)
        clock.append(now)
    late = expected_late(delivered, lateness, clock)
    last = max(clock[-1], *(e["timestamp"] for e in delivered))
    end = last + data.draw(st.integers(0, 40)) * SLOT
    _, log, refused = live_run(engine(), delivered, clock, end)
    assert refused == late
    check_change_log(log)
    assert fold_log(log) == expected(delivered, end, skip=set(late))


@SETTINGS
@given(data=st.data())
def test_forget_erases_the_profile(data: st.DataObject) -> None:
    events = data.draw(raw_events(forget=True))
    delivered = data.draw(deliveries(events, max_delay=0))
    end = events[-1]["timestamp"] + 20 * MIN
    log: list[Any] = []
    result = replay(mark_forgets(engine(), log), delivered, until=end, on_change=log.append)
    check_change_log(log)
    assert result_members(result) == expected(delivered, end)
    for t in sample(boundary_instants(events, durations_of(catalogue())), 10,
                    data.draw(st.integers(0, 2**16))):
        if t <= end:
            prefix = [e for e in delivered if e["timestamp"] <= t]
            assert fold_log(log, t) == expected(prefix, t), f"at {t}"


@SETTINGS
@given(data=st.data())
def test_forgets_aliases_and_duplicates_out_of_order(data: st.DataObject) -> None:
    """A forget erases what happened up to its time whatever the arrival order: delivered
    out of order within the lateness (with duplicates and aliases), the end state equals the
    oracle over the time-ordered stream."""
    events = data.draw(raw_events(forget=True))
    lateness = catalogue().allowed_lateness_ms
    delivered = data.draw(deliveries(events, max_delay=lateness - SLOT))
    end = events[-1]["timestamp"] + 20 * MIN
    log: list[Any] = []
    result = replay(mark_forgets(engine(), log), delivered, until=end, on_change=log.append)
    check_change_log(log)
    assert not result.late
    assert result_members(result) == expected(delivered, end)


# --- definitions change -------------------------------------------------------------------
def changed_definitions() -> str:
    """The property catalogue with two segments removed, conditions changed (one of them
    referenced by another segment, whose text stays) and one added; every new condition uses
    series (and windows) the old catalogue already keeps, so the re-evaluation from state
    must be exact."""
    text = (FIXTURES / "property_segments.yaml").read_text()
    text = text.replace('version: "prop-1"', 'version: "prop-2"')
    text = text.replace("condition: count(page_view, 5m) >= 2",
                        "condition: count(page_view, 5m) >= 3")
    text = text.replace("condition: segment.engaged and not segment.lapsed or segment.later_ref",
                        "condition: not segment.lapsed or segment.later_ref")
    text = text.replace("condition: segment.recent_cart and count(page_view, 5m) >= 1",
                        "condition: segment.recent_cart and count(page_view, 5m) >= 2")
    segs = text.split("\n  - name: ")
    kept = [s for s in segs if not s.startswith(("engaged\n", "cart_shape\n"))]
    kept.append("views_any\n    description: added later\n"
                "    condition: count(page_view, 5m) >= 1 or cart.items >= 2\n")
    return "\n  - name: ".join(kept)


@SETTINGS
@given(data=st.data())
def test_definitions_change_reevaluates_from_state(data: st.DataObject) -> None:
    from processors.replay import reevaluate_all  # noqa: PLC0415

    events = data.draw(deliveries(data.draw(raw_events()), max_delay=0))
    cut = data.draw(st.integers(0, len(events)))
    switch = (events[cut - 1]["timestamp"] if cut else events[0]["timestamp"]) + \
        data.draw(st.integers(0, 8)) * SLOT
    before = [e for e in events[:cut] if e["timestamp"] <= switch]
    after = events[len(before):]
    new_cat = load_definitions(changed_definitions())
    new_engine = Engine(compile_catalogue(new_cat))
    log: list[Any] = []
    result = replay(engine(), before, until=switch, on_change=log.append)
    reevaluate_all(new_engine, result, switch, f"definitions:{new_cat.version}", log.append)
    assert result_members(result) == O.expected_members(new_cat, before, switch)
    end = events[-1]["timestamp"] + 20 * MIN
    replay(new_engine, after, until=end, on_change=log.append, resume=result)
    check_change_log(log)
    assert result_members(result) == O.expected_members(new_cat, events, end)
    assert not any(c.segment in ("engaged", "cart_shape") and c.at > switch for c in log)
    for t in sample(boundary_instants(events, durations_of(new_cat)), 12,
                    data.draw(st.integers(0, 2**16))):
        if switch <= t <= end:
            prefix = [e for e in events if e["timestamp"] <= t]
            assert fold_log(log, t) == O.expected_members(new_cat, prefix, t), f"at {t}"


# --- state codec in the loop --------------------------------------------------------------
class CodecEngine:
    """An Engine whose every returned state went through state.codec (encode, then decode),
    as the worker's Redis round trip does between bundles."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @staticmethod
    def _rt(step: Any) -> Any:
        from state.codec import decode_state, encode_state  # noqa: PLC0415

        if step.state is None:
            return step
        return step._replace(state=decode_state(encode_state(step.state)))

    def apply(self, state: Any, event: dict[str, Any], now: int) -> Any:
        return self._rt(self.inner.apply(state, event, now))

    def advance(self, state: Any, now: int) -> Any:
        return self._rt(self.inner.advance(state, now))

    def forget(self, state: Any, event: dict[str, Any], now: int) -> Any:
        return self._rt(self.inner.forget(state, event, now))

    def tombstone(self, state: Any) -> Any:
        from state.codec import decode_state, encode_state  # noqa: PLC0415

        return decode_state(encode_state(self.inner.tombstone(state)))

    def merge(self, target: Any, source: Any, event: dict[str, Any], now: int) -> Any:
        known, anon = self.inner.merge(target, source, event, now)
        return self._rt(known), self._rt(anon)


@SETTINGS
@given(data=st.data())
def test_state_codec_round_trip_changes_nothing(data: st.DataObject) -> None:
    events = data.draw(raw_events(forget=True))
    lateness = catalogue().allowed_lateness_ms
    delivered = data.draw(deliveries(events, max_delay=lateness - SLOT))
    end = events[-1]["timestamp"] + 20 * MIN
    plain, plain_log = run(delivered, until=end)
    log: list[Any] = []
    coded = replay(CodecEngine(engine()), delivered, until=end,  # type: ignore[arg-type]
                   on_change=log.append)
    # identical, instants included: only a real change moves a state's clock, so a decoded
    # state (which recomputes its due candidates) stamps every change like the in-memory one
    assert log == plain_log
    assert result_members(coded) == result_members(plain)
    assert set(coded.states) == set(plain.states)
