"""processors.replay with a tiny fake engine: the driver's own logic (clock, timer heap, routing
of aliases and forget, late counting, until) independently of the real engine."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from processors.replay import replay
from processors.types import Change


class Step(NamedTuple):
    """The fake engine's step: the fields the driver reads of processors.types.Step, whose
    ``state`` must be a CustomerState (the fake's states are dicts)."""

    state: Any
    changes: list[Change]
    next_due: int | None
    late: bool
    reason: str = ""

W = 10  # the fake segment: some event in (now - W, now]
LATENESS = 5


class FakeEngine:
    """One segment, ``recent``; records every call so tests can check the driver's order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    @staticmethod
    def new(cid: str) -> dict[str, Any]:
        return {"cid": cid, "ts": [], "ids": set(), "member": False, "version": 0}

    def _eval(self, st: dict[str, Any], now: int, cause: str) -> list[Change]:
        member = any(now - W < t <= now for t in st["ts"])
        if member == st["member"]:
            return []
        st["member"], st["version"] = member, st["version"] + 1
        return [Change(st["cid"], "recent", "enter" if member else "exit", now, st["version"],
                       cause)]

    @staticmethod
    def _due(st: dict[str, Any], now: int) -> int | None:
        later = [t + W for t in st["ts"] if t + W > now]
        return min(later) if later else None

    def apply(self, state: Any, ev: dict[str, Any], now: int) -> Step:
        self.calls.append(("apply", ev["event_id"], now))
        if ev["timestamp"] < now - LATENESS:
            return Step(state, [], self._due(state, now) if state else None, True)
        st = state or self.new(ev["customer_id"] or ev["anonymous_id"])
        if ev["event_id"] not in st["ids"]:
            st["ids"].add(ev["event_id"])
            st["ts"].append(ev["timestamp"])
        return Step(st, self._eval(st, now, ev["event_id"]), self._due(st, now), False)

    def advance(self, state: Any, now: int) -> Step:
        self.calls.append(("advance", state["cid"], now))
        return Step(state, self._eval(state, now, "timer"), self._due(state, now), False)

    def merge(self, target: Any, source: Any, ev: dict[str, Any], now: int) -> tuple[Step, Step]:
        self.calls.append(("merge", ev["event_id"], now))
        st = target or self.new(ev["customer_id"])
        st["ts"] += source["ts"]
        st["ids"] |= source["ids"] | {ev["event_id"]}
        gone = []
        if source["member"]:
            gone = [Change(source["cid"], "recent", "exit", now, source["version"] + 1,
                           f"alias:{ev['event_id']}")]
        cause = f"alias:{ev['event_id']}"
        return (Step(st, self._eval(st, now, cause), self._due(st, now), False),
                Step(None, gone, None, False))

    def tombstone(self, state: Any) -> Any:
        stone = self.new(state["cid"])
        stone["version"] = state["version"] + (1 if state["member"] else 0)
        return stone

    def forget(self, state: Any, ev: dict[str, Any], now: int) -> Step:
        self.calls.append(("forget", ev["event_id"], now))
        gone = []
        if state is not None and state["member"]:
            gone = [Change(state["cid"], "recent", "exit", now, state["version"] + 1,
                           f"forget:{ev['event_id']}")]
        return Step(None if state is None else self.tombstone(state), gone, None, False)


def ev(eid: str, ts: int, cid: str | None = None, anon: str | None = None,
       typ: str = "page_view") -> dict[str, Any]:
    return {"event_id": eid, "type": typ, "customer_id": cid, "anonymous_id": anon,
            "timestamp": ts, "source": "t", "schema_version": 1, "properties": {}}


def log_of(events: list[dict[str, Any]], until: int | None = None) -> tuple[Any, list[tuple]]:
    log: list[Change] = []
    result = replay(FakeEngine(), events, until=until, on_change=log.append)
    return result, [(c.customer_id, c.action, c.at, c.cause) for c in log]


def test_timers_fire_in_due_order_before_the_event_that_passes_them():
    result, log = log_of([ev("1", 100, "a"), ev("2", 103, "b"), ev("3", 120, "c")])
    assert log == [("a", "enter", 100, "1"), ("b", "enter", 103, "2"),
                   ("a", "exit", 110, "timer"), ("b", "exit", 113, "timer"),
                   ("c", "enter", 120, "3")]
    assert result.watermark == result.until == 120
    assert result.sizes() == {"recent": 1}
    assert result.segments_of("c") == {"recent"}


def test_until_skips_later_events_and_fires_timers_up_to_it():
    result, log = log_of([ev("1", 100, "a"), ev("2", 200, "b")], until=150)
    assert log == [("a", "enter", 100, "1"), ("a", "exit", 110, "timer")]
    assert (result.after_until, result.until, result.watermark) == (1, 150, 100)
    result, log = log_of([ev("1", 100, "a")], until=105)
    assert log == [("a", "enter", 100, "1")]


def test_now_is_the_watermark_and_late_events_are_counted():
    eng = FakeEngine()
    events = [ev("1", 100, "a"), ev("2", 98, "b"), ev("3", 90, "a"), ev("4", 101, "a")]
    result = replay(eng, events)
    assert [c for c in eng.calls if c[0] == "apply"] == [
        ("apply", "1", 100), ("apply", "2", 100), ("apply", "3", 100), ("apply", "4", 101)]
    assert (result.late, result.late_ids, result.applied, result.events) == (1, ["3"], 3, 4)


def test_alias_merges_and_routes_later_anonymous_events_to_the_customer():
    events = [ev("1", 100, anon="x"), ev("2", 101, cid="c", anon="x", typ="alias"),
              ev("3", 102, anon="x"), ev("4", 99, anon="x"),
              ev("5", 103, cid="d", anon="x", typ="alias")]  # x is taken: ordinary event of d
    result, log = log_of(events)
    assert log == [("x", "enter", 100, "1"), ("x", "exit", 101, "alias:2"),
                   ("c", "enter", 101, "alias:2"), ("d", "enter", 103, "5")]
    assert result.aliases == {"x": "c"}
    assert result.merges == 1
    assert set(result.states) == {"c", "d", "x"}  # x: a tombstone (its version counter)
    assert result.states["x"]["ts"] == [] and result.states["x"]["version"] == 2
    assert sorted(result.states["c"]["ids"]) == ["1", "2", "3", "4"]


def test_alias_without_anonymous_state_links_only():
    result, log = log_of([ev("1", 100, cid="c", anon="x", typ="alias"), ev("2", 101, anon="x")])
    assert result.aliases == {"x": "c"}
    assert result.merges == 0
    assert set(result.states) == {"c"}
    assert log[0] == ("c", "enter", 100, "1")


def test_forget_erases_state_and_links():
    events = [ev("1", 100, anon="x"), ev("2", 101, cid="c", anon="x", typ="alias"),
              ev("3", 102, cid="c", typ="forget"), ev("4", 103, anon="x")]
    result, log = log_of(events)
    assert ("c", "exit", 102, "forget:3") in log
    assert result.aliases == {}
    # the anonymous id is a new profile again (continuing its counter); c is a tombstone
    assert set(result.states) == {"x", "c"} and result.states["c"]["ts"] == []
    assert ("x", "enter", 103, "4") in log
    assert result.forgets == 1
    assert result.sizes() == {"recent": 1}


def test_deterministic():
    events = [ev(str(i), 100 + (i * 7) % 23, f"c{i % 3}") for i in range(40)]
    assert log_of(events) == log_of(events)


def test_engine_returning_a_past_due_instant_is_an_error():
    class Stuck(FakeEngine):
        def advance(self, state: Any, now: int) -> Step:
            return Step(state, [], now, False)

    with pytest.raises(RuntimeError, match="next_due"):
        replay(Stuck(), [ev("1", 100, "a"), ev("2", 200, "b")])
