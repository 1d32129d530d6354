"""Ingest on the real broker: the real `segstream worker` subprocess, raw records in, bundles and
dead letters out.

Checked: every valid event lands in exactly one bundle (at least one after a crash), on the
partition its routing id hashes to, in produce order per routing id; every invalid event is a
dead letter with the right code, original bytes and origin; no raw offset is committed before
its output is acknowledged (SIGKILL before any commit loses nothing; a refused bundle crashes the
worker without committing).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from schemas.bundle import decode_bundle
from schemas.deadletter import DeadLetter, decode_dead_letter
from schemas.partitioner import partition_for
from schemas.validation import partition_key

from .support import Worker, create_topic, free_port, read_all

REPO = Path(__file__).resolve().parents[2]
RAW_PARTITIONS = 3
BUNDLE_PARTITIONS = 4
MAX_EVENT_BYTES = 4096
MAX_EVENTS_PER_RECORD = 60
WAIT_S = 180  # generous: a loaded 2-core box with a JVM broker


# --- the worker subprocess ----------------------------------------------------------------------

@dataclass
class Topics:
    raw: str
    bundles: str
    deadletters: str
    group: str


@pytest.fixture
def topics(kafka_bootstrap: str, unique_topic_prefix: str) -> Topics:
    names = Topics(f"{unique_topic_prefix}segstream-events",
                   f"{unique_topic_prefix}segstream-bundles",
                   f"{unique_topic_prefix}segstream-deadletters",
                   f"{unique_topic_prefix}segstream")
    assert create_topic(kafka_bootstrap, unique_topic_prefix, "raw", RAW_PARTITIONS) == names.raw
    return names


@pytest.fixture
def worker(kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path) -> Iterator[Worker]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env.update({
        "SEGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SEGSTREAM_TOPIC_PREFIX": unique_topic_prefix,
        "SEGSTREAM_RAW_PARTITIONS": str(RAW_PARTITIONS),
        "SEGSTREAM_BUNDLE_PARTITIONS": str(BUNDLE_PARTITIONS),
        "SEGSTREAM_BUNDLE_MAX_EVENTS": "16",  # many bundles per partition: order across bundles
        "SEGSTREAM_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
        "SEGSTREAM_MAX_EVENTS_PER_RECORD": str(MAX_EVENTS_PER_RECORD),
        "SEGSTREAM_WEB_PORT": str(free_port()),
        "SEGSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SEGSTREAM_LOG_LEVEL": "info",
        "SEGSTREAM_AGENTS": "ingest",  # ingest alone: no Redis needed here
        # a SIGKILLed worker's partitions move to its successor after this long
        "SEGSTREAM_SESSION_TIMEOUT_MS": "10000",
    })
    w = Worker(env, tmp_path / "worker")
    try:
        yield w
    finally:
        w.stop()


# --- input: a deterministic mix of valid and invalid events ------------------------------------

@dataclass
class Dataset:
    """What was produced: valid events per routing id in order, expected dead letters."""

    valid_order: dict[str, list[str]] = field(default_factory=dict)  # routing id -> event ids
    valid_ids: set[str] = field(default_factory=set)
    # (code, raw, partition, offset, index) of every expected dead letter
    dead: Counter[tuple[str, bytes, int, int, int | None]] = field(default_factory=Counter)
    origin: dict[str, tuple[int, int]] = field(default_factory=dict)  # event id -> raw (p, o)


def _valid(rng: random.Random, n: int, cid: str | None, aid: str | None,
           now: int) -> dict[str, Any]:
    kind = rng.choice(["page_view", "cart_add", "email_open", "identify", "checkout"])
    props: dict[str, Any] = {
        "page_view": {"url": f"/p/{n}", "category": rng.choice(["shoes", "hats"])},
        "cart_add": {"product_id": f"sku-{n % 17}", "price": 9.5, "quantity": 2},
        "email_open": {"campaign_id": "spring"},
        "identify": {"traits": {"country": "FR", "email": f"u{n}@example.com"}},
        "checkout": {"cart_value": 12.0},
    }[kind]
    ts: int | str = now - rng.randrange(3_600_000)
    if n % 5 == 0:
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts) / 1000))
    return {"event_id": f"ev-{n}", "type": kind, "customer_id": cid, "anonymous_id": aid,
            "timestamp": ts, "source": "test", "properties": props}


def _invalid_events(now: int) -> list[tuple[str, Any]]:
    """One array element per element-level error code (code, element)."""
    base = {"event_id": "bad", "type": "page_view", "customer_id": "c-bad", "timestamp": now,
            "properties": {"url": "/"}}
    return [
        ("not_object", 42),
        ("unknown_type", {**base, "type": "teleport"}),
        ("missing_id", {k: v for k, v in base.items() if k != "event_id"}),
        ("bad_id", {**base, "event_id": ""}),
        ("bad_timestamp", {**base, "timestamp": "yesterday"}),
        ("absurd_timestamp", {**base, "timestamp": 1000}),
        ("bad_properties", {**base, "type": "cart_add", "properties": {"price": 1.0}}),
        ("missing_routing_id", {**base, "customer_id": None}),
        ("oversized", {**base, "properties": {"url": "/", "blob": "x" * (MAX_EVENT_BYTES + 10)}}),
        ("bad_envelope", {**base, "schema_version": 2}),
    ]


def produce_dataset(bootstrap: str, topic: str, seed: int, n_valid: int) -> Dataset:
    """Singles and arrays on 3 raw partitions; a routing id always goes to the same partition."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    ids = [(f"cust-{i}", None) for i in range(24)] + [(None, f"anon-{i}") for i in range(8)]
    ids += [(f"cust-{i}", f"anon-x{i}") for i in range(24, 28)]  # both set: customer id routes
    by_partition = {p: [x for i, x in enumerate(ids) if i % RAW_PARTITIONS == p]
                    for p in range(RAW_PARTITIONS)}
    invalid = _invalid_events(now)
    data = Dataset()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    sent: list[tuple[Any, list[tuple[str, bytes, int | None]], list[str]]] = []
    n = 0
    while n < n_valid:
        p = rng.randrange(RAW_PARTITIONS)
        size = rng.choice([1, 1, 1, 5, 20, 40])
        elements: list[Any] = []
        codes: list[str | None] = []
        for _ in range(size):
            if rng.random() < 0.08:
                code, bad = invalid[rng.randrange(len(invalid))]
                elements.append(bad)
                codes.append(code)
            else:
                cid, aid = rng.choice(by_partition[p])
                ev = _valid(rng, n, cid, aid, now)
                n += 1
                elements.append(ev)
                codes.append(None)
                rid = cid or aid
                assert rid is not None
                data.valid_order.setdefault(rid, []).append(ev["event_id"])
                data.valid_ids.add(ev["event_id"])
        single = size == 1 and rng.random() < 0.7
        value = orjson.dumps(elements[0] if single else elements)
        expected = [(code, orjson.dumps(el) if not single else value, None if single else i)
                    for i, (code, el) in enumerate(zip(codes, elements, strict=True)) if code]
        valid_ids = [el["event_id"] for el, code in zip(elements, codes, strict=True)
                     if code is None]
        sent.append((producer.send(topic, value=value, partition=p), expected, valid_ids))
    # whole-record rejections
    whole = [
        ("unparsable", b'{"event_id": "x", "type": '),
        ("unparsable", b"\xff\xfe not utf-8"),
        ("not_object", b'"just a string"'),
        ("too_many_events", orjson.dumps([_valid(rng, 10**6 + i, "cust-0", None, now)
                                          for i in range(MAX_EVENTS_PER_RECORD + 1)])),
    ]
    for code, value in whole:
        sent.append((producer.send(topic, value=value, partition=0), [(code, value, None)], []))
    producer.flush(timeout=60)
    for future, expected, valid_ids in sent:
        meta = future.get(timeout=60)
        for code, raw, index in expected:
            data.dead[(code, raw, meta.partition, meta.offset, index)] += 1
        for event_id in valid_ids:
            data.origin[event_id] = (meta.partition, meta.offset)
    producer.close()
    return data


