"""Liveness of a segstream worker, tied to commit progress (a Kubernetes exec probe).

A worker process can stay up, answer /health, and still have stopped working: an agent that
died inside Faust (faust-streaming issues #175, #523) or a task stuck on a lock. What shows
real progress is the commit counters: ``segstream_redis_commit_seconds_count`` (one per
partition commit of the segmentation agent, timer passes included) and
``segstream_ingest_bundles_total`` (bundles the ingest agent got acknowledged). This probe reads
the worker's own /metrics and fails when work is pending but neither counter has moved for
``--stall`` seconds. Work is pending when Faust holds fetched records not yet acknowledged
(``faust_active_messages``), a partition's fetched high-water mark is ahead of its committed
offset (Faust's gauges, or ``segstream_partition_lag``: the high-water mark ahead of the offset
applied in Redis), or customers are overdue for timers (``segstream_timer_backlog``). An idle
worker is alive. So is a worker that keeps retrying Redis (``segstream_redis_errors_total``
rising: the segmentation agent retries transient Redis failures with back-off, and a restart
would not help; the SegstreamRedisErrors alert covers that). A worker that does not answer
/metrics at all fails at once.

The previous counters and the time of the last progress are kept in a small JSON state file
between probe runs (an emptyDir in the pod). Standard library only: it runs with the image's
Python, outside the worker process. Exit 0 alive, 1 not alive (the reason on stdout).

    python liveness.py --port 6066 --stall 300 --state /tmp/segstream-liveness.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

PROGRESS = ("segstream_redis_commit_seconds_count", "segstream_ingest_bundles_total")


@dataclass(frozen=True)
class Snapshot:
    """What the probe needs of one /metrics page."""

    progress: float  # the sum of the PROGRESS counters
    active: float  # faust_active_messages
    lag: float  # sum over partitions of end offset - committed offset (both known)
    backlog: float  # segstream_timer_backlog
    redis_errors: float = 0.0  # segstream_redis_errors_total

    @property
    def pending(self) -> bool:
        return self.active > 0 or self.lag > 0 or self.backlog > 0


@dataclass(frozen=True)
class State:
    """Kept between probe runs."""

    progress: float
    progress_at: float  # wall clock (s) of the last progress, or of the last idle look
    redis_errors: float = 0.0


def parse(text: str) -> Snapshot:
    """A :class:`Snapshot` of a Prometheus text exposition.

    >>> parse('faust_active_messages 2.0\\nsegstream_ingest_bundles_total 5.0\\n').pending
    True
    """
    sums: dict[str, float] = defaultdict(float)
    offsets: dict[str, dict[str, float]] = {"end": {}, "committed": {}}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isnan(number):
            continue
        if name == "faust_topic_partition_end_offset":
            offsets["end"][labels] = number
        elif name == "faust_topic_partition_offset_commited":  # sic: Faust's spelling
            offsets["committed"][labels] = number
        else:
            sums[name] += number
    lag = sum(max(0.0, end - offsets["committed"][tp])
              for tp, end in offsets["end"].items() if tp in offsets["committed"])
    lag += sums["segstream_partition_lag"]  # segstream's own, per stage and partition
    return Snapshot(progress=sum(sums[n] for n in PROGRESS),
                    active=sums["faust_active_messages"], lag=lag,
                    backlog=sums["segstream_timer_backlog"],
                    redis_errors=sums["segstream_redis_errors_total"])


def decide(previous: State | None, now: Snapshot, at: float, stall_s: float
           ) -> tuple[bool, State, str]:
    """(alive, the state to keep, a one-line reason)."""
    if previous is None or now.progress != previous.progress or not now.pending:
        why = "first look" if previous is None else (
            "committing" if now.progress != previous.progress else "idle")
        return True, State(now.progress, at, now.redis_errors), why
    if now.redis_errors > previous.redis_errors:
        return True, State(now.progress, at, now.redis_errors), (
            f"retrying Redis ({now.redis_errors - previous.redis_errors:g} errors since the "
            "last look)")
    stalled = at - previous.progress_at
    if stalled > stall_s:
        return False, previous, (
            f"no commit for {stalled:.0f} s while work is pending (active messages "
            f"{now.active:g}, uncommitted records {now.lag:g}, timer backlog {now.backlog:g})")
    return True, previous, f"pending, last commit {stalled:.0f} s ago (limit {stall_s:g} s)"


def load_state(path: Path) -> State | None:
    try:
        return State(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=6066, help="the worker's web port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--stall", type=float, default=300.0,
                        help="seconds without a commit, work pending, before failing")
    parser.add_argument("--state", type=Path, default=Path("/tmp/segstream-liveness.json"))  # noqa: S108
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    url = f"http://{args.host}:{args.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError as exc:
        print(f"not alive: {url} does not answer ({exc})")
        return 1
    alive, state, why = decide(load_state(args.state), parse(text), time.time(), args.stall)
    tmp = args.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state)))
    tmp.replace(args.state)
    print(("alive: " if alive else "not alive: ") + why)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
