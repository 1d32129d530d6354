"""Overload on the real broker and Redis: a worker (ingest + segmentation) is fed bursts of
events far faster than it processes them (kafka-python produces ~15-25k events/s in arrays of
CHUNK; the worker does ~4-8k events/s on this 2-core box), while it runs.

Checked, and printed with -s:

- **lag is reported**: ``segstream_partition_lag{stage, partition}`` on /metrics grows well
  above zero during each burst and falls back to 0 once the worker caught up; sampled next to
  the true lag (Kafka's end offsets minus the group's committed raw offsets / the offsets
  applied in Redis, read from outside every second) and to Faust's own gauges
  (``faust_topic_partition_end_offset - faust_topic_partition_offset_commited``);
- **memory stays bounded**: the worker's RSS (``/proc/<pid>/status``: VmRSS every 0.5 s, VmHWM)
  through a warm-up burst of N events, a burst of N and a burst of RATIO x N (new customers each,
  20 events per customer, so per-customer state is alike; the state cache is full in every
  burst). The batches, stream buffers and fetch sizes are set small here, so that the backlog
  of burst N already exceeds what they let the worker hold: the peak of the bigger burst may
  exceed burst N's by a few MiB only, and no peak may exceed :func:`memory_budget_mb`;
- **it catches up**: after each burst every raw record is committed and every bundle applied
  (``wait_caught_up``), and the end state equals the offline replay (``check_end_state``).

``SEGSTREAM_OVERLOAD_EVENTS`` sets N (default 40000: about 70 s here) and
``SEGSTREAM_OVERLOAD_RATIO`` the size of the last burst (default 3); e.g.
``SEGSTREAM_OVERLOAD_EVENTS=200000`` for a bigger run (several minutes).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import tracemalloc
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from .pipeline import (
    Pipeline,
    check_end_state,
    flapping_events,
    make_pipeline,
    produce,
    slow_segments,
    wait_caught_up,
)
from .support import Worker

N_EVENTS = int(os.environ.get("SEGSTREAM_OVERLOAD_EVENTS", "40000"))
RATIO = int(os.environ.get("SEGSTREAM_OVERLOAD_RATIO", "3"))  # the last burst: RATIO x N
PER_CUSTOMER = 20  # events per customer: a bigger burst has more customers, alike states
CACHE_MAX = 800  # SEGSTREAM_STATE_CACHE_MAX (the worker's): full in every burst
# Batches, stream buffers (two batches each) and fetches small enough that the backlog of a
# burst of N already exceeds what they let the worker hold: raw records 2 x 20 buffered + 20
# packed + 20 in flight (100 events each), bundle records 2 x 10 buffered + 10 in hand (500
# events each), 2 x 256 KiB fetched per partition
INGEST_BATCH = 20
INGEST_INFLIGHT = 1
SEGMENT_BATCH = 10
FETCH_BYTES = 256 * 1024
CHUNK = 100  # events per raw record: kafka-python then sends 15-25k events/s, beyond the worker
SAMPLE_S = 0.5
LINE = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')


# --- sampling -----------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float  # seconds since the sampler started
    rss_mb: float
    hwm_mb: float
    lag: dict[str, float]  # segstream_partition_lag summed per stage (missing: not reported)
    faust_lag: dict[str, float]  # Faust's end offset - committed offset, per topic


@dataclass
class TrueLag:
    t: float
    raw: int  # raw records beyond the group's committed offsets
    bundles: int  # bundle records beyond the offsets applied in Redis


def proc_status(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB; (0, 0) once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    except OSError:
        return 0.0, 0.0
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def scrape(port: str) -> tuple[dict[str, float], dict[str, float]] | None:
    """(segstream_partition_lag per stage, Faust's lag per topic) from /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    lag: dict[str, float] = defaultdict(float)
    faust: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        m = LINE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), dict(LABEL.findall(m.group(2))), float(m.group(3))
        if name == "segstream_partition_lag":
            lag[labels["stage"]] += value
        elif name in ("faust_topic_partition_end_offset", "faust_topic_partition_offset_commited"):
            faust[labels["topic"], labels["partition"]][name] = value
    faust_lag: dict[str, float] = defaultdict(float)
    for (topic, _), v in faust.items():
        if len(v) == 2:
            faust_lag[topic] += (v["faust_topic_partition_end_offset"]
                                 - v["faust_topic_partition_offset_commited"])
    return dict(lag), dict(faust_lag)