# --- output ----------------------------------------------------------------------------------

@dataclass
class Output:
    bundles: list[tuple[int, int, list[dict[str, Any]]]]  # (partition, offset, events)
    dead: list[DeadLetter]

    @property
    def events(self) -> int:
        return sum(len(evs) for _, _, evs in self.bundles)


def collect(bootstrap: str, topics: Topics) -> Output:
    bundles = [(p, o, decode_bundle(v)) for p, o, v in read_all(bootstrap, topics.bundles)]
    dead = [decode_dead_letter(v) for _, _, v in read_all(bootstrap, topics.deadletters)]
    return Output(bundles, dead)


def wait_for(bootstrap: str, topics: Topics, worker: Worker, n_events: int, n_dead: int) -> Output:
    """Poll the output topics until they hold at least that much (or fail with the log)."""
    deadline = time.monotonic() + WAIT_S
    out = Output([], [])
    while time.monotonic() < deadline:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited ({worker.proc.returncode}):\n{worker.log_tail()}")
        out = collect(bootstrap, topics)
        if out.events >= n_events and len(out.dead) >= n_dead:
            return out
        time.sleep(1.0)
    pytest.fail(f"timeout: {out.events}/{n_events} events, {len(out.dead)}/{n_dead} dead "
                f"letters\n{worker.log_tail()}")


def committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def raw_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(RAW_PARTITIONS)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def check_bundles(out: Output, data: Dataset, *, exactly_once: bool) -> Counter[str]:
    """Placement, order and completeness of the bundled events; returns the id counts."""
    seen: Counter[str] = Counter()
    per_rid: dict[str, list[str]] = {}
    for partition, _offset, events in out.bundles:  # sorted by (partition, offset)
        assert events, "empty bundle"
        for ev in events:
            rid = partition_key(ev)  # the routing id; an alias's anonymous id
            assert partition_for(rid, BUNDLE_PARTITIONS) == partition, (rid, partition)
            assert isinstance(ev["timestamp"], int)
            seen[ev["event_id"]] += 1
            per_rid.setdefault(rid, []).append(ev["event_id"])
    assert set(seen) == data.valid_ids, "bundled events differ from the valid events produced"
    if exactly_once:
        assert max(seen.values()) == 1
    for rid, expected in data.valid_order.items():
        got = per_rid[rid]
        if exactly_once:
            assert got == expected, f"order of {rid}"
        else:  # a re-read repeats a suffix; the first occurrences keep the produce order
            assert list(dict.fromkeys(got)) == expected, f"order of {rid}"
    return seen


def dead_counter(out: Output, topic: str) -> Counter[tuple[str, bytes, int, int, int | None]]:
    for d in out.dead:
        assert d.source_topic == topic
        assert d.message
    return Counter((d.code, d.raw, d.partition, d.offset, d.index) for d in out.dead)


# --- tests -----------------------------------------------------------------------------------

def test_ingest_bundles_valid_and_dead_letters_invalid(
        kafka_bootstrap: str, topics: Topics, worker: Worker) -> None:
    data = produce_dataset(kafka_bootstrap, topics.raw, seed=7, n_valid=3000)
    codes = {code for code, *_ in data.dead}
    assert len(codes) == 12, codes  # every validation error code is exercised
    worker.start()
    out = wait_for(kafka_bootstrap, topics, worker, len(data.valid_ids), sum(data.dead.values()))
    time.sleep(3)  # anything extra (a duplicate) would show up now
    out = collect(kafka_bootstrap, topics)

    check_bundles(out, data, exactly_once=True)
    assert dead_counter(out, topics.raw) == data.dead
    assert out.events + len(out.dead) == len(data.valid_ids) + sum(data.dead.values())
    assert len(out.bundles) >= len(data.valid_ids) // 16  # the count limit was applied
    assert max(len(evs) for _, _, evs in out.bundles) <= 16

    # the offsets get committed once the output is acknowledged, up to the end of the raw topic
    end = raw_end_offsets(kafka_bootstrap, topics.raw)
    deadline = time.monotonic() + 60
    while committed(kafka_bootstrap, topics.group) != end and time.monotonic() < deadline:
        time.sleep(1)
    assert committed(kafka_bootstrap, topics.group) == end
    assert worker.stop() == 0, worker.log_tail()


