"""Engine semantics: lateness, duplicates, ordering, time jumps, versions, alias, forget,
definitions changes, determinism (docs/time-semantics.md)."""

from __future__ import annotations

import random
from typing import Any

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.types import Change
from state.codec import decode_state, encode_state
from state.model import CustomerState

S, M, H, D = 1_000, 60_000, 3_600_000, 86_400_000
T0 = 1_798_761_600_000  # 2027-01-01T00:00:00Z


def catalogue(*segments: tuple[str, str], version: str = "v1", lateness: str = "1h") -> Engine:
    body = "".join(f"  - name: {n}\n    description: d\n    condition: '{c}'\n"
                   for n, c in segments)
    text = f'version: "{version}"\nsettings: {{allowed_lateness: {lateness}}}\nsegments:\n{body}'
    return Engine(compile_catalogue(load_definitions(text)))


def ev(eid: str, typ: str, ts: int, cid: str | None = "c", anon: str | None = None,
       **props: Any) -> dict[str, Any]:
    return {"event_id": eid, "type": typ, "customer_id": cid, "anonymous_id": anon,
            "timestamp": ts, "source": "t", "schema_version": 1, "properties": props}


def buy(eid: str, ts: int, cid: str | None = "c", anon: str | None = None) -> dict[str, Any]:
    return ev(eid, "purchase", ts, cid, anon, order_id="o", amount=10.0, currency="EUR")


def members(st: CustomerState | None) -> set[str]:
    return set() if st is None else set(st.segments())


ONE = ("buyer", "count(purchase, 1d) >= 1")


def test_late_event_is_refused_and_not_applied() -> None:
    eng = catalogue(ONE)
    st = eng.apply(None, buy("a", T0), T0).state
    step = eng.apply(st, buy("b", T0 - H - 1), T0)
    assert step.late and step.changes == [] and step.state is st
    assert not eng.apply(st, buy("c", T0 - H), T0).late  # exactly at the bound: accepted


def test_duplicate_within_lateness_is_ignored() -> None:
    eng = catalogue(("two", "count(purchase, 1d) >= 2"))
    st = eng.apply(None, buy("a", T0), T0).state
    step = eng.apply(st, buy("a", T0), T0 + M)
    assert not step.late and step.changes == []
    step = eng.apply(step.state, buy("b", T0 + M), T0 + M)
    assert [c.action for c in step.changes] == ["enter"]


def test_duplicate_beyond_lateness_is_refused_as_late() -> None:
    eng = catalogue(("two", "count(purchase, 1d) >= 2"))
    st = eng.apply(None, buy("a", T0), T0).state
    step = eng.apply(st, buy("a", T0), T0 + 2 * H)
    assert step.late and step.changes == []


def test_ahead_of_clock_event_enters_at_its_own_time() -> None:
    eng = catalogue(ONE)
    st = eng.apply(None, ev("p", "page_view", T0, url="u"), T0).state
    step = eng.apply(st, buy("b", T0 + 10 * S), T0)
    assert step.changes == [] and step.next_due == T0 + 10 * S
    assert step.state is not None
    assert eng.advance(step.state, T0 + 10 * S - 1).changes == []
    ch = eng.advance(step.state, T0 + 10 * S).changes
    assert [(c.action, c.at, c.cause) for c in ch] == [("enter", T0 + 10 * S, "b")]


def test_time_jump_emits_transient_pair_at_exact_instants_then_the_event() -> None:
    eng = catalogue(ONE)
    st = eng.apply(None, buy("a", T0), T0).state
    step = eng.apply(st, buy("b", T0 + 3 * D), T0 + 3 * D)
    assert [(c.action, c.at - T0, c.version, c.cause) for c in step.changes] == [
        ("exit", D, 2, "timer"), ("enter", 3 * D, 3, "b")]


