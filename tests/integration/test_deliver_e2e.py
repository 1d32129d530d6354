"""`segstream deliver` end to end: the real process on the real broker, POSTing to a real
aiohttp receiver started by the test; healthy, down for a while, answering 500, answering
slowly, refusing, and a crash of the deliver process. Each asserts nothing lost, nothing
reordered per customer, repeats only as exact copies (same version), and the group's offsets
committed to the end of the topic.

The outage lasts SEGSTREAM_DELIVER_OUTAGE_S seconds (default 10, the issue's scenario is 30:
``SEGSTREAM_DELIVER_OUTAGE_S=30 pytest tests/integration/test_deliver_e2e.py``).
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from schemas.changes import SegmentChange

from .deliver_support import (
    SECRET,
    DeliverProcess,
    Receiver,
    as_dict,
    check_delivery,
    create_topic,
    destinations_yaml,
    make_changes,
    produce,
    unique_count,
    wait_for,
)
from .support import free_port, read_all

OUTAGE_S = float(os.environ.get("SEGSTREAM_DELIVER_OUTAGE_S", "10"))
PARTITIONS = 4


class Setup:
    """A changes topic, a receiver, a destinations file and the deliver process."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.tmp = tmp
        self.topic = f"{prefix}segstream-changes"
        self.dlq = f"{prefix}segstream-deliver-deadletters"
        self.group = f"{prefix}segstream-deliver"
        self.receiver = Receiver(free_port())
        self.metrics_port = free_port()
        self.proc: DeliverProcess | None = None
        create_topic(bootstrap, self.topic, PARTITIONS)
        self.receiver.start()

    def destination(self, name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "url": self.receiver.url(f"/{name}"), "secret_env": "IT_SECRET",
                "batch": {"max_changes": 25, "max_wait": "100ms"}, "timeout": "2s",
                "max_tries": 100, "backoff": {"base": "100ms", "max": "1s"}, **extra}

    def start(self, *destinations: dict[str, Any]) -> DeliverProcess:
        path = self.tmp / "destinations.yaml"
        if destinations:
            path.write_text(destinations_yaml(destinations))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
        env.update(SEGSTREAM_KAFKA_BOOTSTRAP=self.bootstrap, SEGSTREAM_TOPIC_PREFIX=self.prefix,
                   SEGSTREAM_AUTO_OFFSET_RESET="earliest", SEGSTREAM_LOG_LEVEL="info",
                   SEGSTREAM_DELIVER_PORT=str(self.metrics_port), IT_SECRET=SECRET,
                   SEGSTREAM_SESSION_TIMEOUT_MS="6000")  # a killed process: 6 s
        if self.proc is None:
            self.proc = DeliverProcess(env, path, self.tmp / "deliver")
        self.proc.start()
        return self.proc

    def produce(self, changes: list[SegmentChange]) -> None:
        produce(self.bootstrap, self.topic, changes)

    def wait_applied(self, path: str, changes: list[SegmentChange], timeout_s: float) -> None:
        want = {(c.customer_id, c.segment, c.version) for c in changes}
        wait_for(lambda: want <= {(c["customer_id"], c["segment"], c["version"])
                                  for c in self.receiver.applied[path]},
                 timeout_s, f"{len(want)} changes at {path}", self.proc)

    def committed_to_end(self) -> bool:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                 enable_auto_commit=False)
        try:
            tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            end = consumer.end_offsets(tps)
            return all(consumer.committed(tp) == end[tp] for tp in tps)
        finally:
            consumer.close()

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.receiver.stop()


@pytest.fixture
def setup(kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path) -> Iterator[Setup]:
    s = Setup(kafka_bootstrap, unique_topic_prefix, tmp_path)
    try:
        yield s
    finally:
        s.close()


def finish(s: Setup, path: str, expected: list[SegmentChange]) -> int:
    """Wait for everything, check it, stop the process cleanly; the number of repeats."""
    s.wait_applied(path, expected, 120)
    wait_for(s.committed_to_end, 30, "offsets committed to the end", s.proc)
    repeats = check_delivery(expected, s.receiver.applied[path])
    assert s.receiver.bad_signatures == 0
    assert s.metric("segstream_deliver_changes_dead_lettered_total") == 0
    wait_for(lambda: s.metric("segstream_deliver_consumer_lag") == 0, 10, "lag 0", s.proc)
    assert s.metric("segstream_deliver_pending_changes") == 0
    assert s.proc is not None
    assert s.proc.stop() == 0, s.proc.log_text()
    return repeats


def test_healthy_receiver_gets_everything_in_order_with_filters(setup: Setup) -> None:
    s = setup
    s.start(s.destination("all"), s.destination("only_a", segments=["seg_a"]))
    changes = make_changes(customers=40, per_customer=10)
    s.produce(changes)
    only_a = [c for c in changes if c.segment == "seg_a"]
    s.wait_applied("/only_a", only_a, 60)
    assert check_delivery(only_a, s.receiver.applied["/only_a"]) == 0
    assert {c["segment"] for c in s.receiver.applied["/only_a"]} == {"seg_a"}
    assert s.metric("segstream_deliver_changes_delivered_total", destination="all") \
        >= len(changes)
    assert s.metric("segstream_deliver_latency_seconds_count", destination="only_a") \
        == len(only_a)
    assert finish(s, "/all", changes) == 0


