"""Helpers shared by the broker benchmarks (bench_ingest, bench_stream).

A benchmark is a *driver* that prepares input on the real broker, then runs each phase in a
fresh worker subprocess (the same script with ``--phase``), which times itself with
:class:`Clock` and writes a JSON result file before it stops. The driver reads the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.settings import TopicRole
    from stream.topics import TopicSpec

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """First-batch start, last-ack end, and the process CPU time over that window."""

    def __init__(self, target: int, result_path: Path) -> None:
        self.target = target
        self.result_path = result_path
        self.t0: float | None = None
        self.cpu0 = 0.0
        self.done = False

    @staticmethod
    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    def start(self) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()
            self.cpu0 = self.cpu()

    def finish(self, events: int, extra: dict[str, Any]) -> None:
        """Write the result file and stop the worker (SIGTERM: a clean Faust shutdown)."""
        assert self.t0 is not None
        seconds = time.perf_counter() - self.t0
        cpu = self.cpu() - self.cpu0
        self.result_path.write_text(json.dumps(
            {"events": events, "seconds": seconds, "cpu_seconds": cpu, **extra}))
        self.done = True
        os.kill(os.getpid(), signal.SIGTERM)


def topic(prefix: str, role: TopicRole, partitions: int) -> TopicSpec:
    """The *role* topic of a run (topic prefix *prefix*): the spec of stream.topics with
    *partitions* and replication 1 (one local broker)."""
    from stream.settings import Settings  # noqa: PLC0415
    from stream.topics import topic_spec  # noqa: PLC0415

    settings = Settings.from_env({"SEGSTREAM_TOPIC_PREFIX": prefix,
                                  "SEGSTREAM_REPLICATION_FACTOR": "1"})
    return topic_spec(settings, role).resized(partitions)


def create_topic(bootstrap: str, spec: TopicSpec) -> None:
    """Create the topic of *spec* (it must not exist: every run uses a fresh prefix)."""
    from stream.topics import create_topics  # noqa: PLC0415

    create_topics({"bootstrap_servers": bootstrap}, [spec], exist_ok=False)


def produce(bootstrap: str, spec: TopicSpec, records: Sequence[bytes],
            partition_of: Sequence[int] | None = None, *, create: bool = True) -> None:
    """Create the topic (unless ``create`` is false: it exists) and write ``records`` (round
    robin over partitions unless ``partition_of[i]`` names record i's partition); returns once
    all are acknowledged.

    aiokafka, not kafka-python: without the optional ``crc32c`` module kafka-python checksums
    record batches in pure Python (about 5 MB/s here), aiokafka in C.
    """
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    topic, partitions = spec.name, spec.partitions
    if create:
        create_topic(bootstrap, spec)

    async def send_all() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1,
                                    max_batch_size=1024 * 1024,
                                    max_request_size=2 * 1024 * 1024)
        await producer.start()
        try:
            pending = []
            for i, value in enumerate(records):
                p = i % partitions if partition_of is None else partition_of[i]
                pending.append(await producer.send(topic, value, partition=p))
                if len(pending) >= 2_000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    asyncio.run(send_all())


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> end offset (next offset to be written) of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: int(off) for tp, off in ends.items()}
    finally:
        consumer.close()


def phase_env(bootstrap: str, prefix: str, tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a phase worker: no inherited SEGSTREAM_* but the broker, its own
    topic prefix (so its own topics and consumer group), data dir and web port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env.update({
        "SEGSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "SEGSTREAM_TOPIC_PREFIX": prefix,
        "SEGSTREAM_DATA_DIR": str(tmp / prefix),
        "SEGSTREAM_WEB_PORT": str(16066 + os.getpid() % 1000),
        "SEGSTREAM_LOG_LEVEL": "warning",
        **extra,
    })
    return env


def spawn_phase(script: Path, phase: str, args: list[str], env: dict[str, str], tmp: Path,
                timeout: float = 1800) -> dict[str, Any]:
    """Run ``script --phase PHASE ARGS`` to completion; its JSON result (``--result`` is
    appended). Exits with the log tail if the phase wrote no result."""
    result = tmp / f"{phase}.json"
    log = tmp / f"{phase}.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, str(script), "--phase", phase, *args, "--result", str(result)],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
            check=False)
    if not result.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode}):\n{tail}")
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m stream.cli worker`` (the production entry point) with ``env``."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_worker(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait (SIGKILL after a minute); the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode


def log_tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``; NaN when empty."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")
