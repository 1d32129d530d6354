"""Helpers shared by the integration tests: the worker subprocess and topic readers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from stream.settings import Settings, TopicRole
from stream.topics import create_topics, topic_spec

REPO = Path(__file__).resolve().parents[2]


def create_topic(bootstrap: str, prefix: str, role: TopicRole, partitions: int,
                 **extra_configs: str) -> str:
    """Create the *role* topic of a test run (the spec of stream.topics, with *partitions* and
    replication 1: one local broker); returns its name. It must not exist yet."""
    settings = Settings.from_env({"SEGSTREAM_TOPIC_PREFIX": prefix,
                                  "SEGSTREAM_REPLICATION_FACTOR": "1"})
    spec = topic_spec(settings, role).resized(partitions)
    create_topics({"bootstrap_servers": bootstrap}, [spec], exist_ok=False,
                  extra_configs=extra_configs)
    return spec.name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessControl:
    """kill/stop of a test's child process (``proc``: set by the subclass's ``start``)."""

    proc: subprocess.Popen[bytes] | None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; the exit status (None if it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


@dataclass
class Worker(ProcessControl):
    """`python -m stream.cli worker` with its own environment and log file."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    def start(self, **overrides: str) -> None:
        env = {**self.env, **overrides}
        self.runs += 1
        log = self.log_path.with_suffix(f".{self.runs}.log")
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"], cwd=REPO, env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, lines: int = 40) -> str:
        log = self.log_path.with_suffix(f".{self.runs}.log")
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def read_records(bootstrap: str, topic: str) -> list[tuple[int, int, int, bytes]]:
    """Every record currently in *topic*: (partition, offset, timestamp ms, value), in offset
    order per partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[tuple[int, int, int, bytes]] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for records in consumer.poll(timeout_ms=500).values():
                out.extend((r.partition, r.offset, r.timestamp, r.value) for r in records)
        return sorted(out)
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes]]:
    """Every record currently in *topic*: (partition, offset, value), in offset order."""
    return [(p, o, v) for p, o, _, v in read_records(bootstrap, topic)]


def wait_http_ready(base_url: str, proc: subprocess.Popen[bytes], log: Path,
                    timeout_s: float = 60) -> None:
    """Poll ``base_url + "/ready"`` until it answers 200; fail with the log if ``proc`` exits
    or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(base_url + "/ready", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:  # refused, or an HTTP error status (503 while not ready)
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
