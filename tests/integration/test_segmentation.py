"""The whole pipeline on the real broker and Redis: raw events -> ingest -> bundles ->
segmentation -> segment-changes topic + Redis, checked against the offline replay of the same
events, and a time-only EXIT that fires with no new event.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from redis.asyncio import Redis

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.replay import replay
from schemas.changes import SegmentChange, decode_change
from schemas.partitioner import partition_for
from schemas.validation import validate_event
from state.redis_store import RedisStore

from .support import Worker, free_port, read_all

REPO = Path(__file__).resolve().parents[2]
SEGMENTS = REPO / "tests" / "fixtures" / "live_segments.yaml"
RAW_PARTITIONS = 2
BUNDLE_PARTITIONS = 4
OPEN_WINDOW_MS = 15_000
WAIT_S = 180


def make_events(rng: random.Random, now: int, customers: int) -> list[dict[str, Any]]:
    """A few minutes of behaviour of known customers, every event within the last 90 s."""
    events: list[dict[str, Any]] = []
    n = 0

    def add(cid: str, typ: str, ts: int, props: dict[str, Any]) -> None:
        nonlocal n
        n += 1
        events.append({"event_id": f"e{n}", "type": typ, "customer_id": cid, "timestamp": ts,
                       "source": "test", "properties": props})

    for i in range(customers):
        cid = f"c{i:03d}"
        t = now - 90_000 + rng.randrange(60_000)
        add(cid, "identify", t, {"traits": {"country": rng.choice(["DE", "FR", "US"])}})
        for k in range(rng.randrange(4)):
            add(cid, "page_view", t + 100 + k, {"url": f"/p/{k}", "category": "shoes"})
        if rng.random() < 0.6:
            add(cid, "cart_add", t + 200, {"product_id": "sku-1", "price": 20.0})
            if rng.random() < 0.5:
                add(cid, "purchase", t + 300, {"order_id": f"o{i}", "amount": 20.0,
                                               "currency": "EUR"})
        if rng.random() < 0.7:  # opens land in the last 20 s: the 15 s exit is still ahead
            add(cid, "email_open", now - rng.randrange(5_000), {"campaign_id": "k1"})
    rng.shuffle(events)  # out of order on the wire (all within the allowed lateness)
    return events


@pytest.fixture
def pipeline(kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str,
             tmp_path: Path) -> Iterator[tuple[Worker, dict[str, str]]]:
    names = {"raw": f"{unique_topic_prefix}segstream-events",
             "bundles": f"{unique_topic_prefix}segstream-bundles",
             "changes": f"{unique_topic_prefix}segstream-changes",
             "namespace": f"t{uuid.uuid4().hex[:8]}:"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(names["raw"], RAW_PARTITIONS, 1)])
    finally:
        admin.close()
    env = {
        "SEGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SEGSTREAM_REDIS_URL": redis_url,
        "SEGSTREAM_REDIS_NAMESPACE": names["namespace"],
        "SEGSTREAM_TOPIC_PREFIX": unique_topic_prefix,
        "SEGSTREAM_RAW_PARTITIONS": str(RAW_PARTITIONS),
        "SEGSTREAM_BUNDLE_PARTITIONS": str(BUNDLE_PARTITIONS),
        "SEGSTREAM_BUNDLE_MAX_EVENTS": "25",
        "SEGSTREAM_SEGMENTS_FILE": str(SEGMENTS),
        "SEGSTREAM_WEB_PORT": str(free_port()),
        "SEGSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SEGSTREAM_SESSION_TIMEOUT_MS": "10000",
        "PATH": "/usr/bin:/bin",
    }
    w = Worker(env, tmp_path / "worker")
    try:
        yield w, names
    finally:
        w.stop()


async def redis_view(url: str, namespace: str, customers: list[str]
                     ) -> tuple[dict[str, set[str]], list[int | None]]:
    client = Redis.from_url(url)
    try:
        store = RedisStore(client, namespace=namespace)
        members: dict[str, set[str]] = defaultdict(set)
        for cid in customers:
            for seg in await store.segments_of(partition_for(cid, BUNDLE_PARTITIONS), cid):
                members[seg].add(cid)
        offsets = [await store.applied_offset(p) for p in range(BUNDLE_PARTITIONS)]
        return dict(members), offsets
    finally:
        await client.aclose()


def changes_of(bootstrap: str, topic: str) -> list[tuple[int, SegmentChange]]:
    """(record timestamp ms, change) of every record of the changes topic."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    out: list[tuple[int, SegmentChange]] = []
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                out.extend((r.timestamp, decode_change(r.value)) for r in records)
    finally:
        consumer.close()
    return out