class Sampler(threading.Thread):
    """Samples the worker's memory and /metrics every SAMPLE_S, and the true lag every second
    (from Kafka and Redis, as an outside observer)."""

    def __init__(self, p: Pipeline, worker: Worker) -> None:
        super().__init__(daemon=True)
        self.p, self.worker = p, worker
        self.samples: list[Sample] = []
        self.truth: list[TrueLag] = []
        self.truth_errors: list[str] = []
        self.halt = threading.Event()
        self.started_at = time.monotonic()
        self.error: BaseException | None = None

    def now(self) -> float:
        return time.monotonic() - self.started_at

    def run(self) -> None:
        p = self.p
        consumer = KafkaConsumer(bootstrap_servers=p.bootstrap, enable_auto_commit=False)
        admin = KafkaAdminClient(bootstrap_servers=p.bootstrap)
        r = redis.Redis.from_url(p.redis_url)
        raw_tps = [TopicPartition(p.names["raw"], q) for q in range(p.raw_partitions)]
        bundle_tps = [TopicPartition(p.names["bundles"], q) for q in range(p.bundle_partitions)]
        offset_keys = [f"{p.names['namespace']}{{p{q}}}:offset" for q in range(p.bundle_partitions)]
        last_truth = 0.0
        try:
            while not self.halt.is_set():
                assert self.worker.proc is not None
                rss, hwm = proc_status(self.worker.proc.pid)
                got = scrape(self.worker.env["SEGSTREAM_WEB_PORT"])
                if got is not None:
                    self.samples.append(Sample(self.now(), rss, hwm, *got))
                if self.now() - last_truth >= 1.0:
                    last_truth = self.now()
                    try:
                        self.truth.append(self._true_lag(consumer, admin, r, raw_tps,
                                                         bundle_tps, offset_keys))
                    except (KafkaError, redis.RedisError) as exc:  # e.g. no coordinator yet
                        self.truth_errors.append(repr(exc))
                self.halt.wait(SAMPLE_S)
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            consumer.close()
            admin.close()
            r.close()

    def _true_lag(self, consumer: KafkaConsumer, admin: KafkaAdminClient, r: redis.Redis,
                  raw_tps: list[TopicPartition], bundle_tps: list[TopicPartition],
                  offset_keys: list[str]) -> TrueLag:
        t = self.now()
        group = self.p.names["group"]
        committed = admin.list_group_offsets({group: None}).get(group, {})
        ends = consumer.end_offsets(raw_tps)
        raw = sum(ends[tp] - max(0, getattr(committed.get(tp), "offset", 0)) for tp in raw_tps)
        bundles = 0
        if consumer.partitions_for_topic(self.p.names["bundles"]):
            ends = consumer.end_offsets(bundle_tps)
            applied = r.mget(offset_keys)
            bundles = sum(ends[tp] - (int(a) + 1 if a is not None else 0)
                          for tp, a in zip(bundle_tps, applied, strict=True))
        return TrueLag(t, raw, bundles)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]


# --- the test -------------------------------------------------------------------------------------
@dataclass
class Burst:
    events: int
    raw_bytes: int
    produced_s: float = 0.0  # time to produce the burst
    caught_up_s: float = 0.0  # from the first produced record to wait_caught_up
    zero_lag_s: float = 0.0  # from the first produced record to a reported lag of 0
    peak_lag: dict[str, float] = field(default_factory=dict)
    peak_true: dict[str, int] = field(default_factory=dict)
    peak_faust: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    rss_mb: list[float] = field(default_factory=list)
    hwm_mb: float = 0.0


