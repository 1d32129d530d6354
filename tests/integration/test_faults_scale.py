"""The fault-injection suite: a long generated stream, one fault per scenario, on the real
broker and a real Redis, each checked against the offline replay of the same events.

Scenarios (each on its own topics; the broker and Redis scenarios on servers of their own):

- ``sigkill``: the worker is SIGKILLed at random points of the stream, once again while it is
  still recovering from a kill, and restarted each time;
- ``broker_restart``: the Kafka broker is stopped mid-stream and started again (same data);
- ``redis_down``: Redis (AOF on, as in production) is stopped mid-stream for
  ``SEGSTREAM_FAULT_REDIS_DOWN_S`` seconds and started again;
- ``rebalance_kill``: a second worker joins mid-stream and the first one is SIGKILLed while the
  group is rebalancing; the survivor takes every partition over, then the first one returns.

After each: Redis membership == the offline replay; the change log has no conflicting
(customer, segment, version), no version gap and ends where Redis ends
(:func:`pipeline.check_end_state`). The figures of each scenario (events, changes, lost,
conflicting, duplicates seen downstream, recovery times, peak worker RSS) are printed in the
session summary and, with ``SEGSTREAM_FAULT_REPORT=path``, appended to that file as JSON lines.

Size: ``SEGSTREAM_FAULT_EVENTS`` events per scenario, fed at up to ``SEGSTREAM_FAULT_RATE``
events/s, ``SEGSTREAM_FAULT_KILLS`` random kills, Redis down ``SEGSTREAM_FAULT_REDIS_DOWN_S``.
``make test`` runs the short variant of ``broker_restart`` and ``redis_down`` (the defaults:
12,000 events, Redis down 10 s; the kills and rebalances of test_worker_faults.py stand for the
other two there); ``make test-faults`` runs all four on 200,000 events (4 kills, Redis down
30 s: ``SEGSTREAM_FAULT_ALL=1``).
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.errors import KafkaError

from .pipeline import (
    FAULT_FIGURES,
    Event,
    Feeder,
    Pipeline,
    PrivateServer,
    check_end_state,
    flapping_events,
    leased_server,
    make_pipeline,
    metric,
    peak_rss_mb,
    slow_segments,
    topic_size,
    wait_caught_up,
    wait_for,
)
from .support import Worker, free_port

N_EVENTS = int(os.environ.get("SEGSTREAM_FAULT_EVENTS", "12000"))
MAX_RATE = float(os.environ.get("SEGSTREAM_FAULT_RATE", "4000"))  # events/s fed at most
MIN_FEED_S = float(os.environ.get("SEGSTREAM_FAULT_MIN_FEED_S", "20"))  # the faults need time
REDIS_DOWN_S = float(os.environ.get("SEGSTREAM_FAULT_REDIS_DOWN_S", "10"))
KILLS = int(os.environ.get("SEGSTREAM_FAULT_KILLS", "2"))  # plus one during a recovery
# make test runs only the scenarios test_worker_faults.py does not cover in its own way (its
# kills and rebalances are the short variant of these); make test-faults runs all
ALL = os.environ.get("SEGSTREAM_FAULT_ALL") == "1"
in_full_suite = pytest.mark.skipif(
    not ALL, reason="make test-faults (SEGSTREAM_FAULT_ALL=1): make test runs the kill and "
    "rebalance scenarios of test_worker_faults.py instead")
REPORT = os.environ.get("SEGSTREAM_FAULT_REPORT")
PER_CUSTOMER = 8
CHUNK = 100  # events per raw record
WAIT_S = max(240.0, N_EVENTS / 500)  # the slowest phase may process 500 events/s

pytestmark = pytest.mark.faults


@dataclass
class Run:
    """One scenario: its pipeline, stream, feeder and the figures it collects."""

    name: str
    p: Pipeline
    events: list[Event]
    segments: Path
    feeder: Feeder
    started: float = field(default_factory=time.monotonic)
    recoveries: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        line = f"[{self.name} {time.monotonic() - self.started:5.0f} s] {text}"
        self.notes.append(line)
        print(line, flush=True)

    def changes(self) -> int:
        """Records in the changes topic; -1 while the broker does not answer."""
        try:
            return topic_size(self.p.bootstrap, self.p.names["changes"])
        except KafkaError:
            return -1

    def sample_rss(self, *workers: Worker) -> None:
        self.rss.extend(r for w in workers if (r := peak_rss_mb(w)) is not None)

    def recovered(self, what: str, workers: list[Worker]) -> float:
        """Seconds until the changes topic grows again (the pipeline makes progress)."""
        mark = max(self.changes(), 0)  # -1 (broker away): any record counts
        took = wait_for(what, lambda: self.changes() > mark, workers, timeout_s=WAIT_S)
        self.recoveries.append(took)
        return took

    def at_share(self, share: float, workers: list[Worker]) -> None:
        """Wait until ``share`` of the stream is fed and the changes topic moved meanwhile."""
        mark = self.changes()
        wait_for(f"{share:.0%} of the stream", lambda: (
            self.feeder.sent >= share * len(self.events) and self.changes() > mark + 20),
            workers, timeout_s=WAIT_S)

    def finish(self, alive: list[Worker], request: pytest.FixtureRequest) -> dict[str, Any]:
        """Feed the rest, wait until caught up, check the end state, record the figures."""
        self.feeder.release()
        self.feeder.finish()
        self.say("all events fed")
        caught = time.monotonic()
        prog = wait_caught_up(self.p, len(self.events), alive, timeout_s=WAIT_S)
        self.say(f"caught up {time.monotonic() - caught:.1f} s after the last event was fed")
        self.sample_rss(*alive)
        report = check_end_state(self.p, self.events, self.segments)
        figures = {
            "scenario": self.name, "events": len(self.events),
            "customers": len({ev["customer_id"] for ev in self.events}),
            "ingest_duplicates": prog.bundled_events - len(self.events),
            "changes": report.changes, "lost": report.lost,
            "conflicting": report.conflicting, "duplicates_downstream": report.duplicates,
            "recovery_s": [round(r, 1) for r in self.recoveries],
            "peak_rss_mib": round(max(self.rss, default=0.0)),
            "wall_s": round(time.monotonic() - self.started, 1), "members": report.sizes(),
        }
        self.say(f"figures {figures}")
        request.config.stash.setdefault(FAULT_FIGURES, []).append(figures)
        if REPORT:
            with open(REPORT, "ab") as out:
                out.write(orjson.dumps({**figures, "notes": self.notes}) + b"\n")
        for w in alive:
            assert w.stop() == 0, w.log_tail()
        return figures


def start_run(name: str, bootstrap: str, redis_url: str, prefix: str, tmp: Path,
              seed: int, hold_at: float | None = None,
              min_feed_s: float = MIN_FEED_S) -> Run:
    """Topics, the stream (not fed yet) and a paced feeder; ``hold_at`` (share of the stream)
    makes the feeder wait there until ``run.feeder.release()``."""
    segments = slow_segments(tmp)
    p = make_pipeline(bootstrap, redis_url, prefix, tmp, segments,
                      SEGSTREAM_BUNDLE_MAX_EVENTS="100")
    events = flapping_events(random.Random(seed), int(time.time() * 1000),
                             customers=max(N_EVENTS // PER_CUSTOMER, 50),
                             per_customer=PER_CUSTOMER)
    rate = min(MAX_RATE, len(events) / min_feed_s)
    feeder = Feeder(p, events, pace_s=CHUNK / rate, chunk=CHUNK, wait_s=WAIT_S,
                    hold_at=None if hold_at is None else int(hold_at * len(events)))
    run = Run(name, p, events, segments, feeder)
    run.say(f"{len(events)} events of {len(events) // PER_CUSTOMER} customers, fed at "
            f"{rate:.0f}/s")
    return run


@pytest.fixture
def aof_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PrivateServer]]:
    """A Redis of this test only, persisting with AOF (as `make infra-up` and production)."""
    port = free_port()
    env = {"SEGSTREAM_REDIS_PORT": str(port), "SEGSTREAM_REDIS_FRESH": "1",
           "SEGSTREAM_REDIS_PERSIST": "aof", "SEGSTREAM_REDIS_PASSWORD": "",
           "SEGSTREAM_REDIS_DATA": str(tmp_path_factory.mktemp("redis-aof"))}
    with leased_server("redis.sh", env, "a private Redis (AOF)") as server:
        yield f"redis://127.0.0.1:{port}/0", server


@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PrivateServer]]:
    """A Kafka broker of this test only (it gets restarted)."""
    port, controller = free_port(), free_port()
    env = {"SEGSTREAM_KAFKA_PORT": str(port), "SEGSTREAM_KAFKA_CONTROLLER_PORT": str(controller),
           "SEGSTREAM_KAFKA_FRESH": "1",
           "SEGSTREAM_KAFKA_DATA": str(tmp_path_factory.mktemp("kafka-restart"))}
    with leased_server("kafka.sh", env, "a private Kafka broker") as server:
        yield f"127.0.0.1:{port}", server


@in_full_suite
def test_sigkill_at_random_points(kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str,
                                  tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # the stream is fed for longer than the kills and restarts take: each kill lands while
    # events are still arriving (and a backlog is being worked off)
    run = start_run("sigkill", kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, 21,
                    min_feed_s=max(MIN_FEED_S, 20.0 * KILLS + 15.0))
    rng = random.Random(23)
    worker = run.p.worker()
    try:
        worker.start()
        run.feeder.start()
        run.at_share(0.0, [worker])
        for k in range(KILLS):
            time.sleep(rng.uniform(0.5, 5.0))  # a random point of the processing
            assert run.feeder.is_alive(), "the kills must land mid-stream: feed for longer"
            run.sample_rss(worker)
            worker.kill()
            run.say(f"kill {k} at {run.feeder.sent} events fed, {run.changes()} changes logged")
            worker.start()
            if k == KILLS // 2:  # once more while it recovers (joining, claiming, loading)
                time.sleep(rng.uniform(1.0, 4.0))
                worker.kill()
                run.say("kill during the recovery")
                worker.start()
            run.say(f"next change {run.recovered('changes after the restart', [worker]):.1f} s "
                    "after the restart")
        figures = run.finish([worker], request)
        assert figures["lost"] == 0 and figures["conflicting"] == 0
    finally:
        run.feeder.release()
        run.p.stop_all()


def test_broker_restart_mid_stream(private_kafka: tuple[str, PrivateServer], redis_url: str,
                                   unique_topic_prefix: str, tmp_path: Path,
                                   request: pytest.FixtureRequest) -> None:
    bootstrap, broker = private_kafka
    # the feeder (the websites) holds its events while the broker is down: the worker still
    # has a backlog of half the stream when the broker goes away
    run = start_run("broker_restart", bootstrap, redis_url, unique_topic_prefix, tmp_path, 31,
                    hold_at=0.6)
    worker = run.p.worker()
    try:
        worker.start()
        run.feeder.start()
        run.at_share(0.6, [worker])
        run.sample_rss(worker)
        before = run.changes()
        down = time.monotonic()
        broker.stop()
        run.say(f"broker stopped ({time.monotonic() - down:.1f} s) at {before} changes")
        time.sleep(5)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        broker.start()
        run.say(f"broker back after {time.monotonic() - down:.1f} s")
        run.feeder.release()
        run.say(f"next change {run.recovered('changes after the broker restart', [worker]):.1f}"
                " s after the broker was back")
        figures = run.finish([worker], request)
        assert figures["lost"] == 0 and figures["conflicting"] == 0
    finally:
        run.feeder.release()
        run.p.stop_all()


def test_redis_down_mid_stream(aof_redis: tuple[str, PrivateServer], kafka_bootstrap: str,
                               unique_topic_prefix: str, tmp_path: Path,
                               request: pytest.FixtureRequest) -> None:
    url, redis = aof_redis
    run = start_run("redis_down", kafka_bootstrap, url, unique_topic_prefix, tmp_path, 41)
    worker = run.p.worker()
    try:
        worker.start()
        run.feeder.start()
        run.at_share(0.3, [worker])
        run.sample_rss(worker)
        redis.stop()
        down = time.monotonic()
        run.say(f"Redis stopped at {run.feeder.sent} events fed, {run.changes()} changes")
        while time.monotonic() - down < REDIS_DOWN_S:
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            time.sleep(1)
        stalled = run.changes()
        redis.start()
        run.say(f"Redis back after {time.monotonic() - down:.1f} s; {stalled} changes")
        run.say(f"next change {run.recovered('changes after Redis came back', [worker]):.1f} s "
                "after Redis was back")
        figures = run.finish([worker], request)
        log = worker.log_path.with_suffix(".1.log").read_text(errors="replace")
        run.say(f"Redis retries logged: {log.count('retrying in')}")
        assert figures["lost"] == 0 and figures["conflicting"] == 0
    finally:
        run.feeder.release()
        run.p.stop_all()


JOINING = re.compile(r"\(Re-\)joining group|Joined group", re.IGNORECASE)


@in_full_suite
def test_kill_a_worker_during_a_rebalance(kafka_bootstrap: str, redis_url: str,
                                          unique_topic_prefix: str, tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    run = start_run("rebalance_kill", kafka_bootstrap, redis_url, unique_topic_prefix,
                    tmp_path, 51, min_feed_s=max(MIN_FEED_S, 40.0))
    a, b = run.p.worker("a"), run.p.worker("b")
    rng = random.Random(53)
    try:
        a.start()
        run.feeder.start()
        run.at_share(0.25, [a])
        b.start()
        b_log = b.log_path.with_suffix(".1.log")
        wait_for("B joining the group", lambda: b_log.exists() and bool(
            JOINING.search(b_log.read_text(errors="replace"))), [a, b], interval_s=0.05)
        time.sleep(rng.uniform(0, 0.5))  # the group is rebalancing: A must rejoin too
        run.sample_rss(a)
        a.kill()
        run.say(f"A killed while B joins, at {run.feeder.sent} events fed")
        run.say(f"B alone: next change {run.recovered('B taking over', [b]):.1f} s later")
        run.at_share(0.6, [b])
        a.start()
        took = wait_for("A processing again", lambda: (
            metric(a, "segstream_segment_events_total") or 0) > 0, [a, b], timeout_s=WAIT_S)
        run.recoveries.append(took)
        run.say(f"A back: processing {took:.1f} s after its start")
        figures = run.finish([a, b], request)
        assert figures["lost"] == 0 and figures["conflicting"] == 0
    finally:
        run.feeder.release()
        run.p.stop_all()