def test_versions_alternate_enter_odd_exit_even() -> None:
    eng = catalogue(ONE)
    st: CustomerState | None = None
    log: list[Change] = []
    for i in range(6):
        step = eng.apply(st, buy(f"b{i}", T0 + i * 2 * D), T0 + i * 2 * D)
        st = step.state
        log += step.changes
    assert [c.version for c in log] == list(range(1, len(log) + 1))
    assert all((c.action == "enter") == (c.version % 2 == 1) for c in log)


def _shuffled_within(events: list[dict[str, Any]], window: int, rng: random.Random
                     ) -> list[dict[str, Any]]:
    out = list(events)
    for i in range(len(out) - 1):
        if rng.random() < 0.5 and out[i + 1]["timestamp"] - out[i]["timestamp"] < window:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def test_out_of_order_within_lateness_gives_the_ordered_membership() -> None:
    eng = catalogue(("cart", "cart.items > 0"), ("two", "count(purchase, 1h) >= 2"),
                    ("de", 'trait.country == "DE"'),
                    ("abandoned", "cart_add then no purchase within 30m"))
    rng = random.Random(5)
    for _ in range(30):
        evs, t = [], T0
        for i in range(25):
            t += rng.choice([S, M, 10 * M])
            kind = rng.choice(["add", "remove", "buy", "id"])
            if kind == "add":
                evs.append(ev(f"e{i}", "cart_add", t, product_id=rng.choice("xy"), price=1.0))
            elif kind == "remove":
                evs.append(ev(f"e{i}", "cart_remove", t, product_id=rng.choice("xy")))
            elif kind == "buy":
                evs.append(buy(f"e{i}", t))
            else:
                evs.append(ev(f"e{i}", "identify", t, traits={"country": rng.choice(["DE", "FR"])}))

        def final(order: list[dict[str, Any]]) -> set[str]:
            st, wm = None, 0
            for e in order:
                wm = max(wm, e["timestamp"])
                step = eng.apply(st, e, wm)
                assert not step.late
                st = step.state
            assert st is not None
            return members(eng.advance(st, wm).state)

        assert final(_shuffled_within(evs, H, rng)) == final(evs)


def test_same_input_same_output() -> None:
    eng = catalogue(ONE, ("eng", "last(page_view) within 10m"))
    evs = [buy("a", T0), ev("p", "page_view", T0 + M, url="u"), buy("b", T0 + 2 * D)]

    def run() -> list[Change]:
        st, out = None, []
        for e in evs:
            step = eng.apply(st, e, e["timestamp"])
            st, out = step.state, out + step.changes
        return out

    assert run() == run()


def test_merge_no_duplicate_enter_and_anonymous_exits() -> None:
    eng = catalogue(ONE, ("viewer", "count(page_view, 1d) >= 1"))
    known = eng.apply(None, buy("k1", T0), T0).state
    anon = eng.apply(None, ev("a1", "page_view", T0 + S, cid=None, anon="v", url="u"),
                     T0 + S).state
    anon = eng.apply(anon, buy("a2", T0 + 2 * S, cid=None, anon="v"), T0 + 2 * S).state
    assert anon is not None and anon.cid == "v"
    alias = ev("al", "alias", T0 + 3 * S, cid="c", anon="v")
    k_step, a_step = eng.merge(known, anon, alias, T0 + 3 * S)
    assert [(c.customer_id, c.segment, c.action, c.cause) for c in k_step.changes] == [
        ("c", "viewer", "enter", "alias:al")]  # already a buyer: no second ENTER
    assert sorted((c.customer_id, c.segment, c.action, c.version) for c in a_step.changes) == [
        ("v", "buyer", "exit", 2), ("v", "viewer", "exit", 2)]
    assert a_step.state is None and k_step.state is not None
    assert members(k_step.state) == {"buyer", "viewer"}
    # the merged history counts both purchases
    two = catalogue(("two", "count(purchase, 1d) >= 2"))
    k2 = two.reevaluate(k_step.state, T0 + 3 * S, "definitions:t")
    assert members(k2.state) == {"two"}


