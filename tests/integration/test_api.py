"""The membership API on a real worker (real Kafka, real Redis), and `segstream redis-rebuild`
repairing corrupted membership keys of the same data."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from redis.asyncio import Redis

from schemas.partitioner import partition_for
from state.codec import encode_state
from state.model import CustomerState
from state.redis_store import RedisStore
from state.store import Commit, MemberOp
from stream import redis_rebuild

from .support import REPO, Worker, create_topic, free_port, read_all

SEGMENTS = REPO / "tests" / "fixtures" / "live_segments.yaml"
BUNDLE_PARTITIONS = 4
CUSTOMERS = 700  # ~150 germans per partition: hashtable sets on every Redis (SSCAN steps)
VIEWERS = 40  # customers with two page views: small sets (listpack, whole-set steps, on 7.2+)
TOKEN = "integration-token-0123456789"
REVOKED = "revoked-token-0123456789ab"
WAIT_S = 180


def cid(i: int) -> str:
    return f"cust-{i:04d}"


def make_events(now: int) -> list[dict[str, Any]]:
    """Everyone identifies (every 7th is French); the first VIEWERS view two pages."""
    def event(eid: str, typ: str, i: int, ts: int, props: dict[str, Any]) -> dict[str, Any]:
        return {"event_id": eid, "type": typ, "customer_id": cid(i), "timestamp": ts,
                "properties": props}

    events = [event(f"id-{i}", "identify", i, now - 60_000 + i,
                    {"traits": {"country": "FR" if i % 7 == 0 else "DE"}})
              for i in range(CUSTOMERS)]
    events += [event(f"pv-{i}-{k}", "page_view", i, now - 30_000 + k, {"url": f"/p/{k}"})
               for i in range(VIEWERS) for k in range(2)]
    return events


class Http:
    """GET requests to the worker's web server: (status, JSON body)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, token: str | None = TOKEN, **query: Any
            ) -> tuple[int, dict[str, Any]]:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, orjson.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, orjson.loads(err.read())

    def walk(self, segment: str, limit: int) -> tuple[list[str], list[int]]:
        """Every member over all pages; (members, size of each page)."""
        members: list[str] = []
        cursor: str | None = None
        pages: list[int] = []
        while True:
            query: dict[str, Any] = {"limit": limit}
            if cursor:
                query["cursor"] = cursor
            status, body = self.get(f"/segments/{segment}/members", **query)
            assert status == 200, body
            members += body["members"]
            pages.append(len(body["members"]))
            cursor = body["next_cursor"]
            if cursor is None:
                return members, pages


@pytest.fixture
def served(kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str,
           tmp_path: Path) -> Iterator[tuple[Worker, dict[str, str]]]:
    names = {"raw": f"{unique_topic_prefix}segstream-events",
             "bundles": f"{unique_topic_prefix}segstream-bundles",
             "namespace": f"api{uuid.uuid4().hex[:8]}:", "port": str(free_port())}
    assert create_topic(kafka_bootstrap, unique_topic_prefix, "raw", 2) == names["raw"]
    env = {
        "SEGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SEGSTREAM_REDIS_URL": redis_url,
        "SEGSTREAM_REDIS_NAMESPACE": names["namespace"],
        "SEGSTREAM_TOPIC_PREFIX": unique_topic_prefix,
        "SEGSTREAM_RAW_PARTITIONS": "2",
        "SEGSTREAM_BUNDLE_PARTITIONS": str(BUNDLE_PARTITIONS),
        "SEGSTREAM_SEGMENTS_FILE": str(SEGMENTS),
        "SEGSTREAM_WEB_PORT": names["port"],
        "SEGSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SEGSTREAM_SESSION_TIMEOUT_MS": "10000",
        "SEGSTREAM_API_TOKENS": f"{TOKEN},{REVOKED}",
        "SEGSTREAM_API_REVOKED_TOKENS": hashlib.sha256(REVOKED.encode()).hexdigest(),
        "PATH": "/usr/bin:/bin",
    }
    w = Worker(env, tmp_path / "worker")
    try:
        yield w, names
    finally:
        w.stop()


async def offsets(url: str, namespace: str) -> list[int | None]:
    client = Redis.from_url(url)
    try:
        store = RedisStore(client, namespace=namespace)
        return [await store.applied_offset(p) for p in range(BUNDLE_PARTITIONS)]
    finally:
        await client.aclose()


async def snapshot(url: str, namespace: str) -> dict[str, Any]:
    """Every key of the namespace with its value (sets as sorted lists)."""
    client = Redis.from_url(url)
    out: dict[str, Any] = {}
    try:
        async for raw in client.scan_iter(match=namespace + "*", count=1000):
            key = raw.decode()
            kind = (await client.type(key)).decode()
            if kind == "set":
                out[key] = sorted(await client.smembers(key))
            elif kind == "hash":
                out[key] = await client.hgetall(key)
            elif kind == "zset":
                out[key] = await client.zrange(key, 0, -1, withscores=True)
            else:
                out[key] = await client.get(key)
    finally:
        await client.aclose()
    return out


