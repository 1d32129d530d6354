"""Identity on the real worker: anonymous visitors log in (alias) and their profiles move to the
customer's partition (hand-off record), later anonymous-only events follow them (forwarding),
and forget erases a customer. Checked against the offline replay and the change log."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from schemas.partitioner import partition_for
from state.redis_store import RedisStore

from .pipeline import (
    changes_of,
    check_end_state,
    make_pipeline,
    produce,
    redis_client,
    slow_segments,
    wait_caught_up,
)

BUNDLE_PARTITIONS = 4


def visitor_events(rng: random.Random, now: int, visitors: int) -> list[dict[str, Any]]:
    """Per visitor: anonymous browsing and a cart, then an alias to a customer, then more
    anonymous-only events (after the alias, in time and on the wire); some customers forget."""
    events: list[dict[str, Any]] = []
    n = 0

    def add(typ: str, ts: int, cid: str | None, anon: str | None, **props: Any) -> None:
        nonlocal n
        n += 1
        events.append({"event_id": f"i{n}", "type": typ, "customer_id": cid,
                       "anonymous_id": anon, "timestamp": ts, "source": "test",
                       "properties": props})

    for i in range(visitors):
        anon, cid = f"anon-{i:04d}", f"cust-{i:04d}"
        t = now - 100_000 + rng.randrange(20_000)
        add("page_view", t, None, anon, url="/a")
        add("page_view", t + 10, None, anon, url="/b")
        add("cart_add", t + 20, None, anon, product_id="sku-1", price=12.0)
        if i % 3 == 0:  # the customer already had a history
            add("identify", t + 25, cid, None, traits={"country": "DE"})
        add("alias", t + 30_000, cid, anon)
        add("page_view", t + 40_000, None, anon, url="/after")  # forwarded to the customer
        if i % 5 == 0:
            add("purchase", t + 50_000, cid, None, order_id=f"o{i}", amount=12.0,
                currency="EUR")
        if i % 7 == 0:
            add("forget", t + 60_000, cid, None)
    # in time order within each visitor's story, interleaved across visitors
    events.sort(key=lambda e: (e["timestamp"], e["event_id"]))
    return events


def test_alias_hands_profiles_across_partitions(
    kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    segments = slow_segments(tmp_path)
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, segments,
                      bundle_partitions=BUNDLE_PARTITIONS)
    events = visitor_events(random.Random(3), int(time.time() * 1000), 60)
    crossing = [e for e in events if e["type"] == "alias" and
                partition_for(e["anonymous_id"], BUNDLE_PARTITIONS)
                != partition_for(e["customer_id"], BUNDLE_PARTITIONS)]
    assert len(crossing) >= 20
    # one raw partition keeps each visitor's story in order on the wire
    produce(kafka_bootstrap, p.names["raw"], events, partitions=1)
    worker = p.worker()
    try:
        worker.start()
        wait_caught_up(p, len(events), [worker])
        # forwarded records and hand-offs land after the originals: wait until applied too
        deadline = time.monotonic() + 60
        while True:
            report = None
            try:
                report = check_end_state(p, events, segments)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            break
        assert report.members.get("cart_open"), "carts must follow the visitors"

        async def anon_traces() -> list[tuple[bool, dict[str, int]]]:
            client = redis_client(redis_url)
            try:
                store = RedisStore(client, namespace=p.names["namespace"])
                out = []
                for e in crossing:
                    anon = e["anonymous_id"]
                    part = partition_for(anon, BUNDLE_PARTITIONS)
                    out.append((await store.has_state(part, anon),
                                await store.segments_of(part, anon)))
                return out
            finally:
                await client.aclose()

        # what stays of a handed-over visitor: version counters, no membership
        assert all(not segs for _, segs in asyncio.run(anon_traces()))
        logged = [ch for _, ch in changes_of(p.bootstrap, p.names["changes"])]
        anon_exits = {ch.customer_id for ch in logged
                      if ch.cause.startswith("alias:") and ch.action == "exit"}
        assert {e["anonymous_id"] for e in crossing} <= anon_exits
        forgotten = {e["customer_id"] for e in events if e["type"] == "forget"}
        assert not forgotten & set().union(*report.members.values())
    finally:
        p.stop_all()
