"""The whole pipeline on the real broker and Redis: raw events -> ingest -> bundles ->
segmentation -> segment-changes topic + Redis, checked against the offline replay of the same
events, and a time-only EXIT that fires with no new event (the scenario lives in
tests/integration/pipeline.py: test_redis_cluster.py runs it on a Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .pipeline import LIVE_SEGMENTS, Pipeline, live_scenario, make_pipeline


@pytest.fixture
def pipeline(kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str,
             tmp_path: Path) -> Iterator[Pipeline]:
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, LIVE_SEGMENTS)
    try:
        yield p
    finally:
        p.stop_all()


def test_pipeline_matches_replay_and_fires_time_only_exits(pipeline: Pipeline) -> None:
    live_scenario(pipeline, pipeline.worker())