def wait_applied(worker: Worker, bootstrap: str, names: dict[str, str], redis_url: str,
                 n_events: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited ({worker.proc.returncode}):\n{worker.log_tail()}")
        bundles = read_all(bootstrap, names["bundles"])
        bundled = sum(len(orjson.loads(v)["events"]) for _, _, v in bundles)
        stored = asyncio.run(offsets(redis_url, names["namespace"]))
        last = {p: o for p, o, _ in bundles}
        if bundled == n_events and all(stored[p] == o for p, o in last.items()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timeout: {bundled}/{n_events} bundled\n{worker.log_tail()}")
        time.sleep(0.5)


def wait_ready(http: Http, worker: Worker) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            status, body = http.get("/ready", token=None)
            if status == 200:
                return body
        except OSError:  # the web server is not listening yet
            body = {}
        if time.monotonic() > deadline:
            pytest.fail(f"never ready: {body}\n{worker.log_tail()}")
        time.sleep(0.3)


def test_api_routes_auth_paging_and_rebuild(
    kafka_bootstrap: str, redis_url: str, served: tuple[Worker, dict[str, str]]
) -> None:
    worker, names = served
    events = make_events(int(time.time() * 1000))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(0, len(events), 50):
        producer.send(names["raw"], orjson.dumps(events[i:i + 50]), partition=(i // 50) % 2)
    producer.flush()
    producer.close()
    worker.start()
    http = Http(int(names["port"]))
    assert wait_ready(http, worker) == {"status": "ready"}
    wait_applied(worker, kafka_bootstrap, names, redis_url, len(events))

    germans = {cid(i) for i in range(CUSTOMERS) if i % 7}
    viewers = {cid(i) for i in range(VIEWERS)}

    # health and metrics need no token
    assert http.get("/health", token=None) == (200, {"status": "ok"})
    with urllib.request.urlopen(http.base + "/metrics", timeout=10) as resp:
        assert resp.status == 200 and b"segstream" in resp.read()

    # a customer's segments, on its partition
    status, body = http.get(f"/customers/{cid(1)}/segments")
    assert status == 200
    assert body == {"customer_id": cid(1), "partition": partition_for(cid(1), BUNDLE_PARTITIONS),
                    "segments": [{"segment": "german", "version": 1},
                                 {"segment": "viewers_1h", "version": 1}]}, (
        body, worker.log_tail(60))
    assert http.get(f"/customers/{cid(0)}/segments")[1]["segments"] == [
        {"segment": "viewers_1h", "version": 1}]  # French: known, one segment
    took = []
    for i in range(100):
        t = time.perf_counter()
        assert http.get(f"/customers/{cid(i)}/segments")[0] == 200
        took.append(time.perf_counter() - t)
    took.sort()
    print(f"GET /customers/{{id}}/segments over HTTP (urllib, new connection each): "
          f"p50 {took[50] * 1000:.1f} ms, p99 {took[98] * 1000:.1f} ms")
    status, body = http.get("/customers/never-seen/segments")
    assert (status, body["error"]["code"]) == (404, "customer_not_found")

    # definitions with sizes summed over the partitions
    status, body = http.get("/segments")
    assert status == 200 and body["definitions_version"] == "live-1"
    sizes = {s["name"]: s["size"] for s in body["segments"]}
    assert sizes == {"viewers_1h": VIEWERS, "buyers_1h": 0, "german": len(germans),
                     "cart_open": 0, "opened_recently": 0}

    # paging: every member, across partitions and many pages; big pages too
    for segment, expected in (("german", germans), ("viewers_1h", viewers)):
        for limit in (7, 1000):
            members, pages = http.walk(segment, limit)
            assert set(members) == expected, (segment, limit)
            assert len(members) == len(expected), "nothing changes: each member exactly once"
            print(f"{segment} limit {limit}: {len(pages)} pages, largest {max(pages)}")
            if limit == 7:  # Redis < 7.2 keeps even small sets as hashtables: an SSCAN
                # step cannot be split, so a page may exceed the limit by part of one step
                assert len(pages) >= len(expected) // 14
                assert sum(pages[:-1]) / (len(pages) - 1) <= 2 * limit
    status, body = http.get("/segments/nope/members")
    assert (status, body["error"]["code"]) == (404, "unknown_segment")
    status, body = http.get("/segments/german/members", limit=5000)
    assert (status, body["error"]["code"]) == (400, "invalid_limit")

    # authentication
    for token, expected_status, code in ((None, 401, "missing_token"),
                                         ("not-a-valid-token-at-all", 401, "invalid_token"),
                                         (REVOKED, 403, "token_revoked")):
        status, body = http.get("/segments", token=token)
        assert (status, body["error"]["code"]) == (expected_status, code)
        assert TOKEN not in str(body) and REVOKED not in str(body)
    log = worker.log_tail(10_000)
    assert TOKEN not in log and REVOKED not in log

    # redis-rebuild: corrupt the membership keys (worker stopped: nothing commits meanwhile)
    assert worker.stop() == 0, worker.log_tail()
    before = asyncio.run(snapshot(redis_url, names["namespace"]))
    asyncio.run(corrupt(redis_url, names["namespace"]))
    assert asyncio.run(snapshot(redis_url, names["namespace"])) != before
    out = rebuild(worker.env)
    assert "m:german: +1 -1" in out and "stale deleted" in out and "sizes[german]" in out, out
    assert asyncio.run(snapshot(redis_url, names["namespace"])) == before
    again = rebuild(worker.env)
    assert again.count("membership consistent") == BUNDLE_PARTITIONS, again


async def corrupt(url: str, namespace: str) -> None:
    client = Redis.from_url(url)
    try:
        store = RedisStore(client, namespace=namespace)
        p = partition_for(cid(1), BUNDLE_PARTITIONS)
        await client.srem(store.key(p, "m:german"), cid(1))  # a member lost
        await client.sadd(store.key(p, "m:german"), "intruder")  # a member invented
        await client.delete(store.key(p, f"c:{cid(2)}"))  # versions lost
        await client.hset(store.key(p, "c:ghost"), "german", 1)  # a customer without state
        await client.hset(store.key(p, "sizes"), "german", 999)
        q = (p + 1) % BUNDLE_PARTITIONS
        await client.delete(store.key(q, "m:viewers_1h"))  # a whole set lost
    finally:
        await client.aclose()


def rebuild(env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "redis-rebuild"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def encoded(customer: str, versions: dict[str, int]) -> bytes:
    st = CustomerState(customer, 1_000)
    st.orphans = dict(versions)  # an unbound state keeps its versions there
    return encode_state(st)


def test_rebuild_retries_when_a_commit_lands_and_gives_up_when_it_keeps_changing(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        store = RedisStore(client, namespace=f"rb{uuid.uuid4().hex[:8]}:")
        try:
            epoch = await store.claim(0)
            await store.commit(Commit(0, epoch, offset=1, states={
                "a": encoded("a", {"s": 1}), "b": encoded("b", {"s": 2, "t": 1})},
                members=[MemberOp("a", "s", 1), MemberOp("b", "s", 2), MemberOp("b", "t", 1)]))
            consistent = await redis_rebuild.rebuild_partition(client, store, 0)
            assert consistent is not None and not consistent.changed and consistent.states == 2
            await client.srem(store.key(0, "m:t"), "b")  # corrupt

            dry = await redis_rebuild.rebuild_partition(client, store, 0, dry_run=True)
            assert dry is not None and dry.added == {"t": 1}
            assert not await client.sismember(store.key(0, "m:t"), "b")  # nothing written

            real_actual = redis_rebuild._actual
            calls = 0

            async def concurrent_commit(*args: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls <= limit:  # a worker commit lands between WATCH and EXEC
                    await client.hset(store.key(0, "state"), "a", encoded("a", {"s": 1}))
                return await real_actual(*args)

            monkeypatch.setattr(redis_rebuild, "_actual", concurrent_commit)
            limit = 3
            assert await redis_rebuild.rebuild_partition(client, store, 0, retries=3) is None
            assert not await client.sismember(store.key(0, "m:t"), "b")  # left as it was
            calls, limit = 0, 1
            fixed = await redis_rebuild.rebuild_partition(client, store, 0, retries=3)
            assert calls == 2 and fixed is not None and fixed.added == {"t": 1}
            assert await client.sismember(store.key(0, "m:t"), "b")
            assert await store.sizes([0]) == {"s": 1, "t": 1}
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_json_logs_of_a_worker(served: tuple[Worker, dict[str, str]]) -> None:
    """SEGSTREAM_LOG_FORMAT=json: every line the worker writes, Faust's own included, from
    start-up to a clean stop, is one JSON object; no banner, no token."""
    worker, names = served
    worker.start(SEGSTREAM_LOG_FORMAT="json", SEGSTREAM_LOG_LEVEL="info")
    wait_ready(Http(int(names["port"])), worker)
    assert worker.stop() == 0
    text = worker.log_path.with_suffix(f".{worker.runs}.log").read_text()
    records = [orjson.loads(line) for line in text.splitlines()]
    assert len(records) > 20
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    loggers = {r["logger"].split(".")[0] for r in records}
    assert {"faust", "stream"} <= loggers
    assert TOKEN not in text


def test_a_relative_data_dir_starts(served: tuple[Worker, dict[str, str]],
                                    tmp_path: Path) -> None:
    """SEGSTREAM_DATA_DIR relative to the working directory, as its default `.run/data` is:
    Faust changes into the directory, the worker must still find (create) it."""
    worker, names = served
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    log = tmp_path / "relative.log"
    env = {**worker.env, "SEGSTREAM_DATA_DIR": "rel/data"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    relative = Worker(env, tmp_path / "unused", proc=proc)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                if Http(int(names["port"])).get("/ready", token=None)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        assert (cwd / "rel" / "data").is_dir()
    finally:
        assert relative.stop() == 0, log.read_text()[-3000:]
