"""The language's newer constructs on the live worker: custom event types (a types file),
segments built from segments and positive sequences, against the
offline replay of the same events with the same files: identical changes (instant, version,
cause) and memberships in Redis, a consistent change log."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import yaml

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from processors.replay import replay

from .pipeline import (
    Event,
    canonical,
    changes_of,
    check_end_state,
    flapping_events,
    make_pipeline,
    produce,
    wait_caught_up,
)

REPO = Path(__file__).resolve().parents[2]
TYPES = REPO / "processors" / "event_types.yaml"

SEGMENTS = {
    "version": "lang-live-1",
    "settings": {"allowed_lateness": "1h"},
    "segments": [
        {"name": "shoppers", "description": "viewed and carted in the hour",
         "condition": "count(page_view, 1h) >= 1 and count(cart_add, 1h) >= 1"},
        {"name": "unhappy", "description": "a custom type with a filter",
         "condition": "count(review_posted where rating <= 2, 1h) >= 1"},
        {"name": "app_users", "description": "a sum over a custom type",
         "condition": "sum(app_session.minutes, 1h) >= 20"},
        {"name": "unhappy_shoppers", "description": "built from two segments",
         "condition": "segment.unhappy and segment.shoppers"},
        {"name": "calm_app_users", "description": "built from segments, with a not",
         "condition": "segment.app_users and not segment.unhappy"},
        {"name": "viewed_then_carted", "description": "a positive sequence",
         "condition": "last(page_view then cart_add within 1m) within 1h"},
        {"name": "unhappy_funnel", "description": "a sequence and a custom type, by reference",
         "condition": "segment.viewed_then_carted and segment.unhappy"},
    ],
}


def custom_events(rng: random.Random, shop: list[Event]) -> list[Event]:
    """Reviews and app sessions of the same customers, within the same span."""
    out: list[Event] = []
    for i, ev in enumerate(rng.sample(shop, len(shop) // 2)):
        if rng.random() < 0.5:
            props: dict[str, object] = {"rating": rng.randint(1, 5), "product_id": "p1"}
            typ = "review_posted"
        else:
            typ, props = "app_session", {"minutes": rng.choice([5, 12.5, 30]),
                                         "platform": "ios"}
        out.append({"event_id": f"u{i}", "type": typ, "customer_id": ev["customer_id"],
                    "timestamp": ev["timestamp"] + 1, "source": "lang", "properties": props})
    return out


def test_custom_types_and_segment_references_live_equal_the_replay(
    kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    segments = tmp_path / "segments.yaml"
    segments.write_text(yaml.safe_dump(SEGMENTS, sort_keys=False))
    # one raw partition and events in time order: the worker sees them in order, so not only
    # the end state but every change (instant, version, cause) must be the replay's
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, segments,
                      raw_partitions=1, SEGSTREAM_TYPES_FILE=str(TYPES))
    rng = random.Random(18)
    now = int(time.time() * 1000)
    shop = flapping_events(rng, now, customers=120, per_customer=6)
    events = sorted(shop + custom_events(rng, shop), key=lambda e: e["timestamp"])
    types = load_types(TYPES)
    worker = p.worker()
    try:
        worker.start()
        produce(kafka_bootstrap, p.names["raw"], events, partitions=1)
        wait_caught_up(p, len(events), [worker])
        report = check_end_state(p, events, segments, types)
        assert report.lost == 0 and report.conflicting == 0
        for seg in ("unhappy", "app_users", "unhappy_shoppers", "calm_app_users",
                    "viewed_then_carted", "unhappy_funnel"):
            assert report.members.get(seg), f"{seg}: the data must put someone in it"
        live = {(c.customer_id, c.segment, c.action, c.at, c.version, c.cause)
                for _, c in changes_of(kafka_bootstrap, p.names["changes"])}  # repeats: once
        offline: list[Any] = []
        replay(Engine(compile_catalogue(load_definitions(segments, types=types))),
               canonical(events, types), on_change=offline.append)
        assert sorted(live) == sorted((c.customer_id, c.segment, c.action, c.at, c.version,
                                       c.cause) for c in offline)
        assert worker.stop() == 0, worker.log_tail()
    finally:
        p.stop_all()
