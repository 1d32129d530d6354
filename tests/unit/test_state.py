"""State model bounds and the codec: round trips, format errors, size of typical customers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from state import model
from state.codec import FORMAT_VERSION, CodecError, decode_state, encode_state
from state.model import CustomerState

S, M, H, D = 1_000, 60_000, 3_600_000, 86_400_000
T0 = 1_798_761_600_000
CATALOGUE = Path(__file__).resolve().parents[2] / "processors" / "catalogue.yaml"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(compile_catalogue(load_definitions(CATALOGUE)))


def ev(i: int, typ: str, ts: int, cid: str = "customer-000123", **props: Any) -> dict[str, Any]:
    return {"event_id": f"{cid}-evt-{i:06d}-8c1e2f", "type": typ, "customer_id": cid,
            "anonymous_id": None, "timestamp": ts, "source": "web", "schema_version": 1,
            "properties": props}


def typical(rng: random.Random, n: int = 36, span: int = 60 * D) -> list[dict[str, Any]]:
    """A shopper: mostly page views, some cart and email activity, a purchase, an identify."""
    kinds = (["page_view"] * 22 + ["cart_add"] * 3 + ["purchase", "cart_remove", "identify"]
             + ["email_sent"] * 5 + ["email_open"] * 2 + ["email_click"])
    out = []
    for i, ts in enumerate(sorted(T0 + rng.randrange(span) for _ in range(n))):
        typ = rng.choice(kinds)
        props: dict[str, Any] = {"campaign_id": "spring"}
        if typ == "page_view":
            props = {"url": "https://shop.example/p/1", "device": rng.choice(["iphone", "windows"]),
                     "product_id": f"sku-{rng.randrange(1000)}"}
        elif typ == "cart_add":
            props = {"product_id": f"sku-{rng.randrange(1000)}", "price": 49.9, "quantity": 1}
        elif typ == "cart_remove":
            props = {"product_id": "sku-1"}
        elif typ == "purchase":
            props = {"order_id": "o1", "amount": 129.95, "currency": "EUR"}
        elif typ == "identify":
            props = {"traits": {"birthday": "1990-05-17", "country": "DE", "satisfaction": 8}}
        out.append(ev(i, typ, ts, **props))
    return out


def build(engine: Engine, events: list[dict[str, Any]]) -> CustomerState:
    st = None
    for e in events:
        st = engine.apply(st, e, e["timestamp"]).state
    assert st is not None
    return st


def snapshot(st: CustomerState) -> tuple[Any, ...]:
    """Everything observable in a state, for round-trip comparison."""
    series = sorted((s.key, s.last, s.first, s.ts, s.vals, s.hours) for s in st.series
                    if s.last is not None)
    cart = None if st.cart is None else (
        sorted((k, v.qty, v.price, v.ts) for k, v in st.cart.lines.items()),
        st.cart.log, st.cart.last_change, st.cart.cleared)
    return (st.cid, st.clock, series, st.all_versions(), cart, st.p_count, st.p_total,
            st.p_first, st.p_last, st.traits, st.seen, st.pending)


def test_round_trip_keeps_everything(engine: Engine) -> None:
    for seed in range(20):
        st = build(engine, typical(random.Random(seed)))
        back = decode_state(encode_state(st))
        assert snapshot(back) == snapshot(st)
        assert encode_state(back) == encode_state(st)


def test_decoded_state_behaves_like_the_original(engine: Engine) -> None:
    st = build(engine, typical(random.Random(3)))
    twin = decode_state(encode_state(st))
    later = T0 + 400 * D
    a, b = engine.advance(st, later), engine.advance(twin, later)
    assert a.changes == b.changes and a.next_due == b.next_due


def test_round_trip_with_pending_and_cart_log(engine: Engine) -> None:
    st = build(engine, [ev(1, "cart_add", T0, product_id="x", price=2.5, quantity=2),
                        ev(2, "cart_add", T0 + S, product_id="y", price=1.0)])
    st = engine.apply(st, ev(3, "cart_remove", T0 + 500, product_id="x", quantity=1),
                      T0 + S).state  # out of order: replayed from the log
    st = engine.apply(st, ev(4, "page_view", T0 + H, url="u"), T0 + S).state  # ahead
    assert st is not None and st.pending and st.cart is not None and st.cart.log
    back = decode_state(encode_state(st))
    assert snapshot(back) == snapshot(st)
    assert back.cart is not None and back.cart.items() == 2


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(CodecError, match="unknown customer state format 99"):
        decode_state(msgspec.msgpack.encode([99, 0]))
    with pytest.raises(CodecError, match="not an encoded customer state"):
        decode_state(b"\xc1")
    assert FORMAT_VERSION == 2


def test_format_1_states_still_decode_and_keep_their_series(engine: Engine) -> None:
    """States written before format 2 (plain seen ids, a plain purchase total, crc32 series
    keys) decode, and binding them keeps their series (matched by the legacy key)."""
    import zlib  # noqa: PLC0415

    st = build(engine, typical(random.Random(7)))
    raw = msgspec.msgpack.decode(encode_state(st))
    texts = {s.key: s.text for s in engine.catalogue.series}
    raw[0] = 1
    for s in raw[5]:
        s[0] = zlib.crc32(texts[s[0]].encode())
    raw[8][1] = st.p_total
    seen = raw[10]
    raw[10] = [x for i in range(0, len(seen), 4) for x in seen[i:i + 2]]
    old = decode_state(msgspec.msgpack.encode(raw[:12]))
    assert old.p_total == st.p_total and set(old.seen) == set(st.seen)
    later = ev(999, "page_view", st.clock + M, url="u")
    a = engine.apply(st, later, later["timestamp"])
    b = engine.apply(old, later, later["timestamp"])
    assert a.changes == b.changes
    assert [(x.key, x.ts) for x in a.state.series] == [(x.key, x.ts) for x in b.state.series]


def test_typical_customer_encodes_under_one_kilobyte(engine: Engine) -> None:
    sizes = [len(encode_state(build(engine, typical(random.Random(s))))) for s in range(30)]
    assert max(sizes) <= 1024, sizes


def test_windowed_timestamps_are_dropped_past_the_largest_window(engine: Engine) -> None:
    views = [ev(i, "page_view", T0 + i * D, url="u") for i in range(90)]
    st = build(engine, views)
    series = [s for s in st.series if s.ts]
    assert series
    for s in series:  # page_view keeps at most 30 days (engagement score window)
        assert all(t > st.clock - 30 * D for t in s.ts)
        assert len(s.ts) <= 30


def test_series_cap_drops_the_oldest(engine: Engine) -> None:
    n = model.SERIES_CAP + 100
    st = build(engine, [ev(i, "page_view", T0 + i, url="u") for i in range(n)])
    longest = max(len(s.ts) for s in st.series)
    assert longest == model.SERIES_CAP


def test_seen_ids_are_kept_within_the_lateness_only(engine: Engine) -> None:
    st = build(engine, [ev(i, "page_view", T0 + i * 10 * M, url="u") for i in range(50)])
    assert len(st.seen) <= 8  # 1h of lateness at one event per 10 minutes, plus slack
    assert all(t >= st.clock - H - 10 * M for t, _, _ in st.seen.values())


def test_pending_cap_refuses_further_early_events(engine: Engine) -> None:
    st = build(engine, [ev(0, "page_view", T0, url="u")])
    late = False
    for i in range(model.PENDING_CAP + 1):
        step = engine.apply(st, ev(i + 1, "page_view", T0 + H + i, url="u"), T0)
        st = step.state  # type: ignore[assignment]
        late = step.late
    assert late and len(st.pending) == model.PENDING_CAP
