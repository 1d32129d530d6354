"""Engine, per condition type: membership and the exact instants of ENTER/EXIT (table-driven).

Each case is a one-segment catalogue, an ordered event list and the expected change instants
(``+`` enter, ``-`` exit) once the engine has been advanced far enough. Boundaries follow the
language: windows are ``(t - W, t]``, ``X within D`` is ``now - D < X <= now``, ``since(E)``
is ``now - last(E)``, calendar functions change at UTC midnight.
"""

from __future__ import annotations

from typing import Any

import pytest

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from state.model import CustomerState

S, M, H, D = 1_000, 60_000, 3_600_000, 86_400_000
T0 = 1_798_761_600_000  # 2027-01-01T00:00:00Z


def engine_for(condition: str, lateness: str = "1h") -> Engine:
    text = (f'version: "t"\nsettings: {{allowed_lateness: {lateness}}}\nsegments:\n'
            f"  - name: s\n    description: test\n    condition: '{condition}'\n")
    return Engine(compile_catalogue(load_definitions(text)))


def ev(i: int | str, typ: str, ts: int, **props: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "type": typ, "customer_id": "c", "anonymous_id": None,
            "timestamp": ts, "source": "t", "schema_version": 1, "properties": props}


def changes_of(eng: Engine, events: list[dict[str, Any]], until: int) -> list[str]:
    """Apply events in order (now = event time), then advance to ``until``."""
    st: CustomerState | None = None
    out: list[str] = []
    for e in events:
        step = eng.apply(st, e, e["timestamp"])
        st = step.state
        out += [("+" if c.action == "enter" else "-") + str(c.at - T0) for c in step.changes]
    assert st is not None
    step = eng.advance(st, until)
    out += [("+" if c.action == "enter" else "-") + str(c.at - T0) for c in step.changes]
    return out


def p(ts: int, **props: Any) -> tuple[str, int, dict[str, Any]]:
    return ("purchase", ts, {"order_id": "o", "amount": 10.0, "currency": "EUR", **props})


def pv(ts: int, **props: Any) -> tuple[str, int, dict[str, Any]]:
    return ("page_view", ts, {"url": "u", **props})


