"""`make demo`'s script, run as a user would (on the session's Kafka and Redis): the live view
shows segment changes, and stopping it leaves nothing running."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import psutil

from .support import REPO, free_port


def test_demo_shows_live_changes_and_cleans_up(
    kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env.update({
        "SEGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SEGSTREAM_REDIS_URL": redis_url,
        "SEGSTREAM_TOPIC_PREFIX": unique_topic_prefix,
        "SEGSTREAM_REDIS_NAMESPACE": f"demo{uuid.uuid4().hex[:6]}:",
        "SEGSTREAM_WEB_PORT": str(free_port()),
        "SEGSTREAM_COLLECTOR_PORT": str(free_port()),
        "DEMO_WATCH_ONCE": "20",
        "DEMO_RATE": "300",
        "DEMO_CUSTOMERS": "300",
    })
    out = subprocess.run([str(REPO / "deploy" / "local" / "demo.sh")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    processed = re.search(r"events processed ([\d,]+)", text)
    assert processed and int(processed.group(1).replace(",", "")) > 0, text[-3000:]
    assert re.search(r"^engaged_30d\s+\d+", text, re.MULTILINE), text[-3000:]
    # the simulator's custom events (processors/event_types.yaml) reach the example segments
    assert re.search(r"^app_light_users\s+[1-9]", text, re.MULTILINE), text[-3000:]
    assert "demo: stopped worker, collector and simulator" in text
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if p.info["cmdline"] and "stream.cli" in " ".join(p.info["cmdline"])
                 and unique_topic_prefix in " ".join(
                     f"{k}={v}" for k, v in _environ(p).items())]
    assert leftovers == []


def _environ(p: psutil.Process) -> dict[str, str]:
    try:
        return p.environ()
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return {}
