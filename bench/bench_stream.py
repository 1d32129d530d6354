"""Streaming worker benchmark on the real broker and Redis (`make bench-stream`), in one run.

Over the same generated stream (stream.tools.generate: default 1M events from 200k customer
profiles, of which ~83k known customers and ~118k routing ids are active, sessions of several
events over 30 days, timestamps shifted to end one minute before the wall clock; the default
catalogue with
``allowed_lateness`` raised so the live worker's clock accepts 30-day-old events):

  (a) engine     processors.replay.replay over the canonical events, in this process, one core;
  (b) worker     the bundles (500 events, routed with schemas.partitioner) pre-produced on the
                 bundle topic, then ONE worker (SEGSTREAM_AGENTS=segmentation) timed inside its
                 process from the first bundle batch to the commit that brings every partition's
                 applied offset (Redis) to the topic's end; changes counted on the changes topic;
  (c) faust      the naive design on a subset: one event per record, one Faust Table write per
                 event (count and last timestamp per customer);
  (d) latency    an ingest+segmentation worker (`segstream worker`) fed raw arrays of 10 events,
                 paced at half of rate (b) and at 500 events/s, 5 s warm-up then 30 s measured:
                 change record timestamp - produce time of its cause event (p50/p99, split into
                 produce->bundle and bundle->change, and whether latency drifted: queueing);
                 goals, printed as met / not met: p99 <= 100 ms at 500 events/s, <= 250 ms at
                 half of (b);
  (e) restart    Redis filled to ``--restart-states`` customer states, then a new worker process:
                 time from spawn to the first (and last) of 8 waiting bundles committed;
  (s) scale-out  ``--scale-workers`` (2) segmentation workers of one consumer group on a fresh
                 bundle topic; once their assignments split the partitions, the bundles of (b)
                 are produced; combined rate (first batch of any worker to the last commit),
                 ratio to (b), events per CPU-second summed over the workers;
  (p) profile    PartitionSegmenter.process offline over the first bundles with MemoryStore and
                 with RedisStore (the cost of Redis), and the top of a cProfile of the first.

Machine caveat: 2 cores shared by the broker JVM, Redis, this driver and other jobs; figures are
noisy (+-20% and worse under load). Compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.common import Clock  # noqa: E402

RAW_PARTITIONS = 4
BUNDLE_PARTITIONS = 8
BUNDLE_EVENTS = 500
# (d) p99 goals (event -> change) per rate spec: printed as met / not met, never asserted
LATENCY_GOALS_MS = {"500": 100.0, "half": 250.0}
Event = dict[str, Any]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- input ---------------------------------------------------------------------------------

def definitions_text(lateness_days: int) -> str:
    """The packaged default catalogue with ``allowed_lateness`` raised to ``lateness_days``."""
    text = resources.files("processors").joinpath("catalogue.yaml").read_text("utf-8")
    if "allowed_lateness: 1h" not in text:
        raise SystemExit("processors/catalogue.yaml no longer sets 'allowed_lateness: 1h': "
                         "update bench_stream.definitions_text")
    return text.replace("allowed_lateness: 1h", f"allowed_lateness: {lateness_days}d")


def make_stream(events: int, customers: int, days: float, seed: int) -> list[Event]:
    """``events`` canonical events ending one minute before now (see the module doc)."""
    from schemas.validation import validate_event  # noqa: PLC0415
    from stream.tools.generate import GeneratorConfig, generate  # noqa: PLC0415

    cfg = GeneratorConfig(customers=customers, events=int(events * 1.06), days=days, seed=seed,
                          duplicate_share=0.01, out_of_order_share=0.01)
    raw = list(generate(cfg))[:events]
    now = now_ms()
    shift = now - 60_000 - max(e["timestamp"] for e in raw)
    for e in raw:
        e["timestamp"] += shift
    return [validate_event(e, now) for e in raw]


def routing_id(ev: Event) -> str:
    rid: str = ev["customer_id"] or ev["anonymous_id"]
    return rid


def bundles_of(events: list[Event], partitions: int) -> tuple[list[bytes], list[int]]:
    """Bundle records of BUNDLE_EVENTS events per partition (stream order kept per partition)."""
    from schemas.bundle import encode_bundle  # noqa: PLC0415
    from schemas.partitioner import partition_for  # noqa: PLC0415

    per: list[list[Event]] = [[] for _ in range(partitions)]
    memo: dict[str, int] = {}
    for ev in events:
        rid = routing_id(ev)
        p = memo.get(rid)
        if p is None:
            p = memo[rid] = partition_for(rid, partitions)
        per[p].append(ev)
    records: list[bytes] = []
    where: list[int] = []
    for p, evs in enumerate(per):
        for i in range(0, len(evs), BUNDLE_EVENTS):
            records.append(encode_bundle(evs[i:i + BUNDLE_EVENTS]))
            where.append(p)
    return records, where


# --- phases (run inside a worker subprocess) --------------------------------------------------

def quiet_worker(worker: Any) -> Any:
    """Drop Faust's terminal spinner. With a log level of WARNING or above, faust.Worker sets
    the *root logger* to DEBUG so that its spinner turns on every record, and leaves it there:
    every ``log.debug`` of aiokafka (one per produced record) then builds a LogRecord (~10 us).
    The production worker (`segstream worker`, level info by default) has no spinner."""
    worker.spinner = None
    return worker


def run_segment_phase(ends: dict[int, int], result_path: Path, profile: Path | None) -> None:
    """(b): the real app with the segmentation agent, timed around its batch handler."""
    import faust  # noqa: PLC0415

    from stream.settings import Settings  # noqa: PLC0415
    from stream.worker.bootstrap import build_worker  # noqa: PLC0415

    worker = build_worker(Settings.from_env())
    app, agent = worker.app, worker.segmentation
    assert agent is not None
    clock = Clock(sum(ends.values()), result_path)
    handle, commit = agent.handle, agent.publisher.commit
    counts = {"events": 0, "changes": 0, "timer_changes": 0, "batches": 0, "records": 0}
    prof = cProfile.Profile() if profile else None

    async def counted_commit(seg: Any, out: Any, engine_seconds: float) -> None:
        await commit(seg, out, engine_seconds)
        counts["events"] += out.events
        counts["changes" if out.offset is not None else "timer_changes"] += len(out.changes)

    async def timed_handle(events: Any) -> None:
        if clock.t0 is None and prof is not None:
            prof.enable()
        clock.start()
        await handle(events)
        counts["batches"] += 1
        counts["records"] += len(events)
        owned = agent.owned
        if not clock.done and all(
            p in owned and owned[p].applied_offset == end - 1 for p, end in ends.items() if end
        ):
            if prof is not None and profile is not None:
                prof.disable()
                prof.dump_stats(str(profile))
            clock.finish(counts["events"], dict(counts))

    agent.handle, agent.publisher.commit = timed_handle, counted_commit  # type: ignore[method-assign]
    quiet_worker(faust.Worker(app, loglevel="warning", quiet=True)).execute_from_commandline()


def run_shared_phase(stats_path: Path) -> None:
    """(s): one of several segmentation workers of one consumer group. Writes its assigned
    bundle partitions on every assignment (``stats_path`` with ``.assigned``), and after every
    batch its wall-clock window (first batch start, last batch end: comparable across
    processes), the process CPU over it and its counts; the driver stops it."""
    import faust  # noqa: PLC0415

    from stream.settings import Settings  # noqa: PLC0415
    from stream.worker.bootstrap import build_worker  # noqa: PLC0415

    settings = Settings.from_env()
    worker = build_worker(settings)
    app, agent = worker.app, worker.segmentation
    assert agent is not None
    handle, commit = agent.handle, agent.publisher.commit
    bundles = settings.topic("bundles")
    stats: dict[str, Any] = {"events": 0, "records": 0, "batches": 0, "first": None,
                             "last": None, "cpu_first": 0.0, "cpu_last": 0.0}
    assigned_path = stats_path.with_suffix(".assigned")

    async def assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        mine = sorted(tp.partition for tp in args[0] if tp.topic == bundles)
        assigned_path.write_text(json.dumps(mine))

    async def timed_handle(events: Any) -> None:
        if stats["first"] is None:
            stats["first"], stats["cpu_first"] = time.time(), Clock.cpu()
        await handle(events)
        stats["last"], stats["cpu_last"] = time.time(), Clock.cpu()
        stats["batches"] += 1
        stats["records"] += len(events)
        stats_path.write_text(json.dumps(stats))  # noqa: ASYNC240 - a few hundred bytes

    async def counted_commit(seg: Any, out: Any, engine_seconds: float) -> None:
        await commit(seg, out, engine_seconds)
        stats["events"] += out.events

    app.on_partitions_assigned.connect(assigned, weak=False)
    agent.handle, agent.publisher.commit = timed_handle, counted_commit  # type: ignore[method-assign]
    quiet_worker(faust.Worker(app, loglevel="warning", quiet=True)).execute_from_commandline()


def run_table_phase(target: int, result_path: Path) -> None:
    """(c): one event per record, one Faust Table write per event (the naive design)."""
    import faust  # noqa: PLC0415

    from stream.settings import Settings  # noqa: PLC0415
    from stream.worker.bootstrap import build_worker  # noqa: PLC0415

    settings = Settings.from_env()
    worker = build_worker(settings, with_agents=False)
    app = worker.app
    # keys and values are bytes (the app's raw codec): the value is JSON we encode ourselves
    table = app.Table("bench-customers", default=None, partitions=settings.topics.raw_partitions)
    clock = Clock(target, result_path)
    count = 0

    async def naive(stream: Any) -> None:
        nonlocal count
        async for value in stream:
            clock.start()
            ev = orjson.loads(value)
            rid = (ev["customer_id"] or ev["anonymous_id"]).encode()
            prev = table.get(rid)
            seen = 1 if prev is None else orjson.loads(prev)[0] + 1
            table[rid] = orjson.dumps([seen, ev["timestamp"]])
            count += 1
            if count >= target and not clock.done:
                await app.producer.flush()  # the last changelog write is acknowledged
                clock.finish(count, {})

    app.agent(worker.topics.raw, name="bench.naive_table")(naive)
    quiet_worker(faust.Worker(app, loglevel="warning", quiet=True)).execute_from_commandline()


# --- driver helpers ------------------------------------------------------------------------------

def redis_offsets(url: str, namespace: str) -> dict[int, int | None]:
    """Applied offset of every bundle partition in the store under ``namespace``."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    try:
        raw = client.mget([f"{namespace}{{p{p}}}:offset" for p in range(BUNDLE_PARTITIONS)])
        return {p: None if v is None else int(v) for p, v in enumerate(raw)}
    finally:
        client.close()


