"""stream.tools.generate: valid public envelopes, realistic mix, deterministic, knobs do what
they say."""

from __future__ import annotations

import itertools
from collections import Counter

from schemas.errors import InvalidEvent
from schemas.validation import validate_event
from stream.tools.generate import GeneratorConfig, generate

CLOCK = 2**53  # validator clock far ahead: generated streams may lie in the future


def test_clean_stream_is_valid_ordered_and_varied():
    cfg = GeneratorConfig(customers=300, events=5_000, seed=3, forget_share=0.05)
    events = list(generate(cfg))
    assert 4_000 <= len(events) <= 6_000
    canonical = [validate_event(e, CLOCK) for e in events]  # raises if any is invalid
    assert all(a["timestamp"] <= b["timestamp"] for a, b in itertools.pairwise(events))
    assert all(cfg.start <= e["timestamp"] < cfg.start + (cfg.days + 2) * 86_400_000
               for e in events)
    types = Counter(e["type"] for e in canonical)
    assert set(types) == {"page_view", "cart_add", "cart_remove", "checkout", "purchase",
                          "email_sent", "email_open", "email_click", "email_unsubscribe",
                          "email_bounce", "identify", "alias", "forget"}
    assert types["page_view"] > types["cart_add"] > types["purchase"] > 0
    assert len({e["event_id"] for e in events}) == len(events)
    # anonymous visitors: some later aliased, and only their anonymous events precede the alias
    first_alias = {e["anonymous_id"]: e["timestamp"] for e in reversed(events)
                   if e["type"] == "alias"}
    assert first_alias
    for e in events:
        if e["customer_id"] is None and e["anonymous_id"] in first_alias:
            assert e["timestamp"] <= first_alias[e["anonymous_id"]]
    traits = [e["properties"]["traits"] for e in events if e["type"] == "identify"]
    assert any({"birthday", "country", "signup_date"} <= set(t) for t in traits)
    assert any("satisfaction" in t for t in traits)


def test_disorder_knobs():
    cfg = GeneratorConfig(customers=200, events=20_000, seed=5, duplicate_share=0.05,
                          out_of_order_share=0.05, late_share=0.02, malformed_share=0.02)
    events = list(generate(cfg))
    ids = Counter(e.get("event_id") for e in events)
    dups = sum(n - 1 for n in ids.values())
    assert 0.03 < dups / len(events) < 0.07
    bad = 0
    for e in events:
        try:
            validate_event(e, CLOCK)
        except InvalidEvent:
            bad += 1
    assert 0.01 < bad / len(events) < 0.03
    # deliveries behind the running maximum: out-of-order (< 10 min) and late (2 h behind)
    wm, behind, far = 0, 0, 0
    for e in events:
        ts = e["timestamp"]
        if not isinstance(ts, int):
            continue
        if ts < wm:
            behind += 1
            far += ts < wm - 3_600_000
        wm = max(wm, ts)
    assert behind > 0.03 * len(events)
    assert far > 0.005 * len(events)


def test_seeded_and_deterministic():
    a = list(generate(GeneratorConfig(customers=50, events=800, seed=11, duplicate_share=0.1)))
    b = list(generate(GeneratorConfig(customers=50, events=800, seed=11, duplicate_share=0.1)))
    c = list(generate(GeneratorConfig(customers=50, events=800, seed=12, duplicate_share=0.1)))
    assert a == b
    assert a != c