CASES: list[tuple[str, list[tuple[str, int, dict[str, Any]]], list[int | str]]] = [
    # windows (t-W, t]: in at ts, out at ts + W exactly
    ("count(purchase, 10s) >= 1", [p(0)], ["+0", "-10000"]),
    ("count(purchase, 10s) >= 2", [p(0), p(4 * S)], ["+4000", "-10000"]),
    ("count(purchase, 10s) >= 2", [p(0), p(4 * S), p(6 * S)], ["+4000", "-14000"]),
    ("count(purchase, 10s) == 0", [pv(0), p(S)], ["+0", "-1000", "+11000"]),
    ("count(purchase, 10s) < 2", [p(0), p(S), p(2 * S)], ["+0", "-1000", "+11000"]),
    ("count(purchase, 10s) between 2 and 3",
     [p(0), p(S), p(2 * S), p(3 * S)], ["+1000", "-3000", "+10000", "-12000"]),
    ("count(purchase, 10s) != 1", [p(0)], ["+10000"]),
    ("count(purchase where amount > 50, 10s) >= 1",
     [p(0), p(S, amount=60.0)], ["+1000", "-11000"]),
    ("count(page_view|purchase, 10s) >= 2", [pv(0), p(S)], ["+1000", "-10000"]),
    # weighted sums of counts: next change found by walking the expiries
    ("count(page_view, 10s) + 2 * count(purchase, 10s) between 2 and 3",
     [pv(0), p(S), pv(2 * S)], ["+1000", "-2000", "+10000", "-11000"]),
    ("count(page_view, 10s) - count(purchase, 5s) >= 1",
     [pv(0), p(S)], ["+0", "-1000", "+6000", "-10000"]),
    ("sum(purchase.amount, 10s) >= 15", [p(0), p(S)], ["+1000", "-10000"]),
    ("avg(purchase.amount, 10s) > 15", [p(0), p(S, amount=30.0)], ["+1000", "-11000"]),
    ("avg(purchase.amount, 10s) >= 20", [p(0), p(S, amount=30.0)], ["+1000", "-11000"]),
    ("avg(purchase.amount, 10s) is null", [pv(0), p(S)], ["+0", "-1000", "+11000"]),
    # X within D: now - D < X <= now
    ("last(purchase) within 10s", [p(0), p(3 * S)], ["+0", "-13000"]),
    ("first(purchase) within 10s", [p(0), p(3 * S)], ["+0", "-10000"]),
    ("purchases.first within 10s", [p(0), p(3 * S)], ["+0", "-10000"]),
    ("purchases.last within 10s", [p(0), p(3 * S)], ["+0", "-13000"]),
    # since: true from last + D on (>=), one ms later for >
    ("since(purchase) >= 10s", [p(0)], ["+10000"]),
    ("since(purchase) > 10s", [p(0)], ["+10001"]),
    ("since(purchase) < 10s", [p(0)], ["+0", "-10000"]),
    ("since(purchase) between 5s and 10s", [p(0)], ["+5000", "-10001"]),
    ("since(purchase) == 10s", [p(0)], ["+10000", "-10001"]),
    ("now - last(purchase) >= 10s", [p(0)], ["+10000"]),
    ("last(purchase) + 10s <= now", [p(0)], ["+10000"]),
    ("since(purchase) / 2 >= 5s", [p(0)], ["+10000"]),
    ("since(purchase) >= 10s and count(purchase, 1h) >= 1", [p(0)], ["+10000", "-3600000"]),
    # A then no B within T: ta + T <= now and no B in [ta, now]
    ("cart_add then no purchase within 10s",
     [("cart_add", 0, {"product_id": "x", "price": 1.0})], ["+10000"]),
    ("cart_add then no purchase within 10s",
     [("cart_add", 0, {"product_id": "x", "price": 1.0}), p(9 * S)], []),
    ("cart_add then no purchase within 10s",
     [("cart_add", 0, {"product_id": "x", "price": 1.0}), p(12 * S)], ["+10000", "-12000"]),
    ("cart_add then no purchase within 10s",
     [p(0), ("cart_add", 0, {"product_id": "x", "price": 1.0})], []),  # B at ta counts
    # cart
    ("cart.items > 0",
     [("cart_add", 0, {"product_id": "x", "price": 1.0, "quantity": 2}),
      ("cart_remove", S, {"product_id": "x", "quantity": 1}),
      ("cart_remove", 2 * S, {"product_id": "x", "quantity": 1})], ["+0", "-2000"]),
    ("cart.value >= 20",
     [("cart_add", 0, {"product_id": "x", "price": 10.0, "quantity": 1}),
      ("cart_add", S, {"product_id": "x", "price": 10.0, "quantity": 1}), p(2 * S)],
     ["+1000", "-2000"]),
    ("cart.lines == 2",
     [("cart_add", 0, {"product_id": "x", "price": 1.0}),
      ("cart_add", S, {"product_id": "y", "price": 1.0}),
      ("cart_remove", 2 * S, {"product_id": "y"})], ["+1000", "-2000"]),
    ("cart.last_change within 10s",
     [("cart_add", 0, {"product_id": "x", "price": 1.0})], ["+0", "-10000"]),
    # lifetime purchases
    ("purchases.count >= 2", [p(0), p(100 * D)], ["+8640000000"]),
    ("purchases.total >= 20 and purchases.aov == 10", [p(0), p(S)], ["+1000"]),
    # hour share (UTC hours of all events)
    ("hour_share(purchase, 22, 1) > 0.5", [p(0), p(3 * H)], ["+0", "-10800000"]),
    ("hour_share(purchase, 22, 1) >= 0.5", [p(0), p(3 * H)], ["+0"]),
    # traits and calendar
    ('trait.country == "DE"', [("identify", 0, {"traits": {"country": "DE"}}),
                               ("identify", S, {"traits": {"country": "FR"}})], ["+0", "-1000"]),
    ("trait.satisfaction <= 6", [("identify", 0, {"traits": {"satisfaction": "6"}}),
                                 ("identify", S, {"traits": {"satisfaction": 6}})], ["+1000"]),
    ("trait.vip == true", [("identify", 0, {"traits": {"vip": True}})], ["+0"]),
    ('trait.country in ["DE", "AT"]', [("identify", 0, {"traits": {"country": "AT"}})], ["+0"]),
    ("trait.country is null", [pv(0), ("identify", S, {"traits": {"country": "AT"}})],
     ["+0", "-1000"]),
    # 2027-01-01 00:00: birthday Jan 5 -> days 4; <= 2 from Jan 3 00:00 to Jan 6 00:00
    ("days_until_anniversary(trait.birthday) <= 2",
     [("identify", 0, {"traits": {"birthday": "1990-01-05"}})],
     ["+172800000", "-432000000", "+31708800000", "-31968000000"]),
    ("age_years(trait.birthday) >= 18",
     [("identify", 0, {"traits": {"birthday": "2009-01-02"}})], ["+86400000"]),
    ("date(trait.signup) within 2d",
     [("identify", 0, {"traits": {"signup": "2026-12-31"}})], ["+0", "-86400000"]),
    ('now >= date("2027-01-02") and count(page_view, 30d) >= 1', [pv(0)],
     ["+86400000", "-2592000000"]),
    # boolean structure
    ("not (count(purchase, 10s) >= 1) and count(page_view, 1h) >= 1",
     [pv(0), p(S)], ["+0", "-1000", "+11000", "-3600000"]),
    ("count(purchase, 10s) >= 1 or last(page_view) within 5s",
     [pv(0), p(S)], ["+0", "-11000"]),
]


