"""Table-driven tests of the brute-force oracle itself (hand-built ASTs, no parser).

The oracle is the yardstick for the engine, so its own reading of each node docstring is
pinned here with small, hand-checked cases.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from processors.lang import ast as A

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle as O

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_795_000_000_000  # 2026-11-18T11:06:40Z, a fixed base instant


def ev(eid: str, typ: str, ts: int, cid: str | None = "c1", anon: str | None = None, **props):
    return {"event_id": eid, "type": typ, "timestamp": ts, "customer_id": cid,
            "anonymous_id": anon, "source": "t", "schema_version": 1, "properties": props}


def L(v):
    return A.Literal(0, v)


def es(*types: str, where: A.Expr | None = None) -> A.EventSet:
    return A.EventSet(0, tuple(types), where)


def cmp(op, left, right):
    return A.Compare(0, op, left, right)


def count(eset, window):
    return A.Aggregate(0, "count", eset, None, window)


def prof(ns, name):
    return A.ProfileRef(0, ns, name)


def seg(cond, name="s", enabled=True):
    return A.SegmentDef(name, "", "", cond, enabled)


# --- windows ------------------------------------------------------------------------------
def test_count_window_is_half_open_on_the_left():
    events = [ev("a", "page_view", T0, url="/"), ev("b", "page_view", T0 + MIN, url="/")]
    node = count(es("page_view"), 5 * MIN)
    ctx = lambda t: O.Context(O.history(events, t), t)  # noqa: E731
    assert [O.evaluate_node(node, ctx(t)) for t in
            (T0 - 1, T0, T0 + MIN, T0 + 5 * MIN - 1, T0 + 5 * MIN, T0 + 6 * MIN)] == [
        0, 1, 2, 2, 1, 0]


def test_duplicates_first_occurrence_wins_and_future_events_ignored():
    events = [ev("a", "purchase", T0 + 10, order_id="o", amount=5.0, currency="EUR"),
              ev("a", "purchase", T0, order_id="o", amount=50.0, currency="EUR")]
    total = A.Aggregate(0, "sum", es("purchase"), "amount", DAY)
    assert O.evaluate_node(total, O.Context(O.history(events, T0 + 5), T0 + 5)) == 0
    assert O.evaluate_node(total, O.Context(O.history(events, T0 + 10), T0 + 10)) == 5.0


def test_sum_and_avg_skip_missing_and_non_numbers():
    events = [ev("a", "page_view", T0, url="/", price=10),
              ev("b", "page_view", T0 + 1, url="/", price="x"),
              ev("c", "page_view", T0 + 2, url="/", price=True),
              ev("d", "page_view", T0 + 3, url="/")]
    ctx = O.Context(O.history(events, T0 + 3), T0 + 3)
    assert O.evaluate_node(A.Aggregate(0, "sum", es("page_view"), "price", DAY), ctx) == 10
    assert O.evaluate_node(A.Aggregate(0, "avg", es("page_view"), "price", DAY), ctx) == 10
    assert O.evaluate_node(count(es("page_view"), DAY), ctx) == 4
    assert O.evaluate_node(A.Aggregate(0, "avg", es("purchase"), "amount", DAY), ctx) is None
    assert O.evaluate_node(A.Aggregate(0, "sum", es("purchase"), "amount", DAY), ctx) == 0


def test_where_filter_with_in_and_null():
    events = [ev("a", "page_view", T0, url="/", category="shoes"),
              ev("b", "page_view", T0 + 1, url="/", category="hats"),
              ev("c", "page_view", T0 + 2, url="/")]
    ctx = O.Context(O.history(events, T0 + 2), T0 + 2)
    cat = A.PropRef(0, "category")
    assert O.evaluate_node(count(es("page_view", where=A.In(0, cat, ("shoes", "bags"))), DAY),
                           ctx) == 1
    assert O.evaluate_node(count(es("page_view", where=cmp("!=", cat, L("shoes"))), DAY),
                           ctx) == 1  # null != "shoes" is false
    assert O.evaluate_node(count(es("page_view", where=A.IsNull(0, cat, False)), DAY), ctx) == 1
    assert O.evaluate_node(count(es("page_view", where=A.Not(0, cmp("==", cat, L("shoes")))),
                                 DAY), ctx) == 2


# --- instants -----------------------------------------------------------------------------
def test_last_first_since_within():
    events = [ev("a", "email_open", T0, campaign_id="k"),
              ev("b", "email_click", T0 + HOUR, campaign_id="k")]
    eset = es("email_open", "email_click")
    at = lambda t: O.Context(O.history(events, t), t)  # noqa: E731
    assert O.evaluate_node(A.Instant(0, "last", eset), at(T0 + 2 * HOUR)) == T0 + HOUR
    assert O.evaluate_node(A.Instant(0, "first", eset), at(T0 + 2 * HOUR)) == T0
    assert O.evaluate_node(A.Instant(0, "last", eset), at(T0 - 1)) is None
    assert O.evaluate_node(A.Since(0, eset), at(T0 + 3 * HOUR)) == 2 * HOUR
    assert O.evaluate_node(A.Since(0, eset), at(T0 - 1)) is None
    within = A.Within(0, A.Instant(0, "last", eset), 30 * MIN)
    assert [O.evaluate_node(within, at(t)) for t in
            (T0 + HOUR - 1, T0 + HOUR, T0 + HOUR + 30 * MIN - 1, T0 + HOUR + 30 * MIN)] == [
        False, True, True, False]
    # since compared with a duration: since >= 2h becomes true exactly at last + 2h
    since_ge = cmp(">=", A.Since(0, eset), A.Duration(0, 2 * HOUR))
    assert O.evaluate_node(since_ge, at(T0 + 3 * HOUR - 1)) is False
    assert O.evaluate_node(since_ge, at(T0 + 3 * HOUR)) is True


def test_then_no_boundaries():
    events = [ev("a", "cart_add", T0, product_id="p", price=3.0),
              ev("b", "purchase", T0 + 2 * HOUR, order_id="o", amount=3.0, currency="EUR")]
    node = A.ThenNo(0, es("cart_add"), es("purchase"), HOUR)
    at = lambda t: O.evaluate(node, events, t)  # noqa: E731
    assert [at(t) for t in (T0, T0 + HOUR - 1, T0 + HOUR, T0 + 2 * HOUR - 1, T0 + 2 * HOUR)] == [
        False, False, True, True, False]
    # a B at exactly the A instant counts ("no B in [ta, now]")
    same = [ev("a", "cart_add", T0, product_id="p", price=3.0),
            ev("b", "purchase", T0, order_id="o", amount=3.0, currency="EUR")]
    assert O.evaluate(node, same, T0 + 2 * HOUR) is False
    # a new A restarts the clock
    again = [*events, ev("c", "cart_add", T0 + 3 * HOUR, product_id="p", price=3.0)]
    assert O.evaluate(node, again, T0 + 4 * HOUR - 1) is False
    assert O.evaluate(node, again, T0 + 4 * HOUR) is True
    assert O.evaluate(node, [], T0) is False


def test_hour_share_wraps_midnight():
    day0 = (T0 // DAY) * DAY
    events = [ev(f"e{h}", "purchase", day0 + h * HOUR, order_id="o", amount=1.0, currency="EUR")
              for h in (1, 12, 22, 23)]
    ctx = O.Context(O.history(events, day0 + DAY), day0 + DAY)
    assert O.evaluate_node(A.HourShare(0, es("purchase"), 22, 2), ctx) == 0.75
    assert O.evaluate_node(A.HourShare(0, es("purchase"), 12, 12), ctx) == 0.25
    assert O.evaluate_node(A.HourShare(0, es("page_view"), 0, 23), ctx) is None


# --- profile ------------------------------------------------------------------------------
def test_cart_replay():
    events = [ev("a", "cart_add", T0, product_id="p", price=2.0, quantity=3),
              ev("b", "cart_add", T0 + 1, product_id="q", price=5.0),
              ev("c", "cart_remove", T0 + 2, product_id="p", quantity=1),
              ev("d", "cart_remove", T0 + 3, product_id="zz"),
              ev("e", "purchase", T0 + 10, order_id="o", amount=1.0, currency="EUR"),
              ev("f", "cart_add", T0 + 11, product_id="r", price=1.5, quantity=2),
              ev("g", "cart_remove", T0 + 12, product_id="r")]
    fields = ("items", "lines", "value", "last_change")
    cart = lambda t: [O.evaluate_node(prof("cart", f), O.Context(O.history(events, t), t))  # noqa: E731
                      for f in fields]
    assert cart(T0 - 1) == [0, 0, 0, None]
    assert cart(T0 + 1) == [4, 2, 11.0, T0 + 1]
    assert cart(T0 + 3) == [3, 2, 9.0, T0 + 3]
    assert cart(T0 + 10) == [0, 0, 0, T0 + 10]
    assert cart(T0 + 11) == [2, 1, 3.0, T0 + 11]
    assert cart(T0 + 12) == [0, 0, 0, T0 + 12]


def test_purchases_and_traits():
    events = [ev("a", "purchase", T0, order_id="o1", amount=10.0, currency="EUR"),
              ev("b", "identify", T0 + 1, traits={"country": "FR", "vip": True}),
              ev("c", "purchase", T0 + 2, order_id="o2", amount=30.0, currency="EUR"),
              ev("d", "identify", T0 + 3, traits={"country": "DE", "vip": None})]
    at = lambda ns, f, t: O.evaluate_node(prof(ns, f), O.Context(O.history(events, t), t))  # noqa: E731
    assert [at("purchases", f, T0 + 5) for f in ("count", "total", "aov", "first", "last")] == [
        2, 40.0, 20.0, T0, T0 + 2]
    assert at("purchases", "aov", T0 - 1) is None
    assert at("purchases", "count", T0 - 1) == 0
    assert at("trait", "country", T0 + 2) == "FR"
    assert at("trait", "country", T0 + 3) == "DE"
    assert at("trait", "vip", T0 + 2) is True
    assert at("trait", "vip", T0 + 3) is None
    assert at("trait", "missing", T0 + 3) is None


# --- dates --------------------------------------------------------------------------------
@pytest.mark.parametrize(("func", "arg", "today", "expected"), [
    ("days_until_anniversary", "1990-11-23", "2026-11-23", 0),
    ("days_until_anniversary", "1990-11-24", "2026-11-23", 1),
    ("days_until_anniversary", "1990-11-22", "2026-11-23", 364),
    ("days_until_anniversary", "2000-02-29", "2026-02-28", 0),
    ("days_until_anniversary", "2000-02-29", "2028-02-28", 1),
    ("age_years", "1990-11-23", "2026-11-23", 36),
    ("age_years", "1990-11-24", "2026-11-23", 35),
    ("age_years", "1990-13-01", "2026-11-23", None),
    ("age_years", "1990-1-01", "2026-11-23", None),
    ("age_years", None, "2026-11-23", None),
    ("date", "2026-11-20", "2026-11-23", 1_795_132_800_000),
])
def test_date_functions(func, arg, today, expected):
    now = O.date_instant(O.to_date(today)) + 13 * HOUR
    node = A.DateFunc(0, func, L(arg))
    assert O.evaluate_node(node, O.Context([], now)) == expected


def test_date_of_instant_and_within():
    now = O.date_instant(O.to_date("2026-11-23")) + 5 * HOUR
    node = A.Within(0, A.DateFunc(0, "date", L("2026-11-01")), 30 * DAY)
    assert O.evaluate_node(node, O.Context([], now)) is True
    assert O.evaluate_node(A.DateFunc(0, "date", L(now)), O.Context([], now)) == now - 5 * HOUR


# --- operators and null -------------------------------------------------------------------
@pytest.mark.parametrize(("node", "expected"), [
    (cmp("==", L(None), L(None)), False),
    (cmp("!=", L(None), L(1)), False),
    (cmp("!=", L("a"), L(1)), True),
    (cmp("<", L("a"), L(1)), False),
    (cmp("==", L(1), L(1.0)), True),
    (cmp("==", L(True), L(1)), False),
    (A.Arith(0, "/", L(1), L(0)), None),
    (A.Arith(0, "+", L(1), L(None)), None),
    (A.Arith(0, "*", L(2), L(3.5)), 7.0),
    (A.Neg(0, L(None)), None),
    (A.Between(0, L(5), L(5), L(6)), True),
    (A.Between(0, L(None), L(5), L(6)), False),
    (A.In(0, L(None), (None,)), False),
    (A.IsNull(0, A.Arith(0, "-", L(1), L(None)), False), True),
    (A.Not(0, cmp(">", L(None), L(1))), True),
    (A.Or(0, (L(None), L(True))), True),
    (A.And(0, (L(True), L(1))), False),
])
def test_operators(node, expected):
    assert O.evaluate_node(node, O.Context([], T0)) == expected


def test_disabled_segment_has_no_members():
    assert O.membership(seg(L(True)), [], T0) is True
    assert O.membership(seg(L(True), enabled=False), [], T0) is False


# --- routing ------------------------------------------------------------------------------
def test_route_alias_and_forget():
    stream = [
        ev("1", "page_view", T0, cid=None, anon="a1", url="/"),
        ev("2", "page_view", T0 + 1, cid="c1", url="/"),
        ev("3", "alias", T0 + 2, cid="c1", anon="a1"),
        ev("4", "page_view", T0 + 3, cid=None, anon="a1", url="/"),  # goes to c1
        ev("5", "page_view", T0 + 4, cid="c2", url="/"),
        ev("6", "forget", T0 + 5, cid="c2"),
        ev("7", "page_view", T0 + 6, cid="c2", url="/"),
        ev("8", "page_view", T0 + 7, cid="c3", url="/"),
    ]
    routed = O.route(stream, skip={7})
    assert {k: [e["event_id"] for e in v] for k, v in routed.items()} == {
        "c1": ["2", "1", "3", "4"], "c2": ["7"]}


def test_expected_members_with_prefix():
    stream = [ev("1", "page_view", T0, url="/"), ev("2", "page_view", T0 + MIN, url="/")]
    cat = A.Catalogue("1", HOUR, (seg(cmp(">=", count(es("page_view"), 5 * MIN), L(2)), "two"),))
    assert O.expected_members(cat, stream, T0 + MIN) == {"c1": frozenset({"two"})}
    assert O.expected_members(cat, stream, T0 + 6 * MIN) == {}
    assert O.expected_members(cat, stream, T0 + MIN, keep=lambda e: e["timestamp"] <= T0) == {}
