"""Replay of history that is not in time order (stream.replay_order, `segstream replay`).

A customer-sorted export replayed by default (ordered by event time, in memory or with an
external sort spilling runs) gives exactly the result of the same events pre-sorted by time;
``--arrival-order`` keeps file order (and its late events)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.lang.load import load_definitions
from processors.replay import ReplayResult, replay
from stream.cli import main
from stream.cli.cmd_replay import build_engine, change_record
from stream.replay_order import TimeOrder
from stream.tools.generate import GeneratorConfig, generate

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "processors" / "catalogue.yaml"
CLOCK = "2027-06-01"
VERSION = load_definitions(CATALOGUE).version  # stamped on every change as definition_version


def history(events: int, customers: int, seed: int) -> list[dict[str, Any]]:
    """A generated stream (with duplicates and small disorder) sorted by customer, as a
    database export would be: routing id, then file order (a stable sort)."""
    cfg = GeneratorConfig(customers=customers, events=events, seed=seed,
                          duplicate_share=0.01, out_of_order_share=0.01)
    evs = list(generate(cfg))
    return sorted(evs, key=lambda e: e["customer_id"] or e["anonymous_id"])


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def reference(events: list[dict[str, Any]]) -> tuple[ReplayResult, list[bytes]]:
    """The same events pre-sorted by time (stable), replayed in that order (arrival order)."""
    from schemas.validation import validate_event  # noqa: PLC0415

    engine, _ = build_engine(CATALOGUE)
    clock = 1_811_808_000_000  # 2027-06-01
    ordered = sorted((validate_event(e, clock) for e in events), key=lambda e: e["timestamp"])
    out: list[bytes] = []
    result = replay(engine, ordered, on_change=lambda ch: out.append(change_record(ch, VERSION)))
    return result, out


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["replay", "--quiet", "--segments", str(CATALOGUE), "--clock", CLOCK,
                 *args]) == 0
    return capsys.readouterr().out


def sizes(report: str) -> dict[str, int]:
    table: dict[str, int] = {}
    for line in report.splitlines()[2:]:
        if not line.strip():
            break
        name, n = line.split()
        table[name] = int(n)
    return table


def final_members(change_lines: list[bytes]) -> dict[str, set[str]]:
    """segment -> customers whose last change in the log is an enter."""
    last: dict[tuple[str, str], str] = {}
    for line in change_lines:
        ch = orjson.loads(line)
        last[(ch["segment"], ch["customer_id"])] = ch["action"]
    members: dict[str, set[str]] = {}
    for (seg, cid), action in last.items():
        if action == "enter":
            members.setdefault(seg, set()).add(cid)
    return members


def late_count(report: str) -> int:
    m = re.search(r"valid, \d+ invalid, (\d+) late", report)
    assert m, report
    return int(m.group(1))


def test_customer_sorted_history_replays_like_the_time_sorted_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    events = history(events=54_000, customers=3_000, seed=11)
    assert len(events) >= 50_000
    path = write_jsonl(tmp_path / "by_customer.jsonl", events)
    want, want_changes = reference(events)
    assert want.late == 0 and want.changes > 1_000 and sum(want.sizes().values()) > 1_000

    out = tmp_path / "changes.jsonl"
    report = run_cli(capsys, "--events", str(path), "--out", str(out))
    got_changes = out.read_bytes().splitlines(keepends=True)
    assert got_changes == want_changes  # same changes, same order, same bytes
    table = sizes(report)
    assert table == {name: want.sizes().get(name, 0) for name in table}
    assert final_members(got_changes) == {k: v for k, v in want.members.items() if v}
    assert late_count(report) == 0
    m = re.search(r"order: by event time \(sorted in memory\); (\d+) events were out of "
                  r"file order, (\d+) of them beyond the allowed lateness", report)
    assert m, report
    # in file order most of a customer-sorted export would have been refused as late
    assert int(m.group(2)) > len(events) // 2


def test_external_sort_spills_runs_gives_the_same_result_and_cleans_up(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    events = history(events=8_000, customers=400, seed=5)
    path = write_jsonl(tmp_path / "by_customer.jsonl", events)
    sort_dir = tmp_path / "sort"
    sort_dir.mkdir()
    in_memory = tmp_path / "in_memory.jsonl"
    report_mem = run_cli(capsys, "--events", str(path), "--out", str(in_memory))
    assert "sorted in memory" in report_mem
    spilled = tmp_path / "spilled.jsonl"
    report = run_cli(capsys, "--events", str(path), "--out", str(spilled),
                     "--sort-buffer-mb", "0.2", "--tmp-dir", str(sort_dir))
    m = re.search(r"external sort: (\d+) runs, (\d+) spilled", report)
    assert m, report
    assert int(m.group(2)) >= 3
    assert spilled.read_bytes() == in_memory.read_bytes()
    assert sizes(report) == sizes(report_mem)
    assert list(sort_dir.iterdir()) == []
    # the "beyond lateness" count is exactly what --arrival-order refuses as late
    beyond = int(re.search(r"(\d+) of them beyond", report).group(1))  # type: ignore[union-attr]
    arrival = run_cli(capsys, "--events", str(path), "--arrival-order")
    assert late_count(arrival) == beyond > 0
    assert "order: file order (--arrival-order)" in arrival


def test_arrival_order_is_the_plain_file_order_replay(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]):
    """--arrival-order is the old behaviour: processors.replay over the events in file
    order, late events refused."""
    from schemas.validation import validate_event  # noqa: PLC0415

    events = history(events=3_000, customers=200, seed=2)
    path = write_jsonl(tmp_path / "by_customer.jsonl", events)
    engine, _ = build_engine(CATALOGUE)
    old: list[bytes] = []
    want = replay(engine, [validate_event(e, 1_811_808_000_000) for e in events],
                  on_change=lambda ch: old.append(change_record(ch, VERSION)))
    out = tmp_path / "changes.jsonl"
    report = run_cli(capsys, "--events", str(path), "--out", str(out), "--arrival-order")
    assert out.read_bytes().splitlines(keepends=True) == old
    assert late_count(report) == want.late > len(events) // 2


def test_sort_is_stable_across_runs_and_removes_its_files_on_error(tmp_path: Path):
    rng = random.Random(3)
    events = [{"timestamp": rng.randrange(20), "event_id": f"e{i}", "pad": "x" * 200}
              for i in range(3_000)]
    with TimeOrder(events, run_bytes=20_000, lateness_ms=5, tmp_dir=tmp_path) as order:
        got = list(order)
    assert got == sorted(events, key=lambda e: e["timestamp"])  # ties keep file order
    assert order.stats.spilled_runs >= 10
    assert order.stats.out_of_order > 0 and order.stats.beyond_lateness > 0
    assert list(tmp_path.iterdir()) == []

    seen_files: list[int] = []
    with pytest.raises(RuntimeError, match="consumer failed"), \
            TimeOrder(events, run_bytes=20_000, lateness_ms=5, tmp_dir=tmp_path) as order:
        for i, _ in enumerate(order):
            if i == 100:
                seen_files.append(sum(1 for _ in tmp_path.rglob("run-*")))
                raise RuntimeError("consumer failed")
    assert seen_files[0] >= 10  # the runs were on disk while merging
    assert list(tmp_path.iterdir()) == []


def test_small_input_never_touches_the_disk(tmp_path: Path):
    events = [{"timestamp": t, "event_id": str(t)} for t in (3, 1, 2)]
    with TimeOrder(events, run_bytes=1 << 20, lateness_ms=0, tmp_dir=tmp_path) as order:
        assert [e["timestamp"] for e in order] == [1, 2, 3]
    assert order.stats.runs == 1 and order.stats.spilled_runs == 0
    assert list(tmp_path.iterdir()) == []