def burst_events(rng: random.Random, n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` events of ``n / PER_CUSTOMER`` customers of their own (flapping segments): ids
    and customer ids unique to ``tag``."""
    events = flapping_events(rng, int(time.time() * 1000), customers=n // PER_CUSTOMER,
                             per_customer=PER_CUSTOMER)
    for ev in events:
        ev["event_id"] = f"{tag}-{ev['event_id']}"
        ev["customer_id"] = f"{tag}-{ev['customer_id']}"
    return events


def wait_lag_zero(sampler: Sampler, worker: Worker, after: float, timeout_s: float) -> float:
    """Wait for a sample after ``after`` with a reported lag of 0 on both stages; its time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for s in sampler.between(after, float("inf")):
            if set(s.lag) >= {"ingest", "segmentation"} and not any(s.lag.values()):
                return s.t
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        time.sleep(SAMPLE_S)
    last = sampler.samples[-1] if sampler.samples else None
    pytest.fail(f"the reported lag did not fall to 0: last sample {last}, sampler error "
                f"{sampler.error!r}\n{worker.log_tail()}")


def run_burst(p: Pipeline, worker: Worker, sampler: Sampler, events: list[dict[str, Any]],
              total: int) -> Burst:
    b = Burst(len(events), sum(len(orjson.dumps(ev)) for ev in events))
    start = sampler.now()
    produce(p.bootstrap, p.names["raw"], events, chunk=CHUNK, partitions=p.raw_partitions)
    b.produced_s = sampler.now() - start
    wait_caught_up(p, total, [worker], timeout_s=240)
    b.caught_up_s = sampler.now() - start
    b.zero_lag_s = wait_lag_zero(sampler, worker, sampler.now(), timeout_s=30) - start
    during = sampler.between(start, start + b.caught_up_s)
    assert during, "no /metrics sample during the burst"
    for s in during:
        for stage, v in s.lag.items():
            b.peak_lag[stage] = max(b.peak_lag.get(stage, 0.0), v)
        for topic, v in s.faust_lag.items():
            stage = "ingest" if topic == p.names["raw"] else (
                "segmentation" if topic == p.names["bundles"] else topic)
            b.peak_faust[stage] = max(b.peak_faust.get(stage, 0.0), v)
    for tl in sampler.truth:
        if start <= tl.t <= start + b.caught_up_s:
            b.peak_true["ingest"] = max(b.peak_true.get("ingest", 0), tl.raw)
            b.peak_true["segmentation"] = max(b.peak_true.get("segmentation", 0), tl.bundles)
    b.rss_mb = [s.rss_mb for s in during]
    b.peak_rss_mb = max(b.rss_mb)
    b.hwm_mb = max(s.hwm_mb for s in during)
    return b


def describe(name: str, b: Burst) -> str:
    rss = b.rss_mb
    step = max(1, len(rss) // 12)
    return (f"{name}: {b.events} events ({b.raw_bytes / 2**20:.1f} MiB of JSON) produced in "
            f"{b.produced_s:.1f} s; caught up after {b.caught_up_s:.1f} s "
            f"({b.events / b.caught_up_s:,.0f} events/s), reported lag 0 after "
            f"{b.zero_lag_s:.1f} s\n"
            f"  peak lag reported {b.peak_lag}, true (sampled every 1 s) {b.peak_true}, "
            f"Faust's gauges {b.peak_faust}\n"
            f"  RSS samples (MiB, every {SAMPLE_S * step:.1f} s) "
            f"{[round(x) for x in rss[::step]]}, peak {b.peak_rss_mb:.0f}, VmHWM {b.hwm_mb:.0f}")


def decoded_event_bytes(events: list[dict[str, Any]]) -> float:
    """Bytes one event takes as the decoded dict the worker works on (measured)."""
    sample = orjson.dumps(events[:2000])
    tracemalloc.start()
    try:
        decoded = orjson.loads(sample)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return size / len(decoded)


def memory_budget_mb(idle_mb: float, events: list[dict[str, Any]]) -> float:
    """The RSS the worker may reach, whatever the backlog: idle + what the bounds let it hold.

    Raw records: two batches in the stream buffer, the batch being packed, the in-flight ones,
    and two fetches of FETCH_BYTES per raw partition. Bundle records: two batches buffered, one
    processed, two fetches per bundle partition. As Python objects (decoded events, states,
    changes) that data takes up to ~10 times its bytes; plus the state cache (CACHE_MAX states
    of at most ~7 KB) and 16 MiB for producer buffers and allocator slack.
    """
    per_event = sum(len(orjson.dumps(ev)) for ev in events[:2000]) / min(2000, len(events))
    raw_record, bundle = CHUNK * per_event, 500 * (per_event + 64)
    raw = (INGEST_BATCH * (3 + INGEST_INFLIGHT)) * raw_record + 2 * 2 * FETCH_BYTES
    bundles = 3 * SEGMENT_BATCH * bundle + 2 * 4 * FETCH_BYTES
    return idle_mb + (10 * (raw + bundles) + CACHE_MAX * 7 * 1024) / 2**20 + 16


@pytest.mark.timeout(max(300, int(N_EVENTS * (2 + RATIO) * 0.0015)))
def test_overload_lag_reported_memory_bounded_catches_up(
    kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    segments = slow_segments(tmp_path)
    # the default bundle size (500 events); small batches, buffers and fetches (see above)
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, segments,
                      raw_partitions=2, bundle_partitions=4, SEGSTREAM_BUNDLE_MAX_EVENTS="500",
                      SEGSTREAM_STATE_CACHE_MAX=str(CACHE_MAX),
                      SEGSTREAM_INGEST_BATCH_RECORDS=str(INGEST_BATCH),
                      SEGSTREAM_INGEST_MAX_INFLIGHT_BATCHES=str(INGEST_INFLIGHT),
                      SEGSTREAM_SEGMENT_BATCH_RECORDS=str(SEGMENT_BATCH),
                      SEGSTREAM_FETCH_PARTITION_MAX_BYTES=str(FETCH_BYTES))
    rng = random.Random(17)
    bursts = {"warm-up (N)": burst_events(rng, N_EVENTS, "w"),
              "N": burst_events(rng, N_EVENTS, "a"),
              f"{RATIO}N": burst_events(rng, RATIO * N_EVENTS, "b")}
    worker = p.worker()
    sampler = Sampler(p, worker)
    try:
        started = time.monotonic()
        worker.start()
        sampler.start()
        # idle and reporting: both stages' lag present (the raw topic exists, the worker
        # declares the bundles topic) and 0
        wait_lag_zero(sampler, worker, 0.0, timeout_s=90)
        idle = sampler.samples[-1]
        budget = memory_budget_mb(idle.rss_mb, bursts["N"])
        print(f"\nworker reporting lag {time.monotonic() - started:.1f} s after its start; idle "
              f"RSS {idle.rss_mb:.0f} MiB, budget {budget:.0f} MiB")
        done: list[dict[str, Any]] = []
        results: dict[str, Burst] = {}
        for name, events in bursts.items():
            done += events
            results[name] = run_burst(p, worker, sampler, events, len(done))
            print(describe(f"burst {name}", results[name]))
        sampler.stop()

        # lag: reported, well above zero during each burst, 0 soon after catching up
        for b in results.values():
            assert b.peak_lag.get("segmentation", 0) >= 10, b.peak_lag
            assert b.peak_lag.get("ingest", 0) + b.peak_lag["segmentation"] >= 20, b.peak_lag
            assert b.zero_lag_s < b.caught_up_s + 15, "lag reported long after catching up"
        # memory: the first burst also pays one-time allocations (the warm-up); after it, a
        # burst RATIO times bigger peaks some MiB above burst N (measured +5..10 MiB for 3N,
        # with N = 40k and with N = 80k alike: the heap still settles; a repeated burst of the
        # same size added ~1 MiB; +9..18 MiB since states keep their events' records within
        # the allowed lateness, 2026-12-07: three times the customers churn through the
        # bounded cache with larger states), while holding the extra events would take their
        # JSON bytes as bytes (12 MiB at N = 40k) and about ten times that as the decoded
        # events the worker works on (64 MiB): the bound is 40% of that
        one, two = results["N"], results[f"{RATIO}N"]
        growth = two.peak_rss_mb - one.peak_rss_mb
        extra_mb = (two.raw_bytes - one.raw_bytes) / 2**20
        extra_decoded_mb = (two.events - one.events) * decoded_event_bytes(bursts["N"]) / 2**20
        print(f"peak RSS N -> {RATIO}N: {one.peak_rss_mb:.0f} -> {two.peak_rss_mb:.0f} MiB "
              f"({growth:+.1f} MiB); the extra events are {extra_mb:.1f} MiB of JSON, "
              f"{extra_decoded_mb:.0f} MiB decoded; budget {budget:.0f} MiB")
        assert growth < 0.4 * extra_decoded_mb, (growth, extra_decoded_mb)
        assert max(b.hwm_mb for b in results.values()) < budget

        report = check_end_state(p, done, segments)
        print(f"end state == replay: {len(done)} events, {report.changes} changes logged, "
              f"{report.duplicates} duplicates, sizes {report.sizes()}")
        assert worker.stop() == 0, worker.log_tail()
    finally:
        if sampler.is_alive():
            sampler.halt.set()
            sampler.join(timeout=30)
        p.stop_all()
