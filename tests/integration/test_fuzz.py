"""Hostile input at scale on the real broker: the ingest path (a real worker running ingest and
segmentation) and the collector (a real `python -m stream.cli.cmd_collector`), each fed 10k+ hostile
records/events from tests/fuzz_inputs.py interleaved with 2k plain valid events.

Checked for the worker: it stays up and exits 0 on SIGTERM; every valid event (the hostile-but-
valid ones included: odd property names and ids, extreme numbers, edge timestamps) is in exactly
one bundle, in canonical form; every rejection is one dead letter with the expected code, the
original bytes and its origin; the counts add up exactly; the ingest metrics agree; the engine
ran them all (Redis == offline replay == change log). For the collector: every hostile body gets
its documented 4xx or per-event rejections, never a 5xx, and exactly the valid events reach Kafka.

Sizes: ``SEGSTREAM_FUZZ_RECORDS`` hostile items per test (default 10 000).
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from schemas.bundle import EventsRecord, decode_record
from schemas.deadletter import decode_dead_letter
from schemas.partitioner import partition_for
from schemas.validation import Limits, parse_record, partition_key, validate_event
from tests.fuzz_inputs import Case, Expected, HostileGenerator, http_expectation

from .pipeline import check_end_state, make_pipeline, slow_segments, wait_caught_up
from .support import free_port, read_all, wait_http_ready

REPO = Path(__file__).resolve().parents[2]
HOSTILE = int(os.environ.get("SEGSTREAM_FUZZ_RECORDS", "10000"))
VALID = 2_000
LIMITS = Limits(max_event_bytes=16_384, max_record_bytes=100_000, max_events_per_record=200)
LIMIT_ENV = {"SEGSTREAM_MAX_EVENT_BYTES": str(LIMITS.max_event_bytes),
             "SEGSTREAM_MAX_RECORD_BYTES": str(LIMITS.max_record_bytes),
             "SEGSTREAM_MAX_EVENTS_PER_RECORD": str(LIMITS.max_events_per_record)}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Workload:
    cases: list[Case]  # in produce order: hostile records and plain valid ones interleaved
    hostile: int  # rejections + valid-but-hostile events
    odd_ids: set[str]

    @property
    def valid(self) -> list[dict[str, Any]]:
        return [ev for c in self.cases for ev in c.valid]

    @property
    def rejected(self) -> int:
        return sum(len(c.rejected) for c in self.cases)


def workload(seed: int, prefix: str, *, with_null: bool) -> Workload:
    """>= HOSTILE hostile items and VALID plain valid events, shuffled together."""
    # valid timestamps within the last 30 minutes: none gets too late for the worker (1 h)
    gen = HostileGenerator(seed, now_ms(), LIMITS, prefix=prefix, max_age_ms=1_800_000)
    cases: list[Case] = []
    hostile = valid = 0
    classes = iter(gen.classes)
    while hostile < HOSTILE or valid < VALID:
        if valid < VALID and (hostile >= HOSTILE or gen.rng.random() < 0.15):
            case = gen.valid_record(min(gen.rng.choice([1, 1, 5, 20]), VALID - valid))
            valid += len(case.valid)
        else:
            case = gen.case(next(classes, None))
            hostile += len(case.rejected) + sum(ev["event_id"] in gen.odd_ids
                                                for ev in case.valid)
        cases.append(case)
    if with_null:  # a Kafka record without a value (a tombstone)
        for i in range(3):
            cases.insert(len(cases) * (i + 1) // 4,
                         Case("null_value", None, (Expected(None, "unparsable"),), ()))
            hostile += 1
    return Workload(cases, hostile, gen.odd_ids)


def canonical_key(ev: dict[str, Any]) -> bytes:
    return orjson.dumps(ev, option=orjson.OPT_SORT_KEYS)


def metric_samples(port: str, name: str) -> dict[str, float]:
    """label text -> value of one metric of the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            labels, value = line[len(name):].rsplit(" ", 1)
            out[labels] = out.get(labels, 0.0) + float(value)
    return out


# --- the worker ---------------------------------------------------------------------------------

