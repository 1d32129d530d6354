"""The default catalogue against the brute-force oracle over seeded random customer streams.

For every stream: memberships after each event and at later instants equal the oracle's; for
in-order streams every change happens exactly at an instant where the oracle's membership
flips; versions alternate; states survive encode/decode at random points. Streams mix every
event type, duplicates, neighbours swapped within the allowed lateness, gaps from 1 ms to 45
days (so windows, within, then-no, since and calendar conditions all fire by time).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import oracle
import pytest

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.types import Change
from state.codec import decode_state, encode_state
from state.model import CustomerState

H, D = 3_600_000, 86_400_000
T0 = 1_790_000_000_000
CATALOGUE = load_definitions(Path(__file__).resolve().parents[2] / "processors" / "catalogue.yaml")
ENGINE = Engine(compile_catalogue(CATALOGUE))
SEGMENTS = {s.name: s for s in CATALOGUE.segments}


def stream(rng: random.Random, n: int) -> list[dict[str, Any]]:
    evs, t = [], T0
    kinds = ["page_view"] * 5 + ["cart_add"] * 2 + [
        "cart_remove", "purchase", "email_open", "email_click", "email_sent", "email_sent",
        "identify"]
    for i in range(n):
        t += rng.choice([1, 1000, 60_000, H, H, 6 * H, D, 3 * D, 20 * D, 45 * D])
        typ = rng.choice(kinds)
        p: dict[str, Any] = {"campaign_id": "c"}
        if typ == "page_view":
            p = {"url": "u"}
            if rng.random() < 0.6:
                p["product_id"] = rng.choice("abc")
            if rng.random() < 0.5:
                p["device"] = rng.choice(["iphone", "android", "mac"])
        elif typ == "cart_add":
            p = {"product_id": rng.choice("abc"), "price": rng.choice([10.0, 99.5, 150.0]),
                 "quantity": rng.choice([1, 2])}
        elif typ == "cart_remove":
            p = {"product_id": rng.choice("abc")}
            if rng.random() < 0.5:
                p["quantity"] = 1
        elif typ == "purchase":
            p = {"order_id": "o", "amount": rng.choice([20.0, 60.0, 200.0, 700.0]),
                 "currency": "EUR"}
        elif typ == "identify":
            birthday = rng.choice(["1990-01-01", "2005-10-01", "2000-02-29", None])
            p = {"traits": {"birthday": birthday, "country": rng.choice(["DE", "FR"]),
                            "satisfaction": rng.choice([3, 8, "x"])}}
        evs.append({"event_id": f"e{i}", "type": typ, "customer_id": "c1", "anonymous_id": None,
                    "timestamp": t, "source": "s", "schema_version": 1, "properties": p})
    return evs


def members(st: CustomerState | None) -> frozenset[str]:
    return frozenset(st.segments()) if st is not None else frozenset()


@pytest.mark.parametrize("seed", range(60))
def test_default_catalogue_matches_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    evs = stream(rng, 40)
    shuffled = seed % 2 == 1
    order = list(evs)
    if shuffled:
        for i in range(len(order) - 1):
            if rng.random() < 0.5 and order[i + 1]["timestamp"] - order[i]["timestamp"] < H:
                order[i], order[i + 1] = order[i + 1], order[i]
    if rng.random() < 0.3:
        k = rng.randrange(len(order))
        order.insert(rng.randrange(k, len(order)) + 1, dict(order[k]))  # a later duplicate
    st: CustomerState | None = None
    wm = 0
    applied: list[dict[str, Any]] = []
    log: list[Change] = []
    for e in order:
        wm = max(wm, e["timestamp"])
        step = ENGINE.apply(st, e, wm)
        if step.late:  # only a re-delivered event can be older than the lateness here
            assert any(a["event_id"] == e["event_id"] for a in applied)
            continue
        st = step.state
        log += step.changes
        applied.append(e)
        if rng.random() < 0.3:
            st = decode_state(encode_state(st))  # type: ignore[arg-type]
        assert members(st) == oracle.memberships(CATALOGUE, applied, wm)
    t = wm
    for _ in range(8):
        t += rng.choice([H, D, 10 * D, 40 * D, 100 * D])
        step = ENGINE.advance(st, t)  # type: ignore[arg-type]
        st = step.state
        log += step.changes
        assert members(st) == oracle.memberships(CATALOGUE, applied, t)
    versions: dict[str, int] = {}
    for c in log:
        versions[c.segment] = versions.get(c.segment, 0) + 1
        assert c.version == versions[c.segment]
        assert (c.action == "enter") == (c.version % 2 == 1)
        if not shuffled:  # in order: each change at the exact instant the oracle flips
            seg = SEGMENTS[c.segment]
            assert oracle.membership(seg, applied, c.at) == (c.action == "enter"), c
            assert oracle.membership(seg, applied, c.at - 1) != (c.action == "enter"), c