def test_merge_into_unknown_customer_moves_memberships() -> None:
    eng = catalogue(ONE)
    anon = eng.apply(None, buy("a1", T0, cid=None, anon="v"), T0).state
    assert anon is not None
    k_step, a_step = eng.merge(None, anon, ev("al", "alias", T0 + S, cid="c", anon="v"), T0 + S)
    assert [(c.customer_id, c.action, c.version) for c in k_step.changes] == [("c", "enter", 1)]
    assert [(c.customer_id, c.action, c.version) for c in a_step.changes] == [("v", "exit", 2)]


def test_forget_exits_everything() -> None:
    eng = catalogue(ONE, ("viewer", "count(page_view, 1d) >= 1"), ("never", "purchases.count > 5"))
    st = eng.apply(None, buy("a", T0), T0).state
    st = eng.apply(st, ev("p", "page_view", T0 + S, url="u"), T0 + S).state
    step = eng.forget(st, ev("f", "forget", T0 + 2 * S), T0 + 2 * S)
    stone = step.state  # a tombstone: version counters only, all at EXIT
    assert stone is not None and step.next_due is None
    assert members(stone) == set() and stone.p_count == 0 and not stone.seen
    assert stone.erased == T0 + 2 * S
    assert sorted((c.segment, c.action, c.version, c.cause, c.at) for c in step.changes) == [
        ("buyer", "exit", 2, "forget:f", T0 + 2 * S), ("viewer", "exit", 2, "forget:f", T0 + 2 * S)]


def test_reevaluate_adds_removes_and_keeps_version_counters() -> None:
    v1 = catalogue(ONE, version="v1")
    st = v1.apply(None, buy("a", T0), T0).state
    assert st is not None
    v2 = catalogue(("spender", "count(purchase, 2d) >= 1"), version="v2")
    step = v2.reevaluate(st, T0 + S, "definitions:v2")
    assert sorted((c.segment, c.action, c.version, c.cause) for c in step.changes) == [
        ("buyer", "exit", 2, "definitions:v2"), ("spender", "enter", 1, "definitions:v2")]
    back = v1.reevaluate(step.state, T0 + 2 * S, "definitions:v1")  # type: ignore[arg-type]
    assert sorted((c.segment, c.action, c.version) for c in back.changes) == [
        ("buyer", "enter", 3), ("spender", "exit", 2)]
    assert back.state is not None and back.state.orphans == {"spender": 2}


def test_decoded_state_with_same_definitions_binds_silently() -> None:
    eng = catalogue(ONE, ("viewer", "count(page_view, 1d) >= 1"))
    st = eng.apply(None, buy("a", T0), T0).state
    assert st is not None
    again = decode_state(encode_state(st))
    step = eng.advance(again, T0 + S)
    assert step.changes == [] and members(step.state) == {"buyer"}
    assert step.next_due == T0 + D
    other = catalogue(("viewer", "count(page_view, 1d) >= 1"), version="v9")
    step = other.advance(decode_state(encode_state(st)), T0 + S)
    assert [(c.segment, c.action, c.cause) for c in step.changes] == [
        ("buyer", "exit", "definitions:v9")]


def test_new_aggregate_over_a_property_not_kept_before_starts_empty() -> None:
    """Documented limit: a new catalogue evaluates from the state the old one kept."""
    v1 = catalogue(ONE, version="v1")
    st = v1.apply(None, buy("a", T0), T0).state
    assert st is not None
    v2 = catalogue(("spender", "sum(purchase.amount, 1d) >= 10"), version="v2")
    step = v2.reevaluate(st, T0 + S, "definitions:v2")
    assert "spender" not in members(step.state)  # the amount was not kept by v1
    step = v2.apply(step.state, buy("b", T0 + 2 * S), T0 + 2 * S)
    assert [(c.segment, c.action) for c in step.changes] == [("spender", "enter")]