def test_worker_survives_hostile_records(kafka_bootstrap: str, redis_url: str,
                                         unique_topic_prefix: str, tmp_path: Path) -> None:
    segments = slow_segments(tmp_path)
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, segments,
                      raw_partitions=2, bundle_partitions=4, SEGSTREAM_LOG_LEVEL="info",
                      **LIMIT_ENV)
    load = workload(2026, "fz-", with_null=True)
    assert load.hostile >= HOSTILE
    origin: list[tuple[Case, int, int]] = []
    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5,
                             max_request_size=2_000_000)
    try:
        futures = [(case, producer.send(p.names["raw"], value=case.value, key=None
                                        if case.value is not None else b"no-value"))
                   for case in load.cases]
        producer.flush(timeout=120)
        for case, future in futures:
            meta = future.get(timeout=60)
            origin.append((case, meta.partition, meta.offset))
    finally:
        producer.close()
    produced_s = time.monotonic() - started
    worker = p.worker()
    worker.start()
    try:
        valid = load.valid
        distinct = len({ev["event_id"] for ev in valid})
        wait_caught_up(p, distinct, [worker], timeout_s=240)
        caught_up_s = time.monotonic() - started

        # every valid event is in exactly one bundle (ids sent twice: twice), canonical
        bundled: list[dict[str, Any]] = []
        for partition, _, value in read_all(kafka_bootstrap, p.names["bundles"]):
            record = decode_record(value)
            assert isinstance(record, EventsRecord), "no alias here: no hand-off or forward"
            for ev in record.events:
                assert partition_for(partition_key(ev), p.bundle_partitions) == partition
                bundled.append(ev)
        far = now_ms() + 3_600_000
        assert Counter(map(canonical_key, bundled)) == Counter(
            canonical_key(validate_event(ev, far, LIMITS)) for ev in valid)

        # every rejection is exactly one dead letter: code, original bytes, origin
        dead_topic = f"{unique_topic_prefix}segstream-deadletters"
        letters = [decode_dead_letter(v) for _, _, v in read_all(kafka_bootstrap, dead_topic)]
        ingest = [d for d in letters if d.source_topic == p.names["raw"]]
        for d in ingest:
            assert d.message and d.code != "internal_error", d
        assert Counter((d.partition, d.offset, d.index, d.code, d.raw) for d in ingest) == \
            Counter((part, off, e.index, e.code, e.raw if e.raw is not None else case.value or b"")
                    for case, part, off in origin for e in case.rejected)
        assert len(bundled) + len(ingest) == sum(len(c.valid) + len(c.rejected)
                                                 for c in load.cases), "nothing lost"

        # the metrics agree
        port = worker.env["SEGSTREAM_WEB_PORT"]
        invalid = metric_samples(port, "segstream_ingest_events_invalid_total")
        codes = Counter(d.code for d in ingest)
        assert {k: v for k, v in invalid.items() if v} == {
            f'{{code="{c}"}}': float(n) for c, n in codes.items()}
        assert sum(metric_samples(port, "segstream_ingest_records_total").values()) == len(
            load.cases)
        assert sum(metric_samples(port, "segstream_ingest_events_valid_total").values()) == len(
            valid)

        # the engine ran every valid event: the ones stamped 2000-01-01 are too late for it
        engine_letters = [d for d in letters if d.source_topic != p.names["raw"]]
        assert {d.code for d in engine_letters} <= {"too_late"}
        late = Counter(orjson.loads(d.raw)["event_id"] for d in engine_letters)
        oldest = [ev for ev in valid if ev["timestamp"] == LIMITS.min_timestamp_ms]
        assert set(late) == {ev["event_id"] for ev in oldest}
        report = check_end_state(p, [ev for ev in valid if ev not in oldest], segments)
        assert report.changes > 0
        assert worker.proc is not None and worker.proc.poll() is None, "the worker is alive"
    finally:
        status = worker.stop()
    assert status == 0, worker.log_tail()
    log = worker.log_path.with_suffix(".1.log").read_text(errors="replace")
    assert "Traceback" not in log and " ERROR " not in log, worker.log_tail(80)
    print(f"\nworker fuzz: {len(load.cases)} records, {load.hostile} hostile items "
          f"({load.rejected} rejected, {len(load.odd_ids)} odd-but-valid), "
          f"{len(load.valid)} valid events; produced in {produced_s:.1f} s, caught up after "
          f"{caught_up_s:.1f} s; {report.changes} changes; dead letters by code: "
          f"{dict(sorted(codes.items()))}")


# --- the collector ------------------------------------------------------------------------------

KEY = "fuzz-key-0123456789abcdef"


@dataclass
class Collector:
    url: str
    host: str
    port: int
    topic: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def collector(kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path
              ) -> Iterator[Collector]:
    port = free_port()
    log = tmp_path / "collector.log"
    env = {"PATH": "/usr/bin:/bin", "SEGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SEGSTREAM_TOPIC_PREFIX": unique_topic_prefix, "SEGSTREAM_RAW_PARTITIONS": "2",
           "SEGSTREAM_COLLECTOR_PORT": str(port),
           "SEGSTREAM_COLLECTOR_WRITE_KEYS": f"fuzz={KEY}",
           "SEGSTREAM_COLLECTOR_RATE_PER_S": "0", "SEGSTREAM_LOG_LEVEL": "warning", **LIMIT_ENV}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli.cmd_collector"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    c = Collector(f"http://127.0.0.1:{port}", "127.0.0.1", port,
                  f"{unique_topic_prefix}segstream-events", proc, log)
    try:
        wait_http_ready(c.url, proc, log)
        yield c
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]