def waves(s: Setup, path: str, during: Any, after: Any) -> list[SegmentChange]:
    """Wave 1 delivered while healthy; wave 2 published during the trouble (``during()``
    starts it, returns when it is over, ``after()`` ends it); wave 3 after."""
    # one set of customers, versions continuing across the waves
    changes = make_changes(30, 12, prefix="c")
    w1, w2, w3 = changes[:120], changes[120:240], changes[240:]
    s.produce(w1)
    s.wait_applied(path, w1, 60)
    during()
    s.produce(w2)
    time.sleep(OUTAGE_S)
    after()
    s.produce(w3)
    return changes


def test_receiver_down_for_a_while(setup: Setup) -> None:
    s = setup
    s.start(s.destination("hook"))
    changes = waves(s, "/hook", s.receiver.down, s.receiver.up)
    assert s.metric("segstream_deliver_retries_total", destination="hook",
                    cause="connection") > 0
    assert finish(s, "/hook", changes) == 0  # refused connections: nothing applied twice


def test_receiver_answers_500_for_a_while(setup: Setup) -> None:
    s = setup
    s.start(s.destination("hook"))
    answer = s.receiver.paths["/hook"]

    def fail() -> None:
        answer.status = 500

    def heal() -> None:
        answer.status = 200

    changes = waves(s, "/hook", fail, heal)
    assert 500 in s.receiver.requests["/hook"]
    retried = s.metric("segstream_deliver_retries_total", destination="hook", cause="5xx")
    assert retried > 0
    assert finish(s, "/hook", changes) == 0


def test_slow_receiver_past_the_timeout(setup: Setup) -> None:
    """Answers after the client's timeout for a while (the receiver still applies them:
    repeats), then slowly within it."""
    s = setup
    s.start(s.destination("hook", timeout="1s"))
    answer = s.receiver.paths["/hook"]

    def slow() -> None:
        answer.delay_s = 1.5

    def slower_than_usual() -> None:
        answer.delay_s = 0.2

    changes = waves(s, "/hook", slow, slower_than_usual)
    assert s.metric("segstream_deliver_retries_total", destination="hook", cause="timeout") > 0
    repeats = finish(s, "/hook", changes)
    assert repeats > 0  # the timed-out requests were applied too: same versions, dropped


def test_refused_and_exhausted_batches_go_to_the_dead_letter_topic(setup: Setup) -> None:
    s = setup
    s.receiver.paths["/refuse"].status = 400
    s.receiver.paths["/fail"].status = 503
    s.start(s.destination("good"), s.destination("refuse", segments=["seg_a"]),
            s.destination("fail", max_tries=2, backoff={"base": "10ms", "max": "50ms"}))
    changes = make_changes(20, 6)
    s.produce(changes)
    s.wait_applied("/good", changes, 60)
    wait_for(s.committed_to_end, 60, "offsets committed to the end", s.proc)
    letters = [orjson.loads(v) for _, _, v in read_all(s.bootstrap, s.dlq)]
    by_dest: dict[str, list[dict[str, Any]]] = {"refuse": [], "fail": []}
    for letter in letters:
        by_dest[letter["destination"]].append(letter)
    assert {le["reason"] for le in by_dest["refuse"]} == {"HTTP 400"}
    assert {le["tries"] for le in by_dest["refuse"]} == {1}
    assert {le["reason"] for le in by_dest["fail"]} == {"gave up after 2 tries: HTTP 503"}
    # in each destination's letters, every change it wanted, once and in order per customer
    seg_a = [c for c in changes if c.segment == "seg_a"]
    assert check_delivery(seg_a, [c for le in by_dest["refuse"] for c in le["changes"]]) == 0
    assert check_delivery(changes, [c for le in by_dest["fail"] for c in le["changes"]]) == 0
    assert s.receiver.requests["/refuse"].count(400) == len(by_dest["refuse"])
    assert s.metric("segstream_deliver_changes_dead_lettered_total", destination="fail") \
        == len(changes)
    assert check_delivery(changes, s.receiver.applied["/good"]) == 0
    assert s.proc is not None and s.proc.stop() == 0


def test_crash_of_the_deliver_process_loses_nothing(setup: Setup) -> None:
    s = setup
    s.receiver.paths["/hook"].delay_s = 0.05  # ~20 batches/s: the kill lands mid-stream
    dest = s.destination("hook")
    proc = s.start(dest)
    changes = make_changes(40, 10)
    s.produce(changes)
    wait_for(lambda: len(s.receiver.applied["/hook"]) >= 100, 60, "a first part", proc)
    proc.kill()
    got_before = len(s.receiver.applied["/hook"])
    assert got_before < len(changes)
    s.start()
    finish(s, "/hook", changes)
    assert unique_count(s.receiver.applied["/hook"]) == len(changes)
    assert as_dict(changes[0]) in s.receiver.applied["/hook"]