def test_release_then_absorb_is_merge_and_a_late_alias_is_refused() -> None:
    """The worker splits an alias across partitions (release where the anonymous profile
    lives, absorb where the customer lives): the result must be merge's."""
    def profiles(eng: Engine) -> tuple[Any, Any]:
        known = eng.apply(None, buy("k1", T0), T0).state
        anon = eng.apply(None, ev("a1", "page_view", T0 + S, cid=None, anon="v", url="u"),
                         T0 + S).state
        return known, anon

    eng = catalogue(ONE, ("viewer", "count(page_view, 1d) >= 1"))
    alias = ev("al", "alias", T0 + 3 * S, cid="c", anon="v")
    known, anon = profiles(eng)
    k_step, a_step = eng.merge(known, anon, alias, T0 + 3 * S)
    known2, anon2 = profiles(eng)
    gone = eng.release(anon2, alias, T0 + 3 * S)
    assert gone.changes == a_step.changes and not gone.late
    got = eng.absorb(known2, decode_state(encode_state(gone.state)), alias, T0 + 3 * S)
    assert got.changes == k_step.changes and got.next_due == k_step.next_due
    assert eng.has_seen(got.state, "al")
    # an alias older than now - allowed lateness is refused, the profiles untouched
    known3, anon3 = profiles(eng)
    late_now = T0 + 3 * S + eng.lateness + 1
    k_late, a_late = eng.merge(known3, anon3, alias, late_now)
    assert k_late.late and a_late.late and not k_late.changes and not a_late.changes
    assert members(anon3) == {"viewer"}


def test_untouched_series_are_never_shared_between_customers() -> None:
    """Regression: empty series are shared sentinels; rebinding or a second engine over the
    same compiled catalogue must never hand one customer's events to another."""
    v1 = catalogue(ONE, ("viewer", "count(page_view, 1d) >= 1"), version="v1")
    a = v1.apply(None, ev("a", "page_view", T0, cid="a", url="u"), T0).state
    b = v1.apply(None, ev("b", "page_view", T0, cid="b", url="u"), T0).state
    assert a is not None and b is not None
    v2 = catalogue(("two", "count(purchase, 1d) >= 1"), ("viewer", "count(page_view, 1d) >= 1"),
                   version="v2")
    a = v2.reevaluate(a, T0 + S, "definitions:v2").state
    b = v2.reevaluate(b, T0 + S, "definitions:v2").state
    a = v2.apply(a, buy("p", T0 + 2 * S, cid="a"), T0 + 2 * S).state
    assert members(a) == {"two", "viewer"}
    assert members(v2.advance(b, T0 + 3 * S).state) == {"viewer"}  # type: ignore[arg-type]
    twin = Engine(v1.catalogue)  # a second engine over the same compiled catalogue
    c = v1.apply(None, ev("c", "page_view", T0, cid="c", url="u"), T0).state
    d = v1.apply(None, ev("d", "page_view", T0, cid="d", url="u"), T0).state
    twin.apply(c, buy("q", T0 + S, cid="c"), T0 + S)
    assert members(v1.apply(d, ev("d2", "page_view", T0 + S, cid="d", url="u"),
                            T0 + S).state) == {"viewer"}


def test_tombstone_continues_version_counters_after_forget() -> None:
    eng = catalogue(ONE)
    st = eng.apply(None, buy("a", T0), T0).state
    assert st is not None
    gone = eng.forget(st, ev("f", "forget", T0 + S), T0 + S)
    assert [c.version for c in gone.changes] == [2]
    stone = gone.state
    assert stone is not None
    assert members(stone) == set() and stone.series[0].last is None
    step = eng.apply(stone, buy("b", T0 + 2 * S), T0 + 2 * S)
    assert [(c.action, c.version) for c in step.changes] == [("enter", 3)]