# --- steps (c), (d), (e), (p) ---------------------------------------------------------------

def step_baseline(bootstrap: str, run: str, tmp: Path, events: list[Event]) -> dict[str, Any]:
    """(c): the subset as one JSON record per event, keyed (partitioned) by routing id."""
    from schemas.partitioner import partition_for  # noqa: PLC0415

    prefix = f"{run}-naive-"
    records = [orjson.dumps(ev) for ev in events]
    where = [partition_for(routing_id(ev), RAW_PARTITIONS) for ev in events]
    common.produce(bootstrap, common.topic(prefix, "raw", RAW_PARTITIONS), records, where)
    print(f"(c) produced {len(records):,} single-event records; running the naive Faust "
          "table worker...", flush=True)
    env = common.phase_env(bootstrap, prefix, tmp,
                           {"SEGSTREAM_RAW_PARTITIONS": str(RAW_PARTITIONS)})
    c = common.spawn_phase(Path(__file__), "table", ["--target", str(len(events))], env, tmp,
                           timeout=900)
    c["rate"] = c["events"] / c["seconds"]
    c["per_cpu"] = c["events"] / max(c["cpu_seconds"], 1e-9)
    print(f"(c) naive Faust + Table: {c['rate']:,.0f} events/s ({c['seconds']:.1f} s, "
          f"{c['per_cpu']:,.0f} events per CPU-s)", flush=True)
    return c


