"""Fixtures shared by the integration tests, and the session summary of the fault-injection
figures (tests/integration/test_faults_scale.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .pipeline import FAULT_FIGURES, LIVE_SEGMENTS, Pipeline, make_pipeline


@pytest.fixture
def pipeline(kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str,
             tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline on live_segments.yaml (unique topics and namespace); its workers stop after."""
    p = make_pipeline(kafka_bootstrap, redis_url, unique_topic_prefix, tmp_path, LIVE_SEGMENTS)
    try:
        yield p
    finally:
        p.stop_all()


def summary_lines(figures: list[dict[str, Any]]) -> list[str]:
    """One aligned row per scenario."""
    head = ("scenario", "events", "changes", "lost", "conflicting", "dup downstream",
            "ingest dup", "recovery s", "peak RSS MiB", "wall s")
    rows = [head] + [(f["scenario"], str(f["events"]), str(f["changes"]), str(f["lost"]),
                      str(f["conflicting"]), str(f["duplicates_downstream"]),
                      str(f["ingest_duplicates"]),
                      ",".join(str(r) for r in f["recovery_s"]), str(f["peak_rss_mib"]),
                      str(f["wall_s"])) for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(FAULT_FIGURES, [])
    if figures:
        terminalreporter.write_sep("=", "fault-injection scenarios")
        for line in summary_lines(figures):
            terminalreporter.write_line(line)
