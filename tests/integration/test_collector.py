"""The HTTP collector on the real broker: the real `python -m stream.cli.cmd_collector` subprocess.

Each test posts batches under its own event-id prefix (and, for the rate limit, its own write
key), then reads the raw topic and finds exactly the valid events of that prefix, in order, as
JSON arrays of canonical events that the ingest validation accepts unchanged. The raw topic has
one partition here, so "in order" is the topic's order.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.validation import parse_record

from .support import free_port, read_all, wait_http_ready

REPO = Path(__file__).resolve().parents[2]
KEYS = {name: f"{name}-key-0123456789abcdef" for name in
        ("web", "backend", "old", "burst", "cors")}
ORIGIN = "https://shop.example"
MAX_RECORD_BYTES = 20_000
MAX_EVENT_BYTES = 2_000
MAX_EVENTS = 50
BURST = 100


@dataclass
class Running:
    url: str
    topic: str
    bootstrap: str
    log: Path

    def post(self, body: Any, key: str | None = None, *, header: str = "bearer",
             origin: str | None = None, raw: bytes | None = None) -> tuple[int, dict[str, Any],
                                                                          dict[str, str]]:
        """POST /v1/events; (status, JSON body, headers)."""
        url = self.url + "/v1/events"
        headers = {"Content-Type": "application/json"}
        if key is not None and header == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif key is not None and header == "x-write-key":
            headers["X-Write-Key"] = key
        elif key is not None:
            url += f"?write_key={key}"
        if origin:
            headers["Origin"] = origin
        data = raw if raw is not None else orjson.dumps(body)
        return request(urllib.request.Request(url, data=data, headers=headers, method="POST"))

    def events(self, prefix: str) -> list[dict[str, Any]]:
        """The events of the raw topic whose id starts with ``prefix``, in topic order; every
        record must be an array the ingest validation accepts whole."""
        out = []
        for _, _, value in read_all(self.bootstrap, self.topic):
            good, bad = parse_record(value, now_ms=now_ms())
            assert not bad and value.startswith(b"[")
            out += [e for e in good if e["event_id"].startswith(prefix)]
        return out


def request(req: urllib.request.Request) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            return resp.status, orjson.loads(body) if body else {}, dict(resp.headers)
    except urllib.error.HTTPError as err:
        body = err.read()
        return err.code, orjson.loads(body) if body else {}, dict(err.headers)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def ev(eid: str, typ: str = "page_view", **extra: Any) -> dict[str, Any]:
    props = {"url": "/p"} if typ == "page_view" else {}
    return {"event_id": eid, "type": typ, "anonymous_id": "visitor-1", "timestamp": now_ms(),
            "properties": props, **extra}


@pytest.fixture(scope="module")
def collector(kafka_bootstrap: str, topic_prefix: str, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Running]:
    port = free_port()
    prefix = f"{topic_prefix}collector-"
    log = tmp_path_factory.mktemp("collector") / "collector.log"
    env = {
        "PATH": "/usr/bin:/bin", "SEGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SEGSTREAM_TOPIC_PREFIX": prefix, "SEGSTREAM_RAW_PARTITIONS": "1",
        "SEGSTREAM_COLLECTOR_PORT": str(port),
        "SEGSTREAM_COLLECTOR_WRITE_KEYS": ",".join(f"{k}={v}" for k, v in KEYS.items()),
        "SEGSTREAM_COLLECTOR_REVOKED_KEYS": sha(KEYS["old"]),
        "SEGSTREAM_COLLECTOR_CORS_ORIGINS": ORIGIN,
        "SEGSTREAM_COLLECTOR_RATE_PER_S": "5", "SEGSTREAM_COLLECTOR_RATE_BURST": str(BURST),
        "SEGSTREAM_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES),
        "SEGSTREAM_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
        "SEGSTREAM_MAX_EVENTS_PER_RECORD": str(MAX_EVENTS),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli.cmd_collector"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Running(f"http://127.0.0.1:{port}", f"{prefix}segstream-events", kafka_bootstrap,
                      log)
    try:
        wait_http_ready(running.url, proc, log)
        yield running
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert not any(key in text for key in KEYS.values()), "a write key reached the log"


def test_valid_single_and_batch(collector: Running) -> None:
    status, body, _ = collector.post(ev("v-1"), KEYS["web"])
    assert (status, body) == (200, {"accepted": 1, "rejected": []})
    batch = [ev(f"v-{i}", source="app") for i in range(2, 7)]
    assert collector.post(batch, KEYS["backend"], header="x-write-key")[:2] == (
        200, {"accepted": 5, "rejected": []})
    assert collector.post([], KEYS["web"])[:2] == (200, {"accepted": 0, "rejected": []})
    got = collector.events("v-")
    assert [e["event_id"] for e in got] == [f"v-{i}" for i in range(1, 7)]
    # the key's source is stamped on events without one; an event's own source is kept
    assert [e["source"] for e in got] == ["web"] + ["app"] * 5


def test_invalid_and_mixed(collector: Running) -> None:
    bad = [{"event_id": "i-1", "type": "nope", "anonymous_id": "a", "timestamp": now_ms()},
           ev("i-2", timestamp="yesterday"), 3]
    status, body, _ = collector.post(bad, KEYS["web"])
    assert status == 400 and body["accepted"] == 0
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (0, "unknown_type"), (1, "bad_timestamp"), (2, "not_object")]
    assert collector.post(bad[0], KEYS["web"])[:2] == (400, {"accepted": 0, "rejected": [
        {"index": 0, "code": "unknown_type", "message": body["rejected"][0]["message"]}]})
    mixed = [ev("m-1"), ev("m-2", customer_id=None, anonymous_id=None), ev("m-3"),
             ev("m-4", properties={"url": "/", "blob": "x" * MAX_EVENT_BYTES}), ev("m-5")]
    status, body, _ = collector.post(mixed, KEYS["web"], header="query")
    assert status == 207 and body["accepted"] == 3
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "missing_routing_id"), (3, "oversized")]
    status, body, _ = collector.post(None, KEYS["web"], raw=b'[{"event_id": ')
    assert (status, body["error"]["code"]) == (400, "unparsable")
    assert collector.events("i-") == []
    assert [e["event_id"] for e in collector.events("m-")] == ["m-1", "m-3", "m-5"]


def test_unauthorised(collector: Running) -> None:
    cases = [(None, "bearer", 401, "missing_key"),
             ("wrong-key-0123456789abcdef", "bearer", 401, "invalid_key"),
             ("wrong-key-0123456789abcdef", "x-write-key", 401, "invalid_key"),
             (KEYS["old"], "bearer", 403, "key_revoked"),
             (KEYS["old"], "query", 403, "key_revoked")]
    for key, header, want_status, want_code in cases:
        status, body, headers = collector.post([ev("u-1")], key, header=header)
        assert (status, body["error"]["code"]) == (want_status, want_code)
        assert key is None or key not in orjson.dumps(body).decode()
        if status == 401:
            assert headers["WWW-Authenticate"].startswith("Bearer")
    assert collector.events("u-") == []


def test_size_limits(collector: Running) -> None:
    big = [ev(f"s-{i}", properties={"url": "/", "pad": "y" * 1_500}) for i in range(14)]
    assert len(orjson.dumps(big)) > MAX_RECORD_BYTES
    status, body, _ = collector.post(big, KEYS["web"])
    assert (status, body["error"]["code"]) == (413, "oversized")
    many = [ev(f"s-{i}") for i in range(MAX_EVENTS + 1)]
    status, body, _ = collector.post(many, KEYS["backend"])
    assert (status, body["error"]["code"]) == (413, "too_many_events")
    assert collector.events("s-") == []


def test_cors(collector: Running) -> None:
    pre = urllib.request.Request(collector.url + "/v1/events", method="OPTIONS", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-write-key"})
    status, _, headers = request(pre)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "X-Write-Key" in headers["Access-Control-Allow-Headers"]
    pre.headers["Origin"] = "https://evil.example"
    assert request(pre)[0] == 403
    status, _, headers = collector.post([ev("c-1")], KEYS["cors"], header="x-write-key",
                                        origin=ORIGIN)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN
    status, body, headers = collector.post([ev("c-2")], KEYS["cors"], origin="https://evil.example")
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in headers
    assert [e["event_id"] for e in collector.events("c-")] == ["c-1"]


def test_rate_limited_burst(collector: Running) -> None:
    # 5 events/s, bucket of 100: two 40-event batches pass, the third waits about 4 s
    answers = [collector.post([ev(f"r-{j}-{i}") for i in range(40)], KEYS["burst"])
               for j in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert answers[2][1]["error"]["code"] == "rate_limited"
    assert 1 <= int(answers[2][2]["Retry-After"]) <= 5
    # other keys have buckets of their own
    assert collector.post([ev("r-other")], KEYS["web"])[0] == 200
    got = [e["event_id"] for e in collector.events("r-")]
    assert got == [f"r-{j}-{i}" for j in range(2) for i in range(40)] + ["r-other"]


def test_health_and_metrics(collector: Running) -> None:
    assert request(urllib.request.Request(collector.url + "/health"))[:2] == (
        200, {"status": "ok"})
    assert request(urllib.request.Request(collector.url + "/ready"))[:2] == (
        200, {"status": "ready"})
    with urllib.request.urlopen(collector.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "segstream_collector_requests_total" in text
    assert "segstream_collector_events_total" in text


def test_probes_while_kafka_is_unreachable(tmp_path: Path) -> None:
    """The probes the manifests use, on a collector whose broker does not answer: /health (startup,
    liveness) is 200, so the pod is not restarted; /ready (readiness, compose healthcheck) is 503
    with its reason, and a POST is refused with 503 rather than lost. Logs as JSON lines."""
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    log = tmp_path / "collector.log"
    env = {"PATH": "/usr/bin:/bin", "SEGSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}",
           "SEGSTREAM_COLLECTOR_PORT": str(port),
           "SEGSTREAM_COLLECTOR_WRITE_KEYS": f"web={KEYS['web']}", "SEGSTREAM_LOG_FORMAT": "json"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli.cmd_collector"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Running(f"http://127.0.0.1:{port}", "unused", "unused", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = request(urllib.request.Request(running.url + "/health"))
                break
            except OSError:  # not listening yet
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert health[:2] == (200, {"status": "ok"})
        time.sleep(2)  # a few connection attempts have failed by now
        assert request(urllib.request.Request(running.url + "/ready"))[:2] == (
            503, {"status": "not_ready", "reasons": ["not connected to Kafka yet"]})
        status, body, headers = running.post(ev("p-1"), KEYS["web"])
        assert (status, body["error"]["code"], headers["Retry-After"]) == (503, "starting", "1")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    # SEGSTREAM_LOG_FORMAT=json: every line is a JSON record, the access log included
    records = [orjson.loads(line) for line in log.read_text().splitlines()]
    messages = [r["message"] for r in records if r["logger"].startswith("segstream")]
    assert any("not reachable" in m for m in messages)
    assert any("GET /ready 503" in r["message"] for r in records if r["logger"] == "aiohttp.access")
    assert KEYS["web"] not in log.read_text()
