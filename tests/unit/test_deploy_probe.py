"""deploy/k8s/probes/liveness.py: the commit-progress liveness rule, on real exposition text.

The metrics page is produced by the real worker registry (stream.worker.bootstrap.build_worker
with both agents), so the probe's metric names and label handling are those the worker serves.
tests/integration/test_deploy.py runs the script against a live worker.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from stream.settings import Settings
from stream.worker.bootstrap import build_worker

PROBE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "probes" / "liveness.py"


def load_probe() -> Any:
    spec = importlib.util.spec_from_file_location("segstream_liveness", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


probe = load_probe()


@cache
def base_page() -> str:
    """The /metrics text of a fresh worker app (both agents): the real names and labels."""
    worker = build_worker(Settings.build(api_auth="none"))
    assert worker.segmentation is not None
    seg = worker.segmentation.metrics
    seg.commit_seconds.observe(0.001)  # so the histogram's series exist with a value
    seg.timer_backlog.set(0)
    return generate_latest(worker.registry).decode()


def page(*, commits: int = 0, bundles: int = 0, active: int = 0, end: int = 0,
         committed: int = 0, backlog: int = 0, redis_errors: int = 0) -> str:
    """The worker's /metrics text with these values in place of the fresh app's."""
    values = {"segstream_redis_commit_seconds_count": commits,
              "segstream_redis_errors_total": redis_errors,
              "segstream_ingest_bundles_total": bundles,
              "segstream_timer_backlog": backlog, "faust_active_messages": active}
    lines = []
    for line in base_page().splitlines():
        name = line.split(" ", 1)[0]
        lines.append(f"{name} {float(values[name])}" if name in values else line)
    assert all(any(line.startswith(f"{n} ") for line in lines) for n in values), "renamed?"
    if end or committed:  # set by Faust's sensor once the consumer fetches and commits
        tp = 'partition="0",topic="segstream-bundles"'
        lines += [f"faust_topic_partition_end_offset{{{tp}}} {end}.0",
                  f"faust_topic_partition_offset_commited{{{tp}}} {committed}.0"]
        assert "# TYPE faust_topic_partition_end_offset gauge" in lines
    return "\n".join(lines) + "\n"


def test_parse_reads_progress_and_pending_work() -> None:
    snap = probe.parse(page(commits=3, bundles=2, active=1, end=10, committed=7, backlog=4))
    assert snap.progress == 5.0
    assert (snap.active, snap.lag, snap.backlog) == (1.0, 3.0, 4.0)
    assert snap.pending
    idle = probe.parse(page(commits=3, end=10, committed=10))
    assert not idle.pending and idle.lag == 0.0


def test_segstream_partition_lag_is_pending_work() -> None:
    text = page(commits=3) + ('segstream_partition_lag{partition="2",stage="segmentation"} '
                              "7.0\n")
    snap = probe.parse(text)
    assert snap.lag == 7.0 and snap.pending
    state = probe.State(progress=3.0, progress_at=0.0)
    alive, _, why = probe.decide(state, snap, at=1_000.0, stall_s=300)
    assert not alive and "uncommitted records 7" in why


def test_idle_worker_is_alive_however_long() -> None:
    idle = probe.parse(page(commits=1))
    state = probe.State(progress=1.0, progress_at=0.0)
    alive, kept, why = probe.decide(state, idle, at=10_000.0, stall_s=300)
    assert alive and why == "idle" and kept.progress_at == 10_000.0


def test_pending_work_without_commits_fails_after_the_stall_limit() -> None:
    stuck = probe.parse(page(commits=1, end=50, committed=20))
    first_alive, state, _ = probe.decide(None, stuck, at=1000.0, stall_s=300)
    assert first_alive
    alive, state, why = probe.decide(state, stuck, at=1200.0, stall_s=300)
    assert alive and "pending" in why
    alive, _, why = probe.decide(state, stuck, at=1301.0, stall_s=300)
    assert not alive
    assert "no commit for 301 s" in why and "uncommitted records 30" in why


def test_commit_progress_resets_the_clock() -> None:
    busy = probe.parse(page(commits=1, active=5))
    _, state, _ = probe.decide(None, busy, at=0.0, stall_s=300)
    moved = probe.parse(page(commits=2, active=5))
    alive, state, why = probe.decide(state, moved, at=299.0, stall_s=300)
    assert alive and why == "committing" and state.progress_at == 299.0
    alive, _, _ = probe.decide(state, moved, at=500.0, stall_s=300)
    assert alive  # 201 s since the last commit: within the limit


def test_main_fails_when_metrics_do_not_answer(tmp_path: Path, capsys: Any) -> None:
    # port 1 on loopback: nothing listens there (connection refused at once)
    code = probe.main(["--port", "1", "--state", str(tmp_path / "s.json"), "--timeout", "1"])
    assert code == 1
    assert "does not answer" in capsys.readouterr().out


def test_a_worker_retrying_redis_is_not_restarted() -> None:
    """Redis down: commits stop, work piles up, but the agent retries (errors rise): a restart
    would not help, so the probe stays alive; once the errors stop, the stall clock runs."""
    _, state, _ = probe.decide(None, probe.parse(page(commits=4, active=3)), at=0.0,
                               stall_s=300)
    for t, errors in ((200.0, 10), (400.0, 25), (600.0, 31)):
        alive, state, why = probe.decide(
            state, probe.parse(page(commits=4, active=3, redis_errors=errors)), at=t,
            stall_s=300)
        assert alive and why.startswith("retrying Redis"), why
    stuck = probe.parse(page(commits=4, active=3, redis_errors=31))
    assert probe.decide(state, stuck, at=850.0, stall_s=300)[0]
    assert not probe.decide(state, stuck, at=901.0, stall_s=300)[0]
