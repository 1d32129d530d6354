"""The worker keeps its promises under faults, on the real broker and a real Redis:

- SIGKILL mid-stream (three times, once while Redis refuses writes so the kill lands between
  the changes' produce and the Redis commit), restarted each time;
- a rebalance (a second worker joins mid-stream), a zombie (one worker frozen with SIGSTOP
  until the other took its partitions over, then resumed: its stale commits must be fenced),
  and a SIGKILL of one of the two (the survivor takes its partitions over).

End checks each time: Redis membership == the offline replay of the same events at one
instant; the change log is consistent per (customer, segment) (versions 1..n, alternating,
repeats allowed, never two actions for one version) and implies exactly Redis's membership and
versions. Figures (events, changes, duplicates, recovery times, peak RSS) are printed (-s).

Both tests use a Redis of their own (``CLIENT PAUSE`` must not stall other test sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from .pipeline import (
    Feeder,
    Pipeline,
    changes_of,
    check_end_state,
    flapping_events,
    leased_server,
    log_versions,
    make_pipeline,
    metric,
    peak_rss_mb,
    produce,
    redis_cmd,
    redis_view,
    slow_segments,
    topic_size,
    wait_caught_up,
    wait_for,
)
from .support import Worker, free_port

WAIT_S = 150.0

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server of this module only (deploy/local/redis.sh, leased by this pytest)."""
    port = free_port()
    env = {"SEGSTREAM_REDIS_PORT": str(port), "SEGSTREAM_REDIS_FRESH": "1",
           "SEGSTREAM_REDIS_DATA": str(tmp_path_factory.mktemp("redis-faults")),
           "SEGSTREAM_REDIS_PASSWORD": ""}
    with leased_server("redis.sh", env, "a private Redis"):
        yield f"redis://127.0.0.1:{port}/0"


def in_flight(p: Pipeline, customers: list[str]) -> int:
    """(customer, segment) pairs whose change log is ahead of Redis: changes produced but not
    committed (what a kill between produce and commit leaves; re-emitted after a restart)."""
    logged = log_versions([ch for _, ch in changes_of(p.bootstrap, p.names["changes"])])
    _, _, versions = redis_view(p.redis_url, p.names["namespace"], customers,
                                p.bundle_partitions)
    return sum(1 for k, v in logged.items() if v > versions.get(k, 0))


def pause_until_produced(p: Pipeline, worker: Worker, pause_ms: int = 4_000) -> None:
    """Pause Redis writes (``CLIENT PAUSE ms WRITE``) until changes are produced meanwhile:
    their commit is then waiting. Returns with Redis still paused; the pause ends by itself
    after ``pause_ms``, below redis-py's 5 s socket timeout (a longer stall crashes the agent:
    see test_redis_stall_beyond_the_client_timeout_loses_no_events)."""
    for _ in range(10):
        started = time.monotonic()
        redis_cmd(p.redis_url, "CLIENT", "PAUSE", pause_ms, "WRITE")
        mark = topic_size(p.bootstrap, p.names["changes"])
        while (time.monotonic() - started) * 1000 < pause_ms - 1_000:
            if topic_size(p.bootstrap, p.names["changes"]) > mark:
                return
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            time.sleep(0.05)
        redis_cmd(p.redis_url, "CLIENT", "UNPAUSE")
        time.sleep(0.5)  # let the blocked commit through before the next try
    pytest.fail("no change was produced while Redis was paused (10 tries)")


class HoldingProxy:
    """A TCP proxy to Redis that can hold commits: while ``hold()`` is on, a connection that
    sends an ``EVALSHA`` (the commit script) is held, that command and whatever follows it on
    the connection waiting in the proxy until ``release()`` (a commit "in the network");
    reads pass, so the worker keeps loading states and producing changes."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open = threading.Event()
        self.open.set()
        self.held = 0  # commits held
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        self.held = 0
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.closed = True
        self.open.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream and not self.open.is_set() and b"EVALSHA" in data[:64].upper():
                    self.held += 1
                    self.open.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


CLAIM = re.compile(r"claimed bundle partition (\d+) \(epoch (\d+)")


def claims(w: Worker) -> list[tuple[int, int]]:
    """(partition, epoch) of every claim in the worker's current log."""
    log = w.log_path.with_suffix(f".{w.runs}.log")
    text = log.read_text(errors="replace") if log.exists() else ""
    return [(int(a), int(b)) for a, b in CLAIM.findall(text)]


