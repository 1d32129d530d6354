"""Segment definitions change at runtime: `segstream segments apply` publishes, the running
worker switches without a restart and re-evaluates every existing customer from its state."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .pipeline import (
    REPO,
    changes_of,
    check_end_state,
    expected_members,
    flapping_events,
    make_pipeline,
    produce,
    redis_view,
    slow_segments,
    wait_caught_up,
)


def segments_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", "segments", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_apply_switches_definitions_without_restart(
    kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    v1 = slow_segments(tmp_path)
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, v1)
    events = flapping_events(random.Random(5), int(time.time() * 1000), 40, 8)
    produce(kafka_bootstrap, p.names["raw"], events)
    worker = p.worker()
    try:
        worker.start()
        wait_caught_up(p, len(events), [worker])
        before = check_end_state(p, events, v1)
        assert before.members.get("cart_open"), "the data must put someone in cart_open"

        # v2: one segment changed, one removed, one added
        doc = yaml.safe_load(v1.read_text())
        doc["version"] = "faults-2"
        doc["segments"] = [s for s in doc["segments"] if s["name"] != "cart_open"]
        for s in doc["segments"]:
            if s["name"] == "viewers_1h":
                s["condition"] = "count(page_view, 1h) >= 3"
        doc["segments"].append({"name": "french", "description": "Country trait is FR.",
                                "condition": 'trait.country == "FR"'})
        v2 = tmp_path / "v2.yaml"
        v2.write_text(yaml.safe_dump(doc))

        dry = segments_cli(p.env, "apply", str(v2), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "added: french" in dry.stdout and "removed: cart_open" in dry.stdout
        assert "changed: viewers_1h" in dry.stdout
        applied = segments_cli(p.env, "apply", str(v2))
        assert applied.returncode == 0, applied.stderr

        customers = sorted({ev["customer_id"] for ev in events})
        want = expected_members(events, v2, int(time.time() * 1000))
        deadline = time.monotonic() + 90
        while True:
            members, _, _ = redis_view(p.redis_url, p.names["namespace"], customers,
                                       p.bundle_partitions)
            if members == want:
                break
            assert time.monotonic() < deadline, f"not switched: {members} vs {want}\n" + \
                worker.log_tail()
            time.sleep(0.5)
        assert worker.proc is not None and worker.proc.poll() is None, "no restart"
        after = check_end_state(p, events, v2)
        assert "cart_open" not in after.members

        logged = [ch for _, ch in changes_of(p.bootstrap, p.names["changes"])]
        removed_exits = {ch.customer_id for ch in logged if ch.segment == "cart_open"
                         and ch.cause == "definitions:faults-2"}
        assert removed_exits == before.members["cart_open"]
        assert all(ch.action == "exit" for ch in logged
                   if ch.segment == "cart_open" and ch.cause == "definitions:faults-2")
        french = {ch.customer_id for ch in logged if ch.segment == "french"}
        assert french == want["french"]

        # the same file again is a no-op; a changed file must bump the version
        again = segments_cli(p.env, "apply", str(v2))
        assert again.returncode == 0 and "already published" in again.stdout
        v2.write_text(v2.read_text().replace(">= 3", ">= 4"))
        same_version = segments_cli(p.env, "apply", str(v2))
        assert same_version.returncode == 3 and "new `version`" in same_version.stderr
        shown = segments_cli(p.env, "show")
        assert shown.returncode == 0 and "faults-2" in shown.stdout
    finally:
        p.stop_all()


def test_validate_reports_the_segment_and_column() -> None:
    bad = REPO / "tests" / "fixtures" / "live_segments.yaml"
    text = bad.read_text().replace("count(purchase, 1h) >= 1", "count(purchse, 1h) >= 1")
    path = Path(bad.parent / "__bad_segments.yaml")
    try:
        path.write_text(text)
        out = segments_cli({"PATH": "/usr/bin:/bin"}, "validate", str(path))
    finally:
        path.unlink()
    assert out.returncode == 3
    assert "buyers_1h" in out.stderr and "purchse" in out.stderr