@pytest.mark.parametrize(("condition", "events", "expected"), CASES)
def test_change_instants(condition: str, events: list[tuple[str, int, dict[str, Any]]],
                         expected: list[str]) -> None:
    eng = engine_for(condition)
    evs = [ev(i, typ, T0 + ts, **props) for i, (typ, ts, props) in enumerate(events)]
    assert changes_of(eng, evs, T0 + 400 * D) == expected


def buy(i: int, ts: int) -> dict[str, Any]:
    return ev(i, "purchase", T0 + ts, order_id="o", amount=1.0, currency="EUR")


def test_advance_stepwise_gives_the_same_instants_as_one_jump() -> None:
    eng = engine_for("count(purchase, 10s) between 2 and 3")
    evs = [buy(i, i * S) for i in range(4)]
    jump = changes_of(eng, evs, T0 + D)
    st = None
    applied: list[str] = []
    for e in evs:
        step = eng.apply(st, e, e["timestamp"])
        st = step.state
        applied += [("+" if c.action == "enter" else "-") + str(c.at - T0) for c in step.changes]
    assert st is not None
    stepped: list[str] = []
    for now in range(T0 + 3 * S, T0 + 20 * S, 250):
        step = eng.advance(st, now)
        stepped += [("+" if c.action == "enter" else "-") + str(c.at - T0) for c in step.changes]
    assert applied + stepped == jump


def test_next_due_is_the_next_membership_change() -> None:
    eng = engine_for("count(purchase, 10s) >= 2")
    st = eng.apply(None, buy(1, 0), T0).state
    step = eng.apply(st, buy(2, 4 * S), T0 + 4 * S)
    assert step.next_due == T0 + 10 * S  # the first expiry takes the count below 2
    assert step.state is not None
    assert eng.advance(step.state, T0 + 10 * S - 1).changes == []
    assert [c.action for c in eng.advance(step.state, T0 + 10 * S).changes] == ["exit"]


def test_count_threshold_skips_expiries_that_change_nothing() -> None:
    eng = engine_for("count(purchase, 10s) >= 2")
    st = None
    for i in range(5):
        st = eng.apply(st, buy(i, i * S), T0 + i * S).state
    assert st is not None
    # five purchases at 0..4s: the count falls below 2 when the 4th oldest expires (13s)
    assert eng.advance(st, T0 + 4 * S).next_due == T0 + 13 * S


def test_calendar_conditions_wake_only_when_they_can_flip() -> None:
    eng = engine_for("days_until_anniversary(trait.birthday) <= 7")
    st = eng.apply(None, ev(1, "identify", T0, traits={"birthday": "1990-03-01"}), T0).state
    assert st is not None
    # 2027-01-01: 59 days to go; can only enter 7 days before (2027-02-22 00:00 UTC); the
    # wake-up may be a day early (candidates around the threshold), never late
    due = eng.advance(st, T0).next_due
    assert due is not None and T0 + 51 * D <= due <= T0 + 52 * D
    assert eng.advance(st, T0 + 52 * D - 1).changes == []
    assert [(c.action, c.at) for c in eng.advance(st, T0 + 52 * D).changes] == [
        ("enter", T0 + 52 * D)]
    age = engine_for("age_years(trait.birthday) >= 37")
    st = age.apply(None, ev(1, "identify", T0, traits={"birthday": "1990-03-01"}), T0).state
    assert st is not None
    assert age.advance(st, T0).next_due == T0 + 59 * D  # the birthday itself


def test_and_with_a_false_item_that_time_cannot_change_never_wakes() -> None:
    eng = engine_for('now >= date("2027-01-10") and count(purchase, 30d) >= 1')
    st = eng.apply(None, ev(1, "page_view", T0, url="u"), T0).state
    assert st is not None
    assert eng.advance(st, T0).next_due is None  # no purchase: the date alone changes nothing
    step = eng.apply(st, buy(2, S), T0 + S)
    assert step.next_due == T0 + 9 * D  # now a buyer: the season start matters


def test_weighted_count_sum_over_many_events_still_flips_exactly() -> None:
    """Past SCHEDULE_CAP in-window events the sum wakes at each expiry: more runs, same
    instants."""
    eng = engine_for("count(page_view, 10s) + 2 * count(purchase, 10s) >= 30")
    evs = [ev(i, "page_view", T0 + i * 10, url="u") for i in range(100)]
    # 100 views at 0..990 ms; the sum drops below 30 when the 71st oldest expires
    assert changes_of(eng, evs, T0 + D) == ["+290", "-10700"]