def test_sigkill_mid_stream_keeps_state_and_changes_consistent(
    kafka_bootstrap: str, private_redis: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    segments = slow_segments(tmp_path)
    # small bundles and batches: many Redis commits, so kills land inside the stream
    p = make_pipeline(kafka_bootstrap, private_redis, unique_topic_prefix, tmp_path, segments,
                      SEGSTREAM_BUNDLE_MAX_EVENTS="10", SEGSTREAM_SEGMENT_BATCH_RECORDS="4")
    now = int(time.time() * 1000)
    events = flapping_events(random.Random(11), now, customers=600, per_customer=8)
    customers = sorted({str(ev["customer_id"]) for ev in events})
    head = len(events) // 5
    produce(kafka_bootstrap, p.names["raw"], events[:head], partitions=p.raw_partitions)
    worker = p.worker()
    feeder = Feeder(p, events[head:], pace_s=0.3)  # still feeding at the third kill
    try:
        started = time.monotonic()
        worker.start()
        wait_for("the first changes", lambda: topic_size(kafka_bootstrap, p.names["changes"])
                 > 0, [worker])
        print(f"\nfirst change {time.monotonic() - started:.1f} s after the start")
        clock = time.monotonic
        feeder.start()
        recoveries: list[float] = []
        rss: list[float] = []
        inflight: list[int] = []
        for k, share in enumerate((0.3, 0.5, 0.7)):
            base = topic_size(kafka_bootstrap, p.names["changes"])
            wait_for(f"kill point {k}", lambda s=share, b=base: (
                head + feeder.sent >= s * len(events)
                and topic_size(kafka_bootstrap, p.names["changes"]) >= b + 100), [worker])
            paused = k == 1
            if paused:  # Redis refuses writes: the next batch is produced, then its commit waits
                pause_until_produced(p, worker)
            rss.append(peak_rss_mb(worker) or 0.0)
            worker.kill()
            if paused:
                redis_cmd(private_redis, "CLIENT", "UNPAUSE")
            inflight.append(in_flight(p, customers))
            at_kill = topic_size(kafka_bootstrap, p.names["changes"])
            worker.start()
            recoveries.append(wait_for(
                "changes after the restart", lambda a=at_kill: topic_size(
                    kafka_bootstrap, p.names["changes"]) > a, [worker]))
            print(f"[{clock() - started:.0f} s] kill {k} "
                  f"({'Redis paused' if paused else 'free running'}): "
                  f"{head + feeder.sent}/{len(events)} events sent, {at_kill} changes logged, "
                  f"{inflight[-1]} (customer, segment) produced but not committed; next change "
                  f"{recoveries[-1]:.1f} s after the restart")
        assert inflight[1] > 0, "the kill under a paused Redis must land before the commit"
        feeder.finish()
        print(f"[{clock() - started:.0f} s] all events sent")
        prog = wait_caught_up(p, len(events), [worker], timeout_s=WAIT_S)
        print(f"[{clock() - started:.0f} s] caught up")
        rss.append(peak_rss_mb(worker) or 0.0)
        report = check_end_state(p, events, segments)
        redelivered = metric(worker, "segstream_redelivered_bundles_total")
        print(f"events {len(events)} ({prog.bundled_events - len(events)} duplicated by ingest), "
              f"customers {len(customers)}, changes logged {report.changes}, duplicates seen "
              f"downstream {report.duplicates}, sizes {report.sizes()}, bundles skipped as "
              f"applied after the last restart {redelivered}, peak RSS per run "
              f"{[round(r) for r in rss]} MiB, recoveries {[round(r, 1) for r in recoveries]} s")
        assert report.duplicates > 0, "kills before the commit must re-emit some changes"
        assert worker.stop() == 0, worker.log_tail()
    finally:
        redis_cmd(private_redis, "CLIENT", "UNPAUSE")
        if feeder.is_alive():
            feeder.join(timeout=WAIT_S)
        p.stop_all()


def test_rebalance_zombie_and_takeover(
    kafka_bootstrap: str, private_redis: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    segments = slow_segments(tmp_path)
    p = make_pipeline(kafka_bootstrap, private_redis, unique_topic_prefix, tmp_path, segments,
                      SEGSTREAM_BUNDLE_MAX_EVENTS="10", SEGSTREAM_SEGMENT_BATCH_RECORDS="4")
    parts = set(range(p.bundle_partitions))
    now = int(time.time() * 1000)
    events = flapping_events(random.Random(23), now, customers=500, per_customer=8)
    head = len(events) // 5
    produce(kafka_bootstrap, p.names["raw"], events[:head], partitions=p.raw_partitions)
    a, b = p.worker("a"), p.worker("b")
    # the last quarter is held back until B is killed: A must process it alone
    feeder = Feeder(p, events[head:], pace_s=0.4, hold_at=(len(events) - head) * 3 // 4)
    try:
        a.start()
        wait_for("A's first changes", lambda: topic_size(kafka_bootstrap, p.names["changes"])
                 > 0, [a])
        feeder.start()
        # 1. rebalance: B joins mid-stream and gets some of the partitions
        b.start()
        took = wait_for("B processing", lambda: (metric(b, "segstream_segment_events_total")
                                                 or 0) > 0, [a, b])
        print(f"\nB joined: processing {took:.1f} s after its start; A claimed {claims(a)}, "
              f"B claimed {claims(b)}")
        # 2. zombie: A frozen; after the session timeout B owns everything; A resumes
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        try:
            took = wait_for("B to claim every partition", lambda: {
                q for q, _ in claims(b)} == parts, [b])
        finally:
            a.proc.send_signal(signal.SIGCONT)
        print(f"A frozen: B owned all partitions {took:.1f} s later (session timeout 10 s); "
              f"B claimed {claims(b)}")
        resumed = time.monotonic()
        a_events = metric(a, "segstream_segment_events_total") or 0
        wait_for("A processing again", lambda: (metric(a, "segstream_segment_events_total")
                                                or 0) > a_events, [a, b])
        print(f"A resumed: processing again {time.monotonic() - resumed:.1f} s later; fenced "
              f"commits A={metric(a, 'segstream_fenced_commits_total')} "
              f"B={metric(b, 'segstream_fenced_commits_total')}; A claimed {claims(a)}")
        # 3. takeover: B killed; A takes its partitions over
        rss_b = peak_rss_mb(b)
        fenced_b = metric(b, "segstream_fenced_commits_total")
        b_claims = {q for q, _ in claims(b)}
        b.kill()
        killed = time.monotonic()
        before = len(claims(a))
        _, at_kill, _ = redis_view(private_redis, p.names["namespace"], [], p.bundle_partitions)
        feeder.release()
        wait_for("A to claim B's partitions", lambda: len(claims(a)) > before, [a])
        print(f"B killed (it had claimed {sorted(b_claims)}): A claimed {claims(a)[before:]} "
              f"{time.monotonic() - killed:.1f} s later")
        feeder.finish()
        prog = wait_caught_up(p, len(events), [a], timeout_s=WAIT_S)
        # B is dead: every partition moved on since the kill, so A processed them all
        assert all((o or -1) > (k or -1) for o, k in zip(prog.offsets, at_kill, strict=True)), (
            prog.offsets, at_kill)
        report = check_end_state(p, events, segments)
        epochs: dict[int, int] = {}
        for q, e in claims(a) + claims(b):
            epochs[q] = max(epochs.get(q, 0), e)
        print(f"events {len(events)} ({prog.bundled_events - len(events)} duplicated by "
              f"ingest), changes logged {report.changes}, duplicates seen downstream "
              f"{report.duplicates}, sizes {report.sizes()}; fenced commits A="
              f"{metric(a, 'segstream_fenced_commits_total')} B={fenced_b}, seeks A="
              f"{metric(a, 'segstream_offset_seeks_total')}, highest epoch per partition "
              f"{epochs}, peak RSS A={peak_rss_mb(a)} B={rss_b} MiB")
        assert a.stop() == 0, a.log_tail()
    finally:
        for w in (a, b):
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
        if feeder.is_alive():
            feeder.join(timeout=WAIT_S)
        p.stop_all()


def test_redis_stall_beyond_the_client_timeout_loses_no_events(
    kafka_bootstrap: str, private_redis: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    segments = slow_segments(tmp_path)
    p = make_pipeline(kafka_bootstrap, private_redis, unique_topic_prefix, tmp_path, segments,
                      SEGSTREAM_BUNDLE_MAX_EVENTS="10", SEGSTREAM_SEGMENT_BATCH_RECORDS="4")
    events = flapping_events(random.Random(5), int(time.time() * 1000), customers=400,
                             per_customer=8)
    produce(kafka_bootstrap, p.names["raw"], events, partitions=p.raw_partitions)
    worker = p.worker()
    try:
        worker.start()
        wait_for("the first changes", lambda: topic_size(kafka_bootstrap, p.names["changes"])
                 > 0, [worker])
        # Redis refuses writes for 8 s (e.g. a slow fork, a failover): a commit waits longer
        # than redis-py's 5 s socket timeout. The worker must retry that commit (the partition
        # waits, lag grows), never move past the batch.
        redis_cmd(private_redis, "CLIENT", "PAUSE", 8_000, "WRITE")
        wait_caught_up(p, len(events), [worker], timeout_s=WAIT_S)
        log = worker.log_path.with_suffix(".1.log").read_text(errors="replace")
        print(f"\nRedis retries: {log.count('retrying in')}, agent crashes: "
              f"{log.count('Crashed reason')}, gaps skipped: {log.count('are gone from Kafka')}")
        assert log.count("retrying in") >= 1, "the stall must have caught a Redis call"
        assert log.count("are gone from Kafka") == 0
        report = check_end_state(p, events, segments)
        print(f"events {len(events)}, changes {report.changes}, duplicates {report.duplicates}")
        assert worker.stop() == 0, worker.log_tail()
    finally:
        redis_cmd(private_redis, "CLIENT", "UNPAUSE")
        p.stop_all()


def test_a_zombie_commit_is_fenced(
    kafka_bootstrap: str, private_redis: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    """A owns every partition; its Redis traffic is held in a proxy right after it produced
    a batch's changes (so its commit is on the way) and A is frozen (SIGSTOP). B joins, gets
    every partition after A's session timeout and claims them (higher epochs). Then the
    held commit reaches Redis and A resumes: the commit must be FENCED (nothing of it
    written), A drops the partition, and the end state is still exactly the replay's."""
    segments = slow_segments(tmp_path)
    proxy = HoldingProxy(int(private_redis.rsplit(":", 1)[1].split("/", maxsplit=1)[0]))
    p = make_pipeline(kafka_bootstrap, private_redis, unique_topic_prefix, tmp_path, segments,
                      SEGSTREAM_BUNDLE_MAX_EVENTS="10", SEGSTREAM_SEGMENT_BATCH_RECORDS="4")
    parts = set(range(p.bundle_partitions))
    events = flapping_events(random.Random(31), int(time.time() * 1000), customers=400,
                             per_customer=8)
    head = len(events) // 4
    produce(kafka_bootstrap, p.names["raw"], events[:head], partitions=p.raw_partitions)
    # A reaches Redis through the proxy; a long socket timeout keeps the held commit waiting
    a = p.worker("a", SEGSTREAM_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=120")
    b = p.worker("b")
    feeder = Feeder(p, events[head:], pace_s=0.25, hold_at=(len(events) - head) // 2)
    try:
        a.start()
        wait_for("A's first changes", lambda: topic_size(kafka_bootstrap, p.names["changes"])
                 > 0, [a])
        feeder.start()
        wait_for("A owning every partition", lambda: {q for q, _ in claims(a)} == parts, [a])
        proxy.hold()
        # the agent commits only after its batch's changes are acknowledged: a held EVALSHA
        # is a batch whose changes are out and whose state is not written
        wait_for("a commit of A held", lambda: proxy.held > 0, [a], timeout_s=30)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        try:
            b.start()
            took = wait_for("B to claim every partition", lambda: {
                q for q, _ in claims(b)} == parts, [b])
            print(f"\nA frozen with {proxy.held} commit(s) held; B claimed {claims(b)} "
                  f"{took:.1f} s after its start")
            proxy.release()
        finally:
            a.proc.send_signal(signal.SIGCONT)
        wait_for("A's stale commit fenced", lambda: (metric(
            a, "segstream_fenced_commits_total") or 0) >= 1, [a, b], timeout_s=60)
        feeder.release()
        feeder.finish()
        prog = wait_caught_up(p, len(events), [a, b], timeout_s=WAIT_S)
        report = check_end_state(p, events, segments)
        print(f"events {len(events)} ({prog.bundled_events - len(events)} duplicated by "
              f"ingest), changes logged {report.changes}, duplicates seen downstream "
              f"{report.duplicates}; fenced commits A={metric(a, 'segstream_fenced_commits_total')}"
              f" B={metric(b, 'segstream_fenced_commits_total')}; claims A={claims(a)} "
              f"B={claims(b)}")
        assert a.stop() == 0, a.log_tail()
        assert b.stop() == 0, b.log_tail()
    finally:
        proxy.release()
        for w in (a, b):
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
        if feeder.is_alive():
            feeder.release()
            feeder.join(timeout=WAIT_S)
        p.stop_all()
        proxy.close()


def snapshot(url: str, namespace: str) -> dict[bytes, bytes]:
    """DUMP of every key of ``namespace`` (a point-in-time copy of the worker's Redis data)."""

    async def run() -> dict[bytes, bytes]:
        client = Redis.from_url(url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{namespace}*", count=1000)]
            return {k: await client.dump(k) for k in keys}
        finally:
            await client.aclose()

    return asyncio.run(run())


def restore(url: str, namespace: str, dumps: dict[bytes, bytes]) -> None:
    """Replace every key of ``namespace`` with ``dumps`` (Redis "lost" the later writes)."""

    async def run() -> None:
        client = Redis.from_url(url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{namespace}*", count=1000)]
            if keys:
                await client.delete(*keys)
            for k, v in dumps.items():
                await client.restore(k, 0, v)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_redis_losing_recent_writes_is_caught_up_from_kafka(
    kafka_bootstrap: str, private_redis: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    """Redis comes back with older data (failover to a lagging replica, an older AOF): Kafka's
    committed offsets are ahead of the offsets stored in Redis. When new bundles arrive the
    worker must read the lost ones again from Kafka and end with the exact state."""
    segments = slow_segments(tmp_path)
    p = make_pipeline(kafka_bootstrap, private_redis, unique_topic_prefix, tmp_path, segments,
                      SEGSTREAM_BUNDLE_MAX_EVENTS="10", SEGSTREAM_SEGMENT_BATCH_RECORDS="4")
    events = flapping_events(random.Random(41), int(time.time() * 1000), customers=400,
                             per_customer=8)
    third = len(events) // 3
    worker = p.worker()
    feeder = Feeder(p, events[2 * third:], pace_s=0.1)
    try:
        produce(kafka_bootstrap, p.names["raw"], events[:third], partitions=p.raw_partitions)
        worker.start()
        wait_caught_up(p, third, [worker])
        saved = snapshot(private_redis, p.names["namespace"])
        _, saved_offsets, _ = redis_view(private_redis, p.names["namespace"], [],
                                         p.bundle_partitions)
        produce(kafka_bootstrap, p.names["raw"], events[third:2 * third],
                partitions=p.raw_partitions)
        wait_caught_up(p, 2 * third, [worker])
        assert worker.stop() == 0, worker.log_tail()
        restore(private_redis, p.names["namespace"], saved)
        print(f"\nRedis rolled back to offsets {saved_offsets} ({len(saved)} keys)")
        worker.start()
        feeder.start()
        feeder.finish()
        prog = wait_caught_up(p, len(events), [worker], timeout_s=90)
        report = check_end_state(p, events, segments)
        print(f"events {len(events)}, changes {report.changes}, duplicates "
              f"{report.duplicates}, seeks {metric(worker, 'segstream_offset_seeks_total')}, "
              f"offsets {prog.offsets}")
        assert worker.stop() == 0, worker.log_tail()
    finally:
        if feeder.is_alive():
            feeder.join(timeout=WAIT_S)
        p.stop_all()