def members_from_log(changes: list[SegmentChange]) -> dict[str, set[str]]:
    """Membership implied by the change log, checking its integrity on the way: per
    (customer, segment) versions 1, 2, 3... (repeats allowed: at-least-once), alternating
    ENTER/EXIT, and never two actions for one version."""
    seen: dict[tuple[str, str, int], str] = {}
    last: dict[tuple[str, str], int] = {}
    for ch in changes:
        key = (ch.customer_id, ch.segment, ch.version)
        assert seen.setdefault(key, ch.action) == ch.action, f"conflicting version {key}"
        prev = last.get(key[:2], 0)
        assert ch.version <= prev + 1, f"version gap at {key} after {prev}"
        assert (ch.action == "enter") == (ch.version % 2 == 1)
        last[key[:2]] = max(prev, ch.version)
    members: dict[str, set[str]] = defaultdict(set)
    for (cid, seg), version in last.items():
        if version % 2:
            members[seg].add(cid)
    return dict(members)


def test_pipeline_matches_replay_and_fires_time_only_exits(
    kafka_bootstrap: str, redis_url: str, pipeline: tuple[Worker, dict[str, str]]
) -> None:
    worker, names = pipeline
    rng = random.Random(7)
    now = int(time.time() * 1000)
    events = make_events(rng, now, customers=60)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(0, len(events), 20):  # arrays of 20 events, keyed by nothing
        producer.send(names["raw"], orjson.dumps(events[i:i + 20]), partition=i % RAW_PARTITIONS)
    producer.flush()
    producer.close()
    worker.start()

    customers = sorted({ev["customer_id"] for ev in events})
    deadline = time.monotonic() + WAIT_S
    while True:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited ({worker.proc.returncode}):\n{worker.log_tail()}")
        bundles = read_all(kafka_bootstrap, names["bundles"])
        n_bundled = sum(len(orjson.loads(v)["events"]) for _, _, v in bundles)
        _, offsets = asyncio.run(redis_view(redis_url, names["namespace"], []))
        last = {p: o for p, o, _ in bundles}
        if n_bundled == len(events) and all(offsets[p] == o for p, o in last.items()):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"timeout: {n_bundled}/{len(events)} bundled, offsets {offsets} vs "
                        f"{last}\n{worker.log_tail()}")
        time.sleep(0.5)

    # 1. every segment but the 15-second one equals the offline replay right now
    canonical = [validate_event(ev, now + 60_000) for ev in events]
    engine = Engine(compile_catalogue(load_definitions(SEGMENTS)))
    t1 = int(time.time() * 1000)
    expected = replay(engine, sorted(canonical, key=lambda e: e["timestamp"]), until=t1)
    members, _ = asyncio.run(redis_view(redis_url, names["namespace"], customers))
    for seg in ("viewers_1h", "buyers_1h", "german", "cart_open"):
        assert members.get(seg, set()) == expected.members.get(seg, set()), seg
    assert expected.members.get("german"), "the data must put someone in each segment"

    # 2. the time-only exit: 15 s after each last open, with no new event
    last_open = max(ev["timestamp"] for ev in canonical if ev["type"] == "email_open")
    time.sleep(max(0.0, (last_open + OPEN_WINDOW_MS + 3_000 - time.time() * 1000) / 1000))
    members, _ = asyncio.run(redis_view(redis_url, names["namespace"], customers))
    assert "opened_recently" not in members
    logged = changes_of(kafka_bootstrap, names["changes"])
    opens = {ev["customer_id"] for ev in canonical if ev["type"] == "email_open"}
    timer_exits = [(ts, ch) for ts, ch in logged
                   if ch.segment == "opened_recently" and ch.action == "exit"]
    assert {ch.customer_id for _, ch in timer_exits} == opens
    assert all(ch.cause == "timer" for _, ch in timer_exits)
    delays = sorted(ts - ch.at for ts, ch in timer_exits)
    print(f"timer exits: {len(delays)}, delay after due p50={delays[len(delays) // 2]} ms, "
          f"max={delays[-1]} ms")
    assert delays[-1] < 5_000, "time-only exits must fire within seconds of their instant"

    # 3. the change log is consistent and implies exactly the membership Redis holds
    implied = members_from_log([ch for _, ch in logged])
    assert implied == members
    assert worker.stop() == 0, worker.log_tail()
