"""The local infrastructure itself: real Kafka and Redis round trips, and the start scripts.

These check what every other integration test relies on: the broker creates topics with the
asked partition count, keeps per-key order on one partition and hands records back; Redis
answers SET/GET and MULTI transactions; the deploy/local scripts are idempotent, and a server
started under a lease stops by itself when its holder is killed (no orphan JVM or redis-server).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from conftest import LocalServer, answers_within, kafka_answers, redis_answers
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

# ---- Kafka --------------------------------------------------------------------------------


def test_kafka_topic_produce_consume(kafka_bootstrap: str, unique_topic_prefix: str) -> None:
    topic = f"{unique_topic_prefix}infra"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        # KRaft answers CreateTopics once the controller committed it; the broker's metadata may
        # lag a moment behind, so wait for leaders before describing or producing.
        admin.create_topics(
            [NewTopic(topic, num_partitions=4, replication_factor=1)], wait_for_metadata=True
        )
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(described[0]["partitions"]) == 4

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    keys = [f"customer-{i}" for i in range(20)]
    sent: dict[str, list[bytes]] = defaultdict(list)
    futures = []
    for n in range(200):
        key = keys[n % len(keys)]
        value = f"{key}:{n}".encode()
        sent[key].append(value)
        futures.append((key, producer.send(topic, key=key.encode(), value=value)))
    producer.flush()
    partition_of: dict[str, set[int]] = defaultdict(set)
    for key, future in futures:
        partition_of[key].add(future.get(timeout=30).partition)
    producer.close()
    assert all(len(p) == 1 for p in partition_of.values()), "a key landed on two partitions"
    assert len({next(iter(p)) for p in partition_of.values()}) > 1, "20 keys all on one partition"

    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    consumer.assign([TopicPartition(topic, p) for p in range(4)])
    received: dict[str, list[bytes]] = defaultdict(list)
    deadline = time.monotonic() + 60
    count = 0
    while count < 200 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                received[record.key.decode()].append(record.value)
                count += 1
    consumer.close()
    assert count == 200
    assert received == sent  # every record back, per-key order kept


def test_kafka_auto_creates_topics_with_four_partitions(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    topic = f"{unique_topic_prefix}auto"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, b"x").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2, 3}
    finally:
        consumer.close()


# ---- Redis --------------------------------------------------------------------------------


def test_redis_set_get_and_multi(redis_url: str, unique_topic_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"{unique_topic_prefix}k"
    try:
        assert client.set(key, b"v1")
        assert client.get(key) == b"v1"
        pipe = client.pipeline(transaction=True)
        pipe.set(key, b"v2").incr(f"{key}:n").zadd(f"{key}:due", {"c1": 5, "c2": 3}).get(key)
        _, n, added, value = pipe.execute()
        assert (n, added, value) == (1, 2, b"v2")
        assert client.zrangebyscore(f"{key}:due", 0, 4) == [b"c2"]
    finally:
        client.delete(key, f"{key}:n", f"{key}:due")
        client.close()


# ---- the scripts ----------------------------------------------------------------------------


def _free_port() -> int:
    """A port free right now, below the ephemeral range (32768+) that client sockets draw from,
    so a busy test run's own connections cannot take it before the server binds it, and away
    from the default ports (26379, 29092, 29093) that other sessions probe and would reuse."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(21000, 26000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 21000-25999")


def _logs(server: LocalServer) -> str:
    """The tails of the instance's log files, for assertion messages."""
    parts = []
    for path in sorted(server.instance.rglob("*")):
        if path.suffix in {".log", ".out"} and path.is_file():
            lines = path.read_text(errors="replace").splitlines()[-25:]
            parts.append(f"--- {path} ---\n" + "\n".join(lines))
    return "\n".join(parts)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for a pytest or with-infra.sh process that holds a lease."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(params=["kafka", "redis"])
def throwaway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalServer]:
    """A separate instance of one server on free ports in tmp_path, stopped afterwards."""
    extra = {"SEGSTREAM_KAFKA_CONTROLLER_PORT": str(_free_port())}
    server = LocalServer(request.param, _free_port(), tmp_path / request.param, extra)
    yield server
    server.run("stop")