def wait_applied(redis_url: str, namespace: str, bootstrap: str, bundles_topic: str,
                 timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until every bundle partition's applied offset (Redis) is at the topic's end."""
    deadline = time.monotonic() + timeout
    while True:
        ends = common.end_offsets(bootstrap, bundles_topic)
        offsets = redis_offsets(redis_url, namespace)
        if ends and all(offsets.get(p) == end - 1 for p, end in ends.items() if end):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not catch up (offsets {offsets}, ends {ends}):\n"
                             f"{common.log_tail(log)}")
        time.sleep(0.5)


def step_latency(bootstrap: str, redis_url: str, run: str, tmp: Path, defs: Path, rate: float,
                 seconds: float, batch: int, customers: int, warmup: float) -> dict[str, Any]:
    """(d): raw arrays of ``batch`` events at ``rate`` events/s through ingest+segmentation,
    for ``warmup`` seconds (not measured: start-up transients) then ``seconds`` measured."""
    from kafka import KafkaProducer  # noqa: PLC0415

    from schemas.bundle import EventsRecord, decode_record  # noqa: PLC0415
    from schemas.changes import decode_change  # noqa: PLC0415
    from stream.tools.generate import GeneratorConfig, generate  # noqa: PLC0415

    prefix, namespace = f"{run}-lat-", f"{run}-lat:"
    raw_topic, changes_topic = f"{prefix}segstream-events", f"{prefix}segstream-changes"
    common.create_topic(bootstrap, common.topic(prefix, "raw", RAW_PARTITIONS))
    env = common.phase_env(bootstrap, prefix, tmp, {
        "SEGSTREAM_AGENTS": "ingest,segmentation",
        "SEGSTREAM_RAW_PARTITIONS": str(RAW_PARTITIONS),
        "SEGSTREAM_BUNDLE_PARTITIONS": str(BUNDLE_PARTITIONS),
        "SEGSTREAM_REDIS_URL": redis_url, "SEGSTREAM_REDIS_NAMESPACE": namespace,
        "SEGSTREAM_SEGMENTS_FILE": str(defs),
        "SEGSTREAM_LOG_LEVEL": "info"})  # the default: see quiet_worker for why not warning
    n = int(rate * (seconds + warmup))
    evs = list(generate(GeneratorConfig(customers=max(customers, 100), events=int(n * 1.06) + 50,
                                        days=1, seed=99)))
    log = tmp / "latency-worker.log"
    proc = common.spawn_worker(env, log)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    try:
        warm, evs = evs[:20], evs[20:n + 20]
        for ev in warm:
            ev["timestamp"] = now_ms()
        producer.send(raw_topic, orjson.dumps(warm), partition=0)
        producer.flush()
        wait_applied(redis_url, namespace, bootstrap, f"{prefix}segstream-bundles", 180, proc,
                     log)
        sent: dict[str, int] = {}  # event id -> produce time, after the warm-up only
        t0 = time.perf_counter()
        measured_from = int(rate * warmup)
        for k, i in enumerate(range(0, len(evs), batch)):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            chunk = evs[i:i + batch]
            ms = now_ms()
            for ev in chunk:
                ev["timestamp"] = ms
            if i >= measured_from:
                sent.update((ev["event_id"], ms) for ev in chunk)
            producer.send(raw_topic, orjson.dumps(chunk), partition=k % RAW_PARTITIONS)
        producer.flush()
        paced = time.perf_counter() - t0
        wait_applied(redis_url, namespace, bootstrap, f"{prefix}segstream-bundles", 180, proc,
                     log)
    finally:
        producer.close()
        common.stop_worker(proc)
    bundled: dict[str, int] = {}  # event id -> timestamp of the bundle record holding it
    for r in read_topic(bootstrap, f"{prefix}segstream-bundles"):
        record = decode_record(r.value)
        for ev in record.events if isinstance(record, EventsRecord) else ():
            bundled[ev["event_id"]] = r.timestamp
    lat: list[float] = []
    ingest: list[float] = []
    segment: list[float] = []
    samples: list[tuple[int, int, int]] = []  # (produced, bundled, change) ms, for analysis
    for r in read_topic(bootstrap, changes_topic):
        cause = decode_change(r.value).cause.rpartition(":")[2]
        if cause in sent:
            lat.append(r.timestamp - sent[cause])
            if cause in bundled:
                ingest.append(bundled[cause] - sent[cause])
                segment.append(r.timestamp - bundled[cause])
                samples.append((sent[cause], bundled[cause], r.timestamp))
    samples.sort()
    (tmp / f"latency-samples-{int(rate)}.json").write_text(json.dumps(samples))
    quarter = max(1, len(samples) // 4)
    first = [c - p for p, _, c in samples[:quarter]]
    last = [c - p for p, _, c in samples[-quarter:]]
    out = {"rate": len(evs) / paced, "seconds": paced - warmup, "n": len(lat),
           "p50": common.pct(lat, 0.5), "p99": common.pct(lat, 0.99),
           "max": max(lat, default=float("nan")),
           "ingest_p50": common.pct(ingest, 0.5), "ingest_p99": common.pct(ingest, 0.99),
           "segment_p50": common.pct(segment, 0.5), "segment_p99": common.pct(segment, 0.99),
           # latency growing over the run: the pipeline did not keep up with the rate
           "drift": common.pct(last, 0.5) - common.pct(first, 0.5)}
    print(f"(d) latency at {out['rate']:,.0f} events/s for {paced - warmup:.0f} s (after "
          f"{warmup:g} s of warm-up): {len(lat):,} event-caused changes, "
          f"p50 {out['p50']:.0f} ms, p99 {out['p99']:.0f} ms, "
          f"max {out['max']:.0f} ms; stages p50/p99: produce->bundle {out['ingest_p50']:.0f}/"
          f"{out['ingest_p99']:.0f} ms, bundle->change {out['segment_p50']:.0f}/"
          f"{out['segment_p99']:.0f} ms; p50 drift first->last quarter {out['drift']:+.0f} ms",
          flush=True)
    return out


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` (kafka-python ConsumerRecords: value, timestamp...)."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_partition_fetch_bytes=4 * 1024 * 1024)
    out: list[Any] = []
    try:
        tps = [TopicPartition(topic, p)
               for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
    finally:
        consumer.close()
    return out


def step_restart(bootstrap: str, redis_url: str, env: dict[str, str], namespace: str,
                 blobs: list[bytes], target: int, tmp: Path) -> dict[str, Any]:
    """(e): fill Redis to ``target`` states (real encoded states from (a) cloned under new
    ids), queue one bundle per partition, start a worker and time its first commits."""
    import redis  # noqa: PLC0415

    from schemas.bundle import encode_bundle  # noqa: PLC0415
    from schemas.partitioner import partition_for  # noqa: PLC0415

    client = redis.Redis.from_url(redis_url)
    key = [f"{namespace}{{p{p}}}:state" for p in range(BUNDLE_PARTITIONS)]
    have = sum(int(client.hlen(k)) for k in key)
    t = time.perf_counter()
    pending: list[dict[str, bytes]] = [{} for _ in range(BUNDLE_PARTITIONS)]
    pipe = client.pipeline(transaction=False)
    for i in range(max(0, target - have)):
        cid = f"clone-{i:07d}"
        part = pending[partition_for(cid, BUNDLE_PARTITIONS)]
        part[cid] = blobs[i % len(blobs)]
        if len(part) >= 5_000:
            pipe.hset(key[partition_for(cid, BUNDLE_PARTITIONS)], mapping=part)
            part.clear()
            if len(pipe) >= 8:
                pipe.execute()
    for p, part in enumerate(pending):
        if part:
            pipe.hset(key[p], mapping=part)
    pipe.execute()
    states = sum(int(client.hlen(k)) for k in key)
    print(f"(e) Redis holds {states:,} states ({have:,} from (b), the rest cloned in "
          f"{time.perf_counter() - t:.1f} s); restarting the worker...", flush=True)
    # one bundle per partition: page views of customers that have a state there
    bundles: list[bytes] = []
    for p in range(BUNDLE_PARTITIONS):
        cids = [c.decode() for (c, _), _ in zip(client.hscan_iter(key[p], count=1000),
                                                range(BUNDLE_EVENTS), strict=False)]
        ms = now_ms()
        bundles.append(encode_bundle([
            {"event_id": f"restart-{p}-{j}", "type": "page_view", "customer_id": cid,
             "anonymous_id": None, "timestamp": ms, "source": "bench", "schema_version": 1,
             "properties": {"url": "https://shop.example/restart"}}
            for j, cid in enumerate(cids)]))
    before = redis_offsets(redis_url, namespace)
    prefix = env["SEGSTREAM_TOPIC_PREFIX"]
    from kafka import KafkaProducer  # noqa: PLC0415

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1,
                             max_request_size=2 * 1024 * 1024)
    for p, value in enumerate(bundles):
        producer.send(f"{prefix}segstream-bundles", value, partition=p)
    producer.flush()
    producer.close()
    log = tmp / "restart-worker.log"
    t0 = time.perf_counter()
    proc = common.spawn_worker({**env, "SEGSTREAM_LOG_LEVEL": "info"}, log)
    first = last = None
    try:
        while last is None:
            now = redis_offsets(redis_url, namespace)
            moved = sum(now[p] != before[p] for p in range(BUNDLE_PARTITIONS))
            if moved and first is None:
                first = time.perf_counter() - t0
            if moved == BUNDLE_PARTITIONS:
                last = time.perf_counter() - t0
            if proc.poll() is not None or time.perf_counter() - t0 > 180:
                raise SystemExit(f"restarted worker processed nothing:\n{common.log_tail(log)}")
            time.sleep(0.01)
    finally:
        common.stop_worker(proc)
        client.close()
    print(f"(e) restart: first bundle committed {first:.2f} s after spawn, all "
          f"{BUNDLE_PARTITIONS} partitions {last:.2f} s", flush=True)
    return {"states": states, "first": first, "all": last}


def step_scale_out(bootstrap: str, redis_url: str, run: str, tmp: Path, defs: Path,
                   records: list[bytes], where: list[int], workers: int) -> dict[str, Any]:
    """(s): ``workers`` segmentation worker processes of one consumer group on one bundle
    topic. The workers start on the empty topic; once their assignments split the partitions,
    the bundles of (b) are produced; timed from the first batch of any worker to the last
    batch that brings every partition's applied offset (Redis) to the topic's end."""
    prefix, namespace = f"{run}-scale-", f"{run}-scale:"
    bundles_topic = f"{prefix}segstream-bundles"
    common.create_topic(bootstrap, common.topic(prefix, "bundles", BUNDLE_PARTITIONS))
    env = common.phase_env(bootstrap, prefix, tmp, {
        "SEGSTREAM_AGENTS": "segmentation",
        "SEGSTREAM_BUNDLE_PARTITIONS": str(BUNDLE_PARTITIONS),
        "SEGSTREAM_REDIS_URL": redis_url, "SEGSTREAM_REDIS_NAMESPACE": namespace,
        "SEGSTREAM_SEGMENTS_FILE": str(defs)})
    stats = [tmp / f"scale-{i}.json" for i in range(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp / f"scale-{i}.log" for i in range(workers)]
    try:
        for i in range(workers):
            with logs[i].open("wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, str(Path(__file__)), "--phase", "shared", "--result",
                     str(stats[i])], cwd=REPO, start_new_session=True,
                    env={**env, "SEGSTREAM_WEB_PORT": str(17066 + os.getpid() % 1000 + i)},
                    stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while True:  # every worker holds part of the partitions, together all of them
            parts = [json.loads(f.read_text()) if f.exists() else []
                     for f in (x.with_suffix(".assigned") for x in stats)]
            if all(parts) and sorted(q for x in parts for q in x) == list(
                    range(BUNDLE_PARTITIONS)):
                break
            if time.monotonic() > deadline or any(pr.poll() is not None for pr in procs):
                raise SystemExit("(s) the workers did not split the partitions:\n"
                                 + "\n".join(common.log_tail(x) for x in logs))
            time.sleep(0.2)
        print(f"(s) {workers} workers hold partitions {parts}; producing the bundles...",
              flush=True)
        common.produce(bootstrap, common.topic(prefix, "bundles", BUNDLE_PARTITIONS), records,
                       where, create=False)
        for pr, log in zip(procs, logs, strict=True):
            wait_applied(redis_url, namespace, bootstrap, bundles_topic, 900, pr, log)
    finally:
        for pr in procs:
            common.stop_worker(pr)
    each = [json.loads(f.read_text()) for f in stats]
    seconds = max(x["last"] for x in each) - min(x["first"] for x in each)
    cpu = sum(x["cpu_last"] - x["cpu_first"] for x in each)
    events = sum(x["events"] for x in each)
    out = {"workers": workers, "events": events, "seconds": seconds, "cpu_seconds": cpu,
           "rate": events / seconds, "per_cpu": events / max(cpu, 1e-9),
           "split": [x["events"] for x in each]}
    print(f"(s) {workers} workers: {out['rate']:,.0f} events/s combined ({seconds:.1f} s; "
          f"{out['per_cpu']:,.0f} events per CPU-s, {cpu:.1f} CPU-s in all; events per worker "
          f"{out['split']})", flush=True)
    return out


def step_profile(redis_url: str, run: str, compiled: Any, records: list[bytes],
                 where: list[int], n_events: int) -> dict[str, Any]:
    """(p): PartitionSegmenter.process over the first bundles of each partition, offline, with
    MemoryStore and with RedisStore; prints the top of a cProfile of the MemoryStore run."""
    from redis.asyncio import Redis  # noqa: PLC0415

    from processors.engine import Engine  # noqa: PLC0415
    from schemas.bundle import decode_bundle  # noqa: PLC0415
    from state.redis_store import RedisStore  # noqa: PLC0415
    from state.store import MemoryStore, StateStore  # noqa: PLC0415
    from stream.worker.segmenter import PartitionSegmenter  # noqa: PLC0415

    per: dict[int, list[bytes]] = defaultdict(list)
    budget = n_events // BUNDLE_EVENTS // BUNDLE_PARTITIONS + 1
    for value, p in zip(records, where, strict=True):
        if len(per[p]) < budget:
            per[p].append(value)
    n = sum(len(decode_bundle(v)) for values in per.values() for v in values)

    async def run_once(store: StateStore, prof: cProfile.Profile | None) -> float:
        engine = Engine(compiled)
        segs = {p: await PartitionSegmenter.claim(p, engine, store, partitions=BUNDLE_PARTITIONS)
                for p in per}
        t = time.perf_counter()
        if prof is not None:
            prof.enable()
        for p, values in per.items():
            for i in range(0, len(values), 25):  # 25 records per batch, as the agent takes
                out = await segs[p].process(list(enumerate(values[i:i + 25], i)), now_ms())
                await segs[p].commit(out)
        if prof is not None:
            prof.disable()
        return n / (time.perf_counter() - t)

    async def run_redis() -> float:
        client = Redis.from_url(redis_url)
        try:
            return await run_once(RedisStore(client, namespace=f"{run}-prof:"), None)
        finally:
            await client.aclose()

    prof = cProfile.Profile()
    mem = asyncio.run(run_once(MemoryStore(), None))
    red = asyncio.run(run_redis())
    asyncio.run(run_once(MemoryStore(), prof))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    print(f"(p) PartitionSegmenter offline over {n:,} events: MemoryStore {mem:,.0f} events/s, "
          f"RedisStore {red:,.0f} events/s. cProfile (MemoryStore), top by own time:")
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()),
          flush=True)
    return {"memory": mem, "redis": red, "events": n}

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=200_000,
                    help="customer profiles of the generator (not all are active in the window)")
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--baseline-events", type=int, default=60_000)
    ap.add_argument("--latency-rates", default="half,500",
                    help="comma-separated events/s of (d) runs; 'half': half of rate (b)")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--latency-warmup", type=float, default=5.0,
                    help="seconds paced before (d) measures")
    ap.add_argument("--latency-batch", type=int, default=10, help="events per raw record in (d)")
    ap.add_argument("--restart-states", type=int, default=1_000_000)
    ap.add_argument("--profile-events", type=int, default=100_000,
                    help="events of the offline segmenter profile (p)")
    ap.add_argument("--profile-worker", action="store_true",
                    help="run (b) under cProfile inside the worker (slower: figures flagged)")
    ap.add_argument("--scale-workers", type=int, default=2,
                    help="worker processes of the scale-out step (s)")
    ap.add_argument("--skip", default="",
                    help="steps to skip, e.g. 'c,d,e,p,s' ((a) and (b) always run)")
    ap.add_argument("--phase", choices=["segment", "table", "shared"])
    ap.add_argument("--ends")
    ap.add_argument("--target", type=int)
    ap.add_argument("--profile-out", type=Path)
    ap.add_argument("--result", type=Path)
    a = ap.parse_args()
    if a.phase == "segment":
        ends = {int(p): int(o) for p, o in json.loads(a.ends).items()}
        run_segment_phase(ends, a.result, a.profile_out)
        return 0
    if a.phase == "table":
        run_table_phase(a.target, a.result)
        return 0
    if a.phase == "shared":
        run_shared_phase(a.result)
        return 0
    skip = {x.strip() for x in a.skip.split(",") if x.strip()}

    from processors.engine import Engine  # noqa: PLC0415
    from processors.lang.compile import compile_catalogue  # noqa: PLC0415
    from processors.lang.load import load_definitions  # noqa: PLC0415
    from processors.replay import replay  # noqa: PLC0415
    from state.codec import encode_state  # noqa: PLC0415
    from stream.settings import Settings  # noqa: PLC0415

    env_settings = Settings.from_env()
    bootstrap, redis_url = ",".join(env_settings.kafka.bootstrap), env_settings.redis.url
    run = f"bstream{int(time.time())}-{os.getpid()}"
    tmp = REPO / ".run" / run
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"broker {bootstrap}; redis {redis_url}; run {run}; logs in {tmp}", flush=True)
    r: dict[str, Any] = {"args": a}

    defs = tmp / "segments.yaml"
    defs.write_text(definitions_text(int(a.days) + 2))
    compiled = compile_catalogue(load_definitions(defs))
    t = time.perf_counter()
    events = make_stream(a.events, a.customers, a.days, a.seed)
    r["n"] = n = len(events)
    r["ids"] = len({routing_id(e) for e in events})
    r["known"] = len({e["customer_id"] for e in events if e["customer_id"]})
    print(f"stream: {n:,} canonical events, {r['known']:,} known customers, {r['ids']:,} routing "
          f"ids, {a.days:g} days (lateness {int(a.days) + 2}d); made in "
          f"{time.perf_counter() - t:.1f} s", flush=True)

    # (a) engine offline, one core
    t, cpu = time.perf_counter(), Clock.cpu()
    res = replay(Engine(compiled), events)
    sec_a, cpu_a = time.perf_counter() - t, Clock.cpu() - cpu
    r["a"] = {"rate": n / sec_a, "per_cpu": n / cpu_a}
    print(f"(a) engine replay: {n / sec_a:,.0f} events/s ({sec_a:.1f} s; {n / cpu_a:,.0f} events "
          f"per CPU-s; {res.changes:,} changes, {len(res.states):,} profiles)", flush=True)
    sample_blobs = [encode_state(st) for _, st in zip(range(50_000), res.states.values(),
                                                      strict=False)]
    del res

    # (b) one segmentation worker over pre-produced bundles
    prefix, namespace = f"{run}-seg-", f"{run}-seg:"
    records, where = bundles_of(events, BUNDLE_PARTITIONS)
    t = time.perf_counter()
    bundles_topic = f"{prefix}segstream-bundles"
    common.produce(bootstrap, common.topic(prefix, "bundles", BUNDLE_PARTITIONS), records, where)
    ends = common.end_offsets(bootstrap, bundles_topic)
    print(f"(b) produced {len(records):,} bundles in {time.perf_counter() - t:.1f} s; "
          f"running the worker...", flush=True)
    seg_env = common.phase_env(bootstrap, prefix, tmp, {
        "SEGSTREAM_AGENTS": "segmentation",
        "SEGSTREAM_BUNDLE_PARTITIONS": str(BUNDLE_PARTITIONS),
        "SEGSTREAM_REDIS_URL": redis_url, "SEGSTREAM_REDIS_NAMESPACE": namespace,
        "SEGSTREAM_SEGMENTS_FILE": str(defs)})
    phase_args = ["--ends", json.dumps(ends)]
    if a.profile_worker:
        phase_args += ["--profile-out", str(tmp / "worker.prof")]
    r["b"] = b = common.spawn_phase(Path(__file__), "segment", phase_args, seg_env, tmp)
    b["rate"] = b["events"] / b["seconds"]
    b["per_cpu"] = b["events"] / max(b["cpu_seconds"], 1e-9)
    offsets = redis_offsets(redis_url, namespace)
    assert all(offsets[p] == end - 1 for p, end in ends.items() if end), (offsets, ends)
    b["topic_changes"] = sum(common.end_offsets(bootstrap, f"{prefix}segstream-changes").values())
    print(f"(b) worker: {b['rate']:,.0f} events/s ({b['seconds']:.1f} s; {b['per_cpu']:,.0f} "
          f"events per CPU-s; {b['batches']} batches); Redis offsets at the topic ends; "
          f"{b['topic_changes']:,} changes on the topic ({b['changes']:,} from bundles, "
          f"{b['timer_changes']:,} from timers)", flush=True)
    if a.profile_worker:
        out = io.StringIO()
        pstats.Stats(str(tmp / "worker.prof"), stream=out).sort_stats("tottime").print_stats(30)
        print("cProfile of the worker during (b), top by own time:\n" + out.getvalue())

    if "s" not in skip:  # scale-out: several workers of one group on the same bundles
        r["s"] = step_scale_out(bootstrap, redis_url, run, tmp, defs, records, where,
                                a.scale_workers)

    if "c" not in skip:  # naive Faust: one record and one table write per event
        r["c"] = step_baseline(bootstrap, run, tmp, events[: a.baseline_events])
    del events

    r["d"] = []
    for spec in (x.strip() for x in a.latency_rates.split(",") if "d" not in skip):
        rate = b["rate"] / 2 if spec == "half" else float(spec)
        d = step_latency(bootstrap, redis_url, f"{run}-{len(r['d'])}", tmp, defs, rate,
                         a.latency_seconds, a.latency_batch, 20_000, a.latency_warmup)
        d["spec"], d["goal"] = spec, LATENCY_GOALS_MS.get(spec)
        r["d"].append(d)

    if "e" not in skip:  # restart with --restart-states states in Redis
        r["e"] = step_restart(bootstrap, redis_url, seg_env, namespace, sample_blobs,
                              a.restart_states, tmp)

    if "p" not in skip:  # offline profile of the segmenter (MemoryStore vs RedisStore)
        r["p"] = step_profile(redis_url, run, compiled, records, where, a.profile_events)

    r["total"] = time.perf_counter() - started
    summary(r)
    return 0


def summary(r: dict[str, Any]) -> None:
    """The one table of every figure and ratio."""
    a, b = r["args"], r["b"]
    ra = r["a"]
    flag = " (cProfile on)" if a.profile_worker else ""
    rows = [
        ("(a) engine replay, 1 core", f"{ra['rate']:,.0f} ev/s",
         f"{ra['per_cpu']:,.0f} ev/CPU-s"),
        ("(b) one worker, bundles->Redis", f"{b['rate']:,.0f} ev/s{flag}",
         f"{b['per_cpu']:,.0f} ev/CPU-s; {r['n']:,} events, {r['known']:,} customers, "
         f"{r['ids']:,} routing ids, {b['seconds']:.0f} s, {b['topic_changes']:,} changes"),
        ("b / a", f"{b['rate'] / ra['rate']:.2f}",
         f"per CPU-s {b['per_cpu'] / ra['per_cpu']:.2f}; target >= 0.5"),
    ]
    if "c" in r:
        c = r["c"]
        rows += [
            ("(c) naive Faust + Table", f"{c['rate']:,.0f} ev/s",
             f"{c['per_cpu']:,.0f} ev/CPU-s; {c['events']:,} events"),
            ("b / c", f"{b['rate'] / c['rate']:.1f}",
             f"per CPU-s {b['per_cpu'] / c['per_cpu']:.1f}; target >= 15"),
        ]
    for d in r["d"]:
        kept = "kept up" if d["drift"] < 250 else "DID NOT keep up (queueing)"
        goal = d.get("goal")
        verdict = ("no goal" if goal is None else
                   f"goal p99 <= {goal:.0f}: {'met' if d['p99'] <= goal else 'NOT met'}")
        label = "half of b" if d.get("spec") == "half" else f"{d['rate']:,.0f} ev/s"
        rows.append((f"(d) event->change @{d['rate']:,.0f} ev/s",
                     f"p50 {d['p50']:.0f} / p99 {d['p99']:.0f} ms",
                     f"{label}; {verdict}; {kept}; max {d['max']:.0f} ms; {d['n']:,} changes"))
        rows.append(("    stages p50/p99",
                     f"{d['ingest_p50']:.0f}/{d['ingest_p99']:.0f} + "
                     f"{d['segment_p50']:.0f}/{d['segment_p99']:.0f} ms",
                     "produce->bundle + bundle->change"))
    if "s" in r:
        sc = r["s"]
        rows += [
            (f"(s) {sc['workers']} workers, one group", f"{sc['rate']:,.0f} ev/s",
             f"{sc['per_cpu']:,.0f} ev/CPU-s (sum of the workers' user+sys CPU, "
             f"{sc['cpu_seconds']:.1f} s); events per worker {sc['split']}"),
            (f"s / b ({sc['workers']} workers / one)", f"{sc['rate'] / b['rate']:.2f}",
             f"per CPU-s {sc['per_cpu'] / b['per_cpu']:.2f} (2 shared cores: the broker, "
             "Redis and the driver take part of them)"),
        ]
    if "e" in r:
        e = r["e"]
        rows.append(("(e) restart -> first bundle", f"{e['first']:.2f} s",
                     f"{e['states']:,} states in Redis; all {BUNDLE_PARTITIONS} partitions "
                     f"{e['all']:.2f} s; target <= 10"))
    if "p" in r:
        p = r["p"]
        rows += [("(p) PartitionSegmenter + MemoryStore", f"{p['memory']:,.0f} ev/s", "offline"),
                 ("(p) PartitionSegmenter + RedisStore", f"{p['redis']:,.0f} ev/s", "offline")]
    print("\n=== bench-stream summary ===")
    for name, value, note in rows:
        print(f"{name:<36} {value:>24}  {note}")
    print(f"total run time {r['total']:.0f} s. Caveat: 2 cores shared by the broker JVM, Redis, "
          "the driver and other jobs: wall-clock rates vary +-20% and more under load; the "
          "per-CPU-second figures are steadier.")


if __name__ == "__main__":
    sys.exit(main())
