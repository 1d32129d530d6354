"""Custom event types change at runtime: `segstream types apply` publishes, the running worker
and a collector accept the new types without a restart, definitions use them, and a change
that breaks a loaded segment is refused naming it (real Kafka and Redis)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from schemas.deadletter import decode_dead_letter
from stream.collector.service import Collector
from stream.settings import Settings

from .pipeline import REPO, make_pipeline, produce, redis_view, slow_segments, wait_caught_up

TYPES = REPO / "processors" / "event_types.yaml"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def review(i: int, cid: str, rating: Any, now: int) -> dict[str, Any]:
    return {"event_id": f"r{i}", "type": "review_posted", "customer_id": cid,
            "timestamp": now - 1000 + i, "properties": {"rating": rating}}


def wait_log(worker: Any, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in worker.log_tail(400):
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{worker.log_tail()}"
        time.sleep(0.5)


def collector_converges(env: dict[str, str], version: str) -> bool:
    """A collector (its live types against the real topic) reaches ``version``."""
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("SEGSTREAM_")})

    async def run() -> bool:
        collector = Collector(settings)
        task = asyncio.create_task(collector.types.follow())
        try:
            for _ in range(60):
                if collector.types.version == version:
                    return "review_posted" in collector.types.schema.custom
                await asyncio.sleep(0.5)
            return False
        finally:
            task.cancel()

    return asyncio.run(run())


def test_types_apply_live(kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str,
                          tmp_path: Path) -> None:
    v1 = slow_segments(tmp_path)
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, v1)
    worker = p.worker()
    try:
        worker.start()
        assert "no event types published" in cli(p.env, "types", "show").stdout
        applied = cli(p.env, "types", "apply", str(TYPES))
        assert applied.returncode == 0, applied.stderr
        assert "added: app_session, review_posted" in applied.stdout
        assert "review_posted" in cli(p.env, "types", "show").stdout
        wait_log(worker, "event types 2026-12-07.1")
        assert collector_converges(p.env, "2026-12-07.1")

        doc = yaml.safe_load(v1.read_text())
        doc["version"] = "types-2"
        doc["segments"].append({"name": "unhappy", "description": "A low rating.",
                                "condition": "count(review_posted where rating <= 2, 30d) >= 1"})
        v2 = tmp_path / "v2.yaml"
        v2.write_text(yaml.safe_dump(doc))
        seg = cli(p.env, "segments", "apply", str(v2))
        assert seg.returncode == 0, seg.stderr
        wait_log(worker, "switching definitions")

        now = int(time.time() * 1000)
        events = [review(1, "c1", 1, now), review(2, "c2", 9, now), review(3, "c3", 5, now)]
        produce(kafka_bootstrap, p.names["raw"], events)
        wait_caught_up(p, 2, [worker])
        deadline = time.monotonic() + 60
        while True:
            members, _, _ = redis_view(p.redis_url, p.names["namespace"], ["c1", "c2", "c3"],
                                       p.bundle_partitions)
            if members.get("unhappy") == {"c1"}:
                break
            assert time.monotonic() < deadline, f"{members}\n{worker.log_tail()}"
            time.sleep(0.5)

        # the bad rating is a dead letter naming the property and the expected kind
        from kafka import KafkaConsumer  # noqa: PLC0415

        consumer = KafkaConsumer(f"{unique_topic_prefix}segstream-deadletters",
                                 bootstrap_servers=kafka_bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=5000)
        letters = [decode_dead_letter(r.value) for r in consumer]
        consumer.close()
        assert [(d.code, orjson.loads(d.raw)["event_id"]) for d in letters] == [
            ("bad_property", "r2")]
        assert "expected integer >= 1 <= 5" in letters[0].message

        # breaking: the rating the segment uses is removed -> refused, naming the segment
        t2 = yaml.safe_load(TYPES.read_text())
        t2["version"] = "2026-12-07.2"
        del t2["types"][0]["properties"]["rating"]
        bad = tmp_path / "t2.yaml"
        bad.write_text(yaml.safe_dump(t2))
        refused = cli(p.env, "types", "apply", str(bad))
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "segment 'unhappy' uses review_posted.rating" in refused.stderr
        t2 = yaml.safe_load(TYPES.read_text())
        t2["version"] = "2026-12-07.2"
        t2["types"][0]["properties"]["rating"]["kind"] = "number"
        bad.write_text(yaml.safe_dump(t2))
        refused = cli(p.env, "types", "apply", str(bad))
        assert refused.returncode == 3
        assert "its kind changes from integer to number" in refused.stderr

        # compatible: a new type and a new optional property
        t3 = yaml.safe_load(TYPES.read_text())
        t3["version"] = "2026-12-07.3"
        t3["types"][0]["properties"]["title"] = {"kind": "string"}
        t3["types"].append({"name": "wishlist_add", "description": "Wished.",
                            "properties": {"product_id": {"kind": "string"}}})
        good = tmp_path / "t3.yaml"
        good.write_text(yaml.safe_dump(t3))
        ok = cli(p.env, "types", "apply", str(good))
        assert ok.returncode == 0, ok.stderr
        assert "added: wishlist_add" in ok.stdout and "changed: review_posted" in ok.stdout
        wait_log(worker, "event types 2026-12-07.3")
        produce(kafka_bootstrap, p.names["raw"], [
            {"event_id": "w1", "type": "wishlist_add", "customer_id": "c4",
             "timestamp": now, "properties": {"product_id": "p"}}])
        wait_caught_up(p, 3, [worker])
        assert worker.proc is not None and worker.proc.poll() is None, "no restart"
    finally:
        p.stop_all()
