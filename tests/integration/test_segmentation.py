"""The whole pipeline on the real broker and Redis: raw events -> ingest -> bundles ->
segmentation -> segment-changes topic + Redis, checked against the offline replay of the same
events, and a time-only EXIT that fires with no new event (the scenario lives in
tests/integration/pipeline.py: test_redis_cluster.py runs it on a Redis Cluster).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import yaml

from .pipeline import (
    LIVE_SEGMENTS,
    Pipeline,
    check_end_state,
    flapping_events,
    live_scenario,
    make_pipeline,
    metric,
    produce,
    topic_size,
    wait_caught_up,
)


def test_pipeline_matches_replay_and_fires_time_only_exits(pipeline: Pipeline) -> None:
    live_scenario(pipeline, pipeline.worker())


def test_a_backlog_older_than_the_allowed_lateness_is_applied_not_refused(
    kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    """Events that arrived in time but wait in Kafka longer than the allowed lateness (the
    worker was down) are judged by their arrival, not by when they are processed: none is
    dead-lettered as too_late, and the end state equals the offline replay."""
    doc = yaml.safe_load(LIVE_SEGMENTS.read_text())
    doc["segments"] = [s for s in doc["segments"] if s["name"] != "opened_recently"]
    doc["version"], doc["settings"] = "backlog-1", {"allowed_lateness": "20s"}
    segments = tmp_path / "segments.yaml"
    segments.write_text(yaml.safe_dump(doc))
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, segments)
    now = int(time.time() * 1000)
    events = flapping_events(random.Random(3), now, customers=150, per_customer=6,
                             span_ms=5_000)  # at most 5 s old when they arrive
    produce(kafka_bootstrap, p.names["raw"], events, partitions=p.raw_partitions)
    arrived = time.monotonic()
    worker = p.worker()
    try:
        time.sleep(max(0.0, 32 - (time.monotonic() - arrived)))  # the worker was down 32 s
        worker.start()
        wait_caught_up(p, len(events), [worker])
        late = metric(worker, "segstream_late_events_total")
        letters = topic_size(kafka_bootstrap, f"{unique_topic_prefix}segstream-deadletters")
        print(f"\n{len(events)} events processed {time.monotonic() - arrived:.0f} s after they "
              f"arrived (allowed lateness 20 s): {late} refused as late, {letters} dead letters")
        assert late == 0 and letters == 0
        report = check_end_state(p, events, segments)
        assert report.lost == 0 and report.conflicting == 0
        assert worker.stop() == 0, worker.log_tail()
    finally:
        p.stop_all()