def _answers(server: LocalServer) -> bool:
    if server.name == "kafka":
        return kafka_answers(f"127.0.0.1:{server.port}")
    return redis_answers(f"redis://127.0.0.1:{server.port}/0")


def test_start_is_idempotent_and_a_killed_holder_stops_the_server(
    throwaway: LocalServer, holder: subprocess.Popen[bytes]
) -> None:
    extra = {"SEGSTREAM_LEASE_PID": str(holder.pid)}
    first = throwaway.run("start", extra=extra)
    assert first.returncode == 0, first.stdout
    assert answers_within(lambda: _answers(throwaway), 60), _logs(throwaway)
    pid = int((throwaway.instance / f"{throwaway.name}.pid").read_text())

    again = throwaway.run("start", extra=extra)
    assert again.returncode == 0, again.stdout
    assert "already running" in again.stdout, again.stdout
    assert int((throwaway.instance / f"{throwaway.name}.pid").read_text()) == pid
    status = throwaway.run("status", extra=extra)
    assert status.returncode == 0 and f"pid {pid}" in status.stdout, status.stdout

    os.kill(holder.pid, signal.SIGKILL)  # like `kill -9` of pytest
    holder.wait()
    deadline = time.monotonic() + 40  # watchdog tick + graceful stop (Kafka: up to 20 s)
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _pid_alive(pid), (
        f"{throwaway.name} pid {pid} outlived its only lease holder\n{_logs(throwaway)}"
    )
    assert throwaway.run("status", extra=extra).returncode == 3


def test_release_stops_only_when_the_last_holder_lets_go(tmp_path: Path) -> None:
    server = LocalServer("redis", _free_port(), tmp_path / "redis")
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    second = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        for holder_proc in (first, second):
            result = server.run("start", extra={"SEGSTREAM_LEASE_PID": str(holder_proc.pid)})
            assert result.returncode == 0, result.stdout
        pid = int((server.instance / "redis.pid").read_text())

        result = server.run("release", str(first.pid))
        assert result.returncode == 0 and "1 other lease holder" in result.stdout
        assert _pid_alive(pid)

        assert server.run("release", str(second.pid)).returncode == 0
        assert not _pid_alive(pid)
    finally:
        server.run("stop")
        for proc in (first, second):
            proc.kill()
            proc.wait()


def test_unleased_server_is_never_stopped_by_release(tmp_path: Path) -> None:
    server = LocalServer("redis", _free_port(), tmp_path / "redis")
    try:
        assert server.run("start").returncode == 0  # like `make infra-up`: no lease
        pid = int((server.instance / "redis.pid").read_text())
        result = server.run("release", str(os.getpid()))
        assert result.returncode == 0 and "started without a lease" in result.stdout
        assert _pid_alive(pid)
        stop = server.run("stop")
        assert stop.returncode == 0 and not _pid_alive(pid)
        assert "not running" in server.run("stop").stdout  # stop twice: still exit 0
    finally:
        server.run("stop")


def test_with_infra_exports_addresses_and_propagates_exit_code(
    kafka_bootstrap: str, redis_url: str
) -> None:
    # Both servers already run (the fixtures): with-infra.sh must use them, start nothing, stop
    # nothing, hand their addresses to the command and return the command's exit code.
    kafka_port = kafka_bootstrap.rsplit(":", 1)[1]
    redis_port = str(urlsplit(redis_url).port)
    env = {
        **os.environ,
        "SEGSTREAM_KAFKA_PORT": kafka_port,
        "SEGSTREAM_REDIS_PORT": redis_port,
    }
    env.pop("SEGSTREAM_KAFKA_BOOTSTRAP", None)
    env.pop("SEGSTREAM_REDIS_URL", None)
    script = Path(__file__).resolve().parents[2] / "deploy" / "local" / "with-infra.sh"
    result = subprocess.run(
        [
            str(script),
            "bash",
            "-c",
            'echo "$SEGSTREAM_KAFKA_BOOTSTRAP $SEGSTREAM_REDIS_URL"; exit 7',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 7, result.stderr
    assert result.stdout.split() == [kafka_bootstrap, redis_url]
    assert "started pid" not in result.stderr and "stopping" not in result.stderr
    assert kafka_answers(kafka_bootstrap) and redis_answers(redis_url)
