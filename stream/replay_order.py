"""Event-time ordering of replay input: a stable external sort with bounded memory.

A history exported from a database is usually sorted by customer, not by time. Replayed in
file order, nearly every event of such a file would be older than the watermark minus the
allowed lateness and refused as late. :class:`TimeOrder` reorders the canonical events of a
file by ``timestamp`` (ties keep file order: the sort is stable) before they reach
:func:`processors.replay.replay`:

- events are buffered as ``(timestamp, pickled event)`` pairs until the buffer holds
  ``run_bytes`` (the pickled bytes plus :data:`PER_EVENT_OVERHEAD` per event);
- a full buffer is sorted and *spilled* to a run file (at most ``run_bytes`` on disk) in a
  private temporary directory; the last, partial buffer stays in memory;
- the runs are k-way merged with :func:`heapq.merge` (stable across runs: on equal timestamps
  the earlier run, i.e. the earlier part of the file, comes first) and unpickled one by one.

A file that fits in one buffer is sorted in memory and nothing touches the disk. Memory: at
most ``run_bytes`` of buffered events while reading, then one read buffer
(:data:`READ_BUFFER` bytes) per run plus the last run while merging. The temporary directory
is removed when the context exits, also on error or when the consumer stops early.

While reading, the file order is also measured (:class:`OrderStats`): how many events come
after a later one, and how many of them by more than the allowed lateness (the events that
``--arrival-order`` would refuse as late; the rule is the engine's: ``ts < watermark -
lateness``, the watermark being the largest earlier timestamp not after ``until``).
"""

from __future__ import annotations

import heapq
import pickle
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import IO, Any

DEFAULT_RUN_MB = 64.0  # `segstream replay --sort-buffer-mb` default
PER_EVENT_OVERHEAD = 128  # bytes a buffered event costs besides its pickle (tuple, list slot)
READ_BUFFER = 256 * 1024  # bytes of read buffer per run file while merging
_HEADER = struct.Struct("<qI")  # timestamp, length of the pickle that follows
_ts = itemgetter(0)


@dataclass
class OrderStats:
    """What the ordering found and did."""

    events: int = 0
    out_of_order: int = 0  # events with a timestamp before an earlier event's
    beyond_lateness: int = 0  # ... by more than the allowed lateness (late in file order)
    runs: int = 0  # sorted runs (1: sorted in memory, nothing spilled)
    spilled_runs: int = 0
    spilled_bytes: int = 0
    run_bytes: int = 0  # the buffer bound


class TimeOrder:
    """``with TimeOrder(events, ...) as ordered: for ev in ordered: ...``: ``events`` in
    timestamp order (stable). One pass only."""

    def __init__(self, events: Iterable[dict[str, Any]], *, run_bytes: int,
                 lateness_ms: int, until: int | None = None,
                 tmp_dir: str | Path | None = None) -> None:
        if run_bytes < 1:
            raise ValueError(f"run_bytes must be positive, got {run_bytes}")
        self.events = events
        self.lateness = lateness_ms
        self.until = until
        self.tmp_dir = tmp_dir
        self.stats = OrderStats(run_bytes=run_bytes)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._open: list[IO[bytes]] = []

    def __enter__(self) -> TimeOrder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the run files and remove the temporary directory (idempotent)."""
        for f in self._open:
            f.close()
        self._open.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stats, limit, until, lateness = self.stats, self.stats.run_bytes, self.until, self.lateness
        dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
        files: list[Path] = []
        run: list[tuple[int, bytes]] = []
        size = 0
        top: int | None = None  # largest timestamp so far (file order)
        watermark: int | None = None  # the same, over events not after until
        for ev in self.events:
            ts: int = ev["timestamp"]
            stats.events += 1
            if top is not None and ts < top:
                stats.out_of_order += 1
                if watermark is not None and ts < watermark - lateness:
                    stats.beyond_lateness += 1
            if top is None or ts > top:
                top = ts
            if (until is None or ts <= until) and (watermark is None or ts > watermark):
                watermark = ts
            blob = dumps(ev, protocol)
            run.append((ts, blob))
            size += len(blob) + PER_EVENT_OVERHEAD
            if size >= limit:
                files.append(self._spill(run))
                run, size = [], 0
        run.sort(key=_ts)
        stats.runs = len(files) + (1 if run or not files else 0)
        loads = pickle.loads
        if not files:
            for _, blob in run:
                yield loads(blob)
            return
        merged = heapq.merge(*(self._read(p) for p in files), run, key=_ts)
        for _, blob in merged:
            yield loads(blob)
        self.close()

    def _spill(self, run: list[tuple[int, bytes]]) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="segstream-replay-",
                                                    dir=self.tmp_dir)
        run.sort(key=_ts)
        path = Path(self._tmp.name) / f"run-{self.stats.spilled_runs:05d}"
        pack = _HEADER.pack
        with path.open("wb") as f:
            for ts, blob in run:
                f.write(pack(ts, len(blob)))
                f.write(blob)
            self.stats.spilled_bytes += f.tell()
        self.stats.spilled_runs += 1
        return path

    def _read(self, path: Path) -> Iterator[tuple[int, bytes]]:
        f = path.open("rb", buffering=READ_BUFFER)
        self._open.append(f)
        read, unpack, n = f.read, _HEADER.unpack, _HEADER.size
        while header := read(n):
            ts, length = unpack(header)
            yield ts, read(length)