def post(c: Collector, body: bytes, headers: dict[str, str] | None = None, *,
         path: str = "/v1/events", method: str = "POST") -> tuple[int, Any]:
    """One request on its own connection; (status, decoded JSON body or the raw text)."""
    hdrs = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
            **(headers or {})}
    req = urllib.request.Request(c.url + path, data=body if method == "POST" else None,
                                 headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, data = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, data = err.code, err.read()
    try:
        return status, orjson.loads(data)
    except orjson.JSONDecodeError:
        return status, data.decode(errors="replace")


def raw_exchange(c: Collector, request: bytes) -> bytes:
    """Send raw bytes on a socket; what the collector answers before closing (status line)."""
    with socket.create_connection((c.host, c.port), timeout=30) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_collector_survives_hostile_bodies(kafka_bootstrap: str, collector: Collector) -> None:
    load = workload(7, "fc-", with_null=False)
    assert load.hostile >= HOSTILE
    started = time.monotonic()

    def send(case: Case) -> tuple[Case, int, Any]:
        assert case.value is not None
        status, answer = post(collector, case.value)
        return case, status, answer

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, load.cases))
    statuses = Counter(status for _, status, _ in answers)
    for case, status, answer in answers:
        want_status, want_code, want_rejected = http_expectation(case, LIMITS)
        assert status == want_status, (case.cls, case.value[:300] if case.value else None,
                                       answer)
        if want_code is not None:
            assert answer["error"]["code"] == want_code and answer["error"]["message"]
        else:
            assert answer["accepted"] == len(case.valid), (case.cls, answer)
            assert [(r["index"], r["code"]) for r in answer["rejected"]] == want_rejected
            assert all(r["message"] for r in answer["rejected"])

    # hostile HTTP beyond the body's content: none may get a 5xx or stop the collector
    valid = [ev for c in load.cases for ev in c.valid]
    extra_valid = []
    gen = HostileGenerator(8, now_ms(), LIMITS, prefix="fc-x-")
    for ctype in ("text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", "application/xml", "",
                  "application/json; charset=latin-1", "\u00e9/\u00e9".encode().decode("latin-1")):
        ev = gen.valid_event()
        assert post(collector, orjson.dumps([ev]), {"Content-Type": ctype}) == (
            200, {"accepted": 1, "rejected": []}), ctype
        extra_valid.append(ev)
    ev = gen.valid_event()
    assert post(collector, gzip.compress(orjson.dumps(ev)), {"Content-Encoding": "gzip"}) == (
        200, {"accepted": 1, "rejected": []})
    extra_valid.append(ev)
    bomb = gzip.compress(b"[" + b" " * 20_000_000 + b"]")
    assert post(collector, bomb, {"Content-Encoding": "gzip"})[0] == 413
    status, answer = post(collector, b"\x00not gzip", {"Content-Encoding": "gzip"})
    assert (status, answer["error"]["code"]) == (400, "unparsable")
    for encoding in ("br", "zstd", "deflate"):  # refused by aiohttp's parser: plain-text 400
        assert post(collector, b"\x00\x01junk", {"Content-Encoding": encoding})[0] == 400
    assert post(collector, b"x" * (LIMITS.max_record_bytes + 1))[0] == 413
    assert post(collector, b"", method="GET")[0] == 405
    assert post(collector, b"[]", {"Authorization": "Bearer \u00ff".encode().decode(
        "latin-1")})[0] == 401
    answers_raw = [
        raw_exchange(collector, b"GARBAGE\r\n\r\n"),
        raw_exchange(collector, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc"
                                b"\r\n\r\n[]"),
        raw_exchange(collector, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Big: "
                     + b"h" * 100_000 + b"\r\n\r\n"),
        raw_exchange(collector, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n[{\"a\":"),  # cut short
        raw_exchange(collector, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n"),
        raw_exchange(collector, b"POST /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]
    for answer in answers_raw:
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
    assert collector.proc.poll() is None, collector.log.read_text()[-3000:]
    assert post(collector, b"", path="/health", method="GET") == (200, {"status": "ok"})
    with urllib.request.urlopen(collector.url + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'status="5' not in metrics, collector.log.read_text()[-4000:]
    log = collector.log.read_text(errors="replace")
    # (aiohttp's ERROR line per malformed HTTP request, "bad HTTP request", is rate-limited)
    assert log.count("bad HTTP request") <= 3 + (time.monotonic() - started) / 10, log[-4000:]
    assert "Traceback" not in log and "ERROR stream." not in log, log[-4000:]

    # exactly the valid events are in Kafka, canonical, each once
    got: list[dict[str, Any]] = []
    for _, _, value in read_all(kafka_bootstrap, collector.topic):
        good, bad = parse_record(value, now_ms(), LIMITS)
        assert not bad and value.startswith(b"[")
        got += good
    far = now_ms() + 3_600_000
    assert Counter(map(canonical_key, got)) == Counter(
        canonical_key(validate_event(ev, far, LIMITS)) for ev in valid + extra_valid)
    print(f"\ncollector fuzz: {len(load.cases)} requests, {load.hostile} hostile items "
          f"({load.rejected} rejected, {len(load.odd_ids)} odd-but-valid), {len(valid)} valid "
          f"events, in {time.monotonic() - started:.1f} s; "
          f"statuses {dict(sorted(statuses.items()))}")

