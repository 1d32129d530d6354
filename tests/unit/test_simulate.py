"""`segstream simulate`: file mode feeds `segstream replay`, disorder shares, determinism, pacing
into an in-process collector."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from schemas.errors import InvalidEvent
from schemas.validation import validate_event
from stream.cli import main
from stream.collector.service import Collector, create_app
from stream.settings import Settings
from stream.tools.simulate import HttpSink, SimConfig, Simulation, run_paced

REPO = Path(__file__).resolve().parents[2]
START = 1_795_400_000_000
HOUR = 3_600_000


def simulate_file(path: Path, *extra: str, seed: int = 1) -> None:
    assert main(["simulate", "--customers", "40", "--rate", "100", "--duration", "30s",
                 "--to", "file", str(path), "--seed", str(seed), "--start", str(START),
                 *extra]) == 0


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_file_mode_writes_valid_jsonl_that_replay_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sim.jsonl"
    simulate_file(path)
    events = lines(path)
    assert len(events) == 3_000  # 30 s at 100 events/s
    for e in events:
        validate_event(e, now_ms=START + HOUR)
    assert events[0]["timestamp"] == START
    assert START + 29_000 <= max(e["timestamp"] for e in events) <= START + 31_000
    kinds = Counter(e["type"] for e in events)
    for kind in ("page_view", "cart_add", "purchase", "email_sent", "email_open", "identify",
                 "alias"):
        assert kinds[kind] > 0, kind
    changes = tmp_path / "changes.jsonl"
    assert main(["replay", "--segments", str(REPO / "processors" / "catalogue.yaml"),
                 "--events", str(path), "--out", str(changes), "--quiet", "--strict"]) == 0
    assert "3000 read, 3000 valid, 0 invalid" in capsys.readouterr().out
    assert changes.read_bytes().count(b'"enter"') > 0


def test_disorder_shares_are_respected_roughly(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    sim = Simulation(SimConfig(customers=200, seed=5, late_share=0.05, duplicate_share=0.04,
                               malformed_share=0.03))
    events: list[dict[str, Any]] = []
    for i in range(200):
        events += sim.take(100, START + i * 1_000)
    n = len(events)
    c = sim.counts
    assert c.events == n == 20_000
    assert 0.04 < c.late / n < 0.06 and 0.025 < c.malformed / n < 0.04
    assert 0.03 < c.duplicates / n < 0.05
    invalid = 0
    for e in events:
        try:
            validate_event(e, now_ms=START + 300_000)
        except InvalidEvent:
            invalid += 1
    assert invalid >= c.malformed  # plus re-sent copies of malformed ones
    ids = Counter(e.get("event_id") for e in events if "event_id" in e)
    assert sum(k - 1 for k in ids.values()) >= c.duplicates * 0.95
    # late events are stamped --late-by behind the clock; the others never go backwards
    # for one customer
    last: dict[str, int] = {}
    late = 0
    seen: set[str] = set()
    for e in events:
        rid = e.get("customer_id") or e.get("anonymous_id")
        if (not isinstance(e.get("timestamp"), int) or not isinstance(rid, str)
                or "event_id" not in e or e["event_id"] in seen):
            continue
        seen.add(e["event_id"])
        if e["timestamp"] < last.get(rid, 0) - HOUR:
            late += 1
            continue
        assert e["timestamp"] > last.get(rid, 0)
        last[rid] = e["timestamp"]
    assert late > 0.8 * c.late


def test_same_seed_same_file(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    knobs = ("--late-share", "0.02", "--duplicate-share", "0.02", "--malformed-share", "0.02")
    simulate_file(a, *knobs)
    simulate_file(b, *knobs)
    simulate_file(c, *knobs, seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("argv", [["--to", "file"], ["--to", "ftp", "x", "y"],
                                  ["--rate", "0"], ["--late-share", "2"]])
def test_bad_options(argv: list[str], tmp_path: Path) -> None:
    try:
        code = main(["simulate", "--duration", "1", *argv])
    except SystemExit as exc:  # argparse refuses
        code = int(exc.code or 0)
    assert code != 0


def test_paced_posts_to_a_collector_and_retries_rate_limits() -> None:
    """Live mode into an in-process collector (fake producer): paced near the rate, 429s
    retried after Retry-After, malformed events reported back as rejected."""
    key = "sim-key-0123456789abcdef"
    produced: list[dict[str, Any]] = []

    class Producer:
        async def send(self, topic: str, value: bytes | None = None,
                       key: bytes | None = None) -> Any:
            produced.extend(orjson.loads(value or b"[]"))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    async def go() -> tuple[HttpSink, Simulation, float]:
        settings = Settings.build(collector_write_keys=(f"web={key}",), collector_rate_per_s=150,
                                  collector_rate_burst=60)
        server = TestServer(create_app(Collector(settings, Producer())))
        await server.start_server()
        try:
            sink = HttpSink(str(server.make_url("/v1/events")), key)
            await sink.start()
            sim = Simulation(SimConfig(customers=30, seed=3, malformed_share=0.05))
            started = time.monotonic()
            await run_paced(sim, sink, rate=200.0, duration=2.0, batch=20,
                            stop=asyncio.Event())
            await sink.close()
            return sink, sim, time.monotonic() - started
        finally:
            await server.close()

    sink, sim, seconds = asyncio.run(go())
    assert 350 <= sim.counts.events <= 420 and seconds < 10
    assert sink.limited > 0 and sink.lost == 0  # 200/s against 150/s: some waits
    assert sink.accepted + sink.rejected == sim.counts.events
    assert sink.rejected == sim.counts.malformed
    assert len(produced) == sink.accepted


def test_http_sink_waits_until_the_collector_is_ready() -> None:
    async def go() -> float:
        keys = ("web=sim-key-0123456789abcdef",)
        collector = Collector(Settings.build(collector_write_keys=keys))
        server = TestServer(create_app(collector))
        await server.start_server()
        try:
            async def connect_later() -> None:
                await asyncio.sleep(0.8)
                collector.producer = object()  # type: ignore[assignment]

            task = asyncio.create_task(connect_later())
            sink = HttpSink(str(server.make_url("/v1/events")), "sim-key-0123456789abcdef")
            started = time.monotonic()
            await sink.start()
            waited = time.monotonic() - started
            await sink.close()
            await task
            return waited
        finally:
            await server.close()

    assert asyncio.run(go()) >= 0.7


def test_custom_share_sends_declared_custom_events(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sim.jsonl"
    simulate_file(path, "--custom-share", "0.2")
    events = lines(path)
    kinds = Counter(e["type"] for e in events)
    assert 0.12 < (kinds["app_session"] + kinds["review_posted"]) / len(events) < 0.28
    assert kinds["review_posted"] > 0 and kinds["page_view"] > 0
    assert len({e["event_id"] for e in events}) == len(events)
    changes = tmp_path / "changes.jsonl"
    assert main(["replay", "--segments", str(REPO / "processors" / "custom_segments.yaml"),
                 "--types", str(REPO / "processors" / "event_types.yaml"),
                 "--events", str(path), "--out", str(changes), "--quiet", "--strict"]) == 0
    assert f"{len(events)} valid, 0 invalid" in capsys.readouterr().out
    entered = {orjson.loads(line)["segment"] for line in changes.read_bytes().splitlines()
               if b'"enter"' in line}
    assert {"unhappy_reviewers", "app_light_users"} <= entered