def test_sigkill_before_commit_loses_nothing(
        kafka_bootstrap: str, topics: Topics, worker: Worker) -> None:
    data = produce_dataset(kafka_bootstrap, topics.raw, seed=11, n_valid=2000)
    n_dead = sum(data.dead.values())
    # No periodic commit: the kill lands after the bundles are out and before any commit.
    worker.start(SEGSTREAM_COMMIT_INTERVAL_MS="3600000")
    wait_for(kafka_bootstrap, topics, worker, len(data.valid_ids), n_dead)
    worker.kill()
    assert committed(kafka_bootstrap, topics.group) == {}, "a commit happened before the kill"

    worker.start()  # normal commit interval: re-reads everything from the start
    out = wait_for(kafka_bootstrap, topics, worker, 2 * len(data.valid_ids), 2 * n_dead)
    seen = check_bundles(out, data, exactly_once=False)
    duplicates = sum(seen.values()) - len(seen)
    print(f"after SIGKILL + restart: {len(seen)} distinct valid events, {duplicates} duplicates, "
          f"{len(out.dead)} dead letters for {n_dead} rejected")
    assert duplicates == len(seen)  # nothing was committed, so everything was re-read once
    assert set(dead_counter(out, topics.raw)) == set(data.dead)
    assert worker.stop() == 0, worker.log_tail()


def test_sigterm_mid_stream_commits_only_what_is_out(
        kafka_bootstrap: str, topics: Topics, worker: Worker) -> None:
    data = produce_dataset(kafka_bootstrap, topics.raw, seed=23, n_valid=20_000)
    # small batches and frequent commits: the stop lands between many batches in flight
    worker.start(SEGSTREAM_INGEST_BATCH_RECORDS="10", SEGSTREAM_COMMIT_INTERVAL_MS="100")
    deadline = time.monotonic() + WAIT_S
    while collect(kafka_bootstrap, topics).events == 0:
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)
    time.sleep(0.5)
    assert worker.stop() == 0, worker.log_tail()  # SIGTERM: a clean stop mid-stream

    before = collect(kafka_bootstrap, topics)
    done = committed(kafka_bootstrap, topics.group)
    out_ids = {ev["event_id"] for _, _, evs in before.bundles for ev in evs}
    behind = [eid for eid, (p, o) in data.origin.items() if o < done.get(p, 0)
              and eid not in out_ids]
    assert behind == [], f"committed past {len(behind)} events that are in no bundle"
    print(f"SIGTERM after {len(out_ids)}/{len(data.valid_ids)} events; committed {done}")

    worker.start()
    deadline = time.monotonic() + WAIT_S
    while True:
        out = collect(kafka_bootstrap, topics)
        ids = {ev["event_id"] for _, _, evs in out.bundles for ev in evs}
        if ids >= data.valid_ids and {d.offset for d in out.dead} >= {k[3] for k in data.dead}:
            break
        assert time.monotonic() < deadline, f"{len(ids)}/{len(data.valid_ids)}\n" + \
            worker.log_tail()
        time.sleep(1.0)
    seen = check_bundles(out, data, exactly_once=False)
    print(f"after restart: {sum(seen.values()) - len(seen)} duplicates")
    assert set(dead_counter(out, topics.raw)) == set(data.dead)
    assert worker.stop() == 0, worker.log_tail()


def test_refused_bundle_crashes_worker_without_commit(
        kafka_bootstrap: str, topics: Topics, worker: Worker) -> None:
    # The broker refuses every bundle record (max.message.bytes below one bundle's size).
    prefix = topics.raw.removesuffix("segstream-events")
    assert create_topic(kafka_bootstrap, prefix, "bundles", BUNDLE_PARTITIONS,
                        **{"max.message.bytes": "300"}) == topics.bundles
    produce_dataset(kafka_bootstrap, topics.raw, seed=3, n_valid=300)
    worker.start()
    assert worker.proc is not None
    try:
        status = worker.proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker did not exit after a refused bundle:\n{worker.log_tail()}")
    assert status != 0
    assert "offsets withheld" in worker.log_tail(400)
    assert committed(kafka_bootstrap, topics.group) == {}
