"""Offline engine benchmark (`make bench-engine`): throughput, latency, memory, state size.

The input is never held in memory: a realistic stream (stream.tools.generate; default 1.1M events
over 150k customers, 30 days, 1% duplicates, 1% out of order) is generated and validated
lazily, in chunks of CHUNK events, and made again from the same seed for every pass. The time
spent making it is measured apart and left out of every timed figure.

1. first pass: generation and validation rates, and the baseline, the bare per-event loop a
   driver cannot avoid (routing id, dedupe set insert, state dict lookup and store), timed
   over each chunk only;
2. replays the stream through the engine with the default catalogue (processors.replay:
   watermark clock, timer heap) and prints events/s and the ratio to the baseline;
3. replays again timing every 50th ``engine.apply`` call individually (p50/p99 µs);
4. encodes every final state with state.codec (bytes per customer: mean, p50, p99) and
   reports RSS after each pass and the peak (the final profiles are what remains);
   (the gen0 threshold is raised, as the worker does at start-up);
5. with ``--profile N``, profiles a replay of the first N events (cProfile, top lines; the
   replay is resumed chunk by chunk, PROFILE_CHUNK events at a time, so that the generator
   stays out of the profile).
6. compiled vs pure Python (``--pure-sample N``, see ``compare_pure``): replays the first N
   events through the pure-Python reference (a second copy of the core loaded from the .py
   sources in this process, ``processors.native.import_pure_copy``) and through the loaded
   engine (the mypyc-compiled one after ``make install``), asserts the change logs and the
   encoded final states are byte-identical, and prints both rates and the ratio.

One core, machine shared with other processes: figures are noisy, compare ratios.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import io
import pstats
import random
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processors import native  # noqa: E402
from processors.engine import Engine  # noqa: E402
from processors.lang.compile import compile_catalogue  # noqa: E402
from processors.lang.load import load_definitions  # noqa: E402
from processors.lang.typesfile import load_types  # noqa: E402
from processors.replay import ReplayResult, replay  # noqa: E402
from schemas.validation import Schema, validate_event  # noqa: E402
from state.codec import decode_state, encode_state  # noqa: E402
from stream.tools.generate import DAY, GeneratorConfig, generate  # noqa: E402

SAMPLE_EVERY = 50
CHUNK = 4_096  # events generated and validated at a time
PROFILE_CHUNK = 50_000  # larger for the profile: each resumed replay rebuilds the timer heap
GC_GEN0 = 50_000  # the worker's gen0 threshold (stream/cli/cmd_worker.py)


class TimedEngine:
    """Delegates to an Engine, timing every SAMPLE_EVERY-th apply call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.n = 0
        self.samples: list[int] = []
        self.advance = engine.advance
        self.merge = engine.merge
        self.forget = engine.forget
        self.tombstone = engine.tombstone
        self.reevaluate = engine.reevaluate
        self.lateness = engine.lateness  # the replay driver's records sweep

    def apply(self, state: Any, event: dict[str, Any], now: int) -> Any:
        self.n += 1
        if self.n % SAMPLE_EVERY:
            return self.engine.apply(state, event, now)
        t = time.perf_counter_ns()
        step = self.engine.apply(state, event, now)
        self.samples.append(time.perf_counter_ns() - t)
        return step


class Source:
    """The generated stream as validated canonical events, made lazily in chunks of CHUNK;
    every call of :meth:`chunks` or :meth:`stream` makes it again from the same seed. The
    seconds spent generating and validating are added up, to be left out of timings."""

    def __init__(self, cfg: GeneratorConfig, custom_share: float = 0.0,
                 schema: Any = None) -> None:
        self.cfg = cfg
        self.custom_share = custom_share  # custom events after a customer's event (--with)
        self.schema = schema
        # the validator's future bound: generated timestamps stay within days + a few hours
        self.clock = cfg.start + int(cfg.days * DAY) + 7 * DAY
        self.gen_s = 0.0
        self.val_s = 0.0

    @property
    def seconds(self) -> float:
        return self.gen_s + self.val_s

    def chunks(self, limit: int | None = None,
               size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
        raw: Iterator[dict[str, Any]] = generate(self.cfg)
        if self.custom_share:
            raw = with_custom_events(raw, self.custom_share, self.cfg.seed)
        if limit is not None:
            raw = islice(raw, limit)
        clock = self.clock
        while True:
            t0 = time.perf_counter()
            batch = list(islice(raw, size))
            t1 = time.perf_counter()
            chunk = [validate_event(e, clock, schema=self.schema) for e in batch]
            del batch
            self.gen_s += t1 - t0
            self.val_s += time.perf_counter() - t1
            if not chunk:
                return
            yield chunk

    def stream(self, limit: int | None = None) -> Iterator[dict[str, Any]]:
        for chunk in self.chunks(limit):
            yield from chunk


def with_custom_events(raw: Iterator[dict[str, Any]], share: float,
                       seed: int) -> Iterator[dict[str, Any]]:
    """``raw`` with, after a share of the known customers' events, one custom event of the
    same customer 1 ms later (app_session or review_posted of processors/event_types.yaml, the
    mix of `segstream simulate --custom-share`)."""
    rng = random.Random(seed * 31 + 7)
    n = 0
    for ev in raw:
        yield ev
        cid = ev.get("customer_id")
        if cid is None or ev.get("type") in ("alias", "forget") or rng.random() >= share:
            continue
        n += 1
        if rng.random() < 0.7:
            typ, props = "app_session", {"minutes": round(rng.expovariate(1 / 12), 1),
                                         "platform": rng.choice(["ios", "android", "web"])}
        else:
            typ, props = "review_posted", {
                "rating": rng.choices([1, 2, 3, 4, 5], weights=[1, 1, 2, 4, 6])[0],
                "product_id": f"p{rng.randrange(500):04d}"}
        yield {"event_id": f"bench-c{n}", "type": typ, "customer_id": cid,
               "anonymous_id": None, "timestamp": ev["timestamp"] + 1, "source": "bench",
               "schema_version": 1, "properties": props}


def combined_definitions(base: Path, extra: list[Path], types: Any) -> Any:
    """One catalogue: the segments of ``base`` then those of each ``extra`` file."""
    doc = yaml.safe_load(base.read_text(encoding="utf-8"))
    for path in extra:
        doc["segments"] += yaml.safe_load(path.read_text(encoding="utf-8"))["segments"]
    doc["version"] = f"{doc['version']}+" + "+".join(p.stem for p in extra)
    return load_definitions(yaml.safe_dump(doc, sort_keys=False), name="combined",
                            types=types)


def compare_catalogues(events: list[dict[str, Any]], base: Any, combined: Any,
                       rounds: int = 3) -> float:
    """Replay ``events`` with the ``base`` and the ``combined`` catalogue, alternating
    ``rounds`` times (best CPU time of each); print both rates and the ratio (combined / base,
    the goal of the language issue: at least 0.9)."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for label, cat in (("base", base), ("combined", combined)):
            engine = Engine(compile_catalogue(cat))
            gc.collect()
            c = time.process_time()
            replay(engine, events)
            cpu = time.process_time() - c
            best[label] = min(best.get(label, cpu), cpu)
    n = len(events)
    ratio = best["base"] / best["combined"]
    print(f"\nthe catalogue with the extra segments ({n:,} events, best of {rounds} alternating "
          f"runs):")
    print(f"  {base.version:<28} {len(base.segments):3} segments "
          f"{n / best['base']:10,.0f} events/CPU-s")
    print(f"  {combined.version:<28} {len(combined.segments):3} segments "
          f"{n / best['combined']:10,.0f} events/CPU-s")
    print(f"  ratio with/without the extra segments: {ratio:.3f} (goal >= 0.90)")
    return ratio


def baseline(source: Source) -> tuple[float, int, int]:
    """(seconds, events, routing ids) of the bare loop over the stream: routing id, dedupe
    insert, state lookup and store, timed over each chunk (not the making of it)."""
    states: dict[str, Any] = {}
    seen: set[str] = set()
    seconds, n = 0.0, 0
    for chunk in source.chunks():
        n += len(chunk)
        t = time.perf_counter()
        for ev in chunk:
            rid = ev["customer_id"] or ev["anonymous_id"]
            eid = ev["event_id"]
            if eid in seen:
                continue
            seen.add(eid)
            st = states.get(rid)
            if st is None:
                st = states[rid] = [0]
            st[0] = ev["timestamp"]
        seconds += time.perf_counter() - t
    return seconds, n, len(states)


def timed_replay(engine: Any, source: Source) -> tuple[ReplayResult, float]:
    """A replay of the lazily made stream; (result, seconds without making the stream)."""
    made = source.seconds
    t = time.perf_counter()
    result = replay(engine, source.stream())
    total = time.perf_counter() - t
    return result, total - (source.seconds - made)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- compiled (mypyc) vs pure-Python reference -------------------------------------------------
def _replay_log(modules: dict[str, Any], segments: Path,
                events: list[dict[str, Any]]) -> tuple[bytes, bytes, float, float]:
    """One replay with one copy of the core: (changes as orjson, encoded final states, wall
    seconds, CPU seconds of this process)."""
    catalogue = modules["processors.lang.compile"].compile_catalogue(
        modules["processors.lang.load"].load_definitions(segments))
    engine = modules["processors.engine"].Engine(catalogue)
    changes: list[Any] = []
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    result = modules["processors.replay"].replay(engine, events, on_change=changes.append)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    encode = modules["state.codec"].encode_state
    states = b"".join(cid.encode() + b"\0" + encode(st) for cid, st in
                      sorted(result.states.items()))
    return orjson.dumps([tuple(ch) for ch in changes]), states, wall, cpu


def compare_pure(events: list[dict[str, Any]], segments: Path, rounds: int = 2) -> float:
    """Replay ``events`` with the pure-Python reference and with the loaded engine, alternating
    ``rounds`` times (best of each); assert identical output; print the rates. Returns the
    ratio of CPU rates (loaded / pure)."""
    names = ["processors.engine", "processors.lang.compile", "processors.lang.load",
             "processors.replay", "state.codec"]
    pure = native.import_pure_copy(names)
    loaded = {name: importlib.import_module(name) for name in names}
    n = len(events)
    best: dict[str, tuple[float, float]] = {}
    outputs: dict[str, tuple[bytes, bytes]] = {}
    for _ in range(rounds):
        for label, modules in (("pure", pure), ("loaded", loaded)):
            log, states, wall, cpu = _replay_log(modules, segments, events)
            if label in outputs:
                assert outputs[label] == (log, states), f"{label}: two runs differ"
            outputs[label] = (log, states)
            w, c = best.get(label, (wall, cpu))
            best[label] = (min(w, wall), min(c, cpu))
    (pure_log, pure_states), (log, states) = outputs["pure"], outputs["loaded"]
    assert log == pure_log, "the change logs differ between pure Python and the loaded engine"
    assert states == pure_states, "the encoded final states differ"
    (pw, pc), (lw, lc) = best["pure"], best["loaded"]
    print(f"\ncompiled vs pure Python ({n:,} events, best of {rounds} alternating runs; "
          f"loaded engine: {native.describe()}):")
    print(f"  change logs byte-identical: {len(orjson.loads(pure_log)):,} changes, "
          f"{len(pure_log):,} B; final states byte-identical: {len(pure_states):,} B")
    print(f"  pure Python   {n / pw:10,.0f} events/s  {n / pc:10,.0f} events/CPU-s")
    print(f"  loaded engine {n / lw:10,.0f} events/s  {n / lc:10,.0f} events/CPU-s")
    print(f"  ratio loaded/pure: {pw / lw:.2f}x wall, {pc / lc:.2f}x CPU")
    return pc / lc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_100_000)
    ap.add_argument("--customers", type=int, default=150_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--segments", type=Path, default=ROOT / "processors" / "catalogue.yaml")
    ap.add_argument("--profile", type=int, default=200_000, metavar="N",
                    help="profile a replay of the first N events (0: skip)")
    ap.add_argument("--no-latency", action="store_true", help="skip the timed second replay")
    ap.add_argument("--pure-sample", type=int, default=200_000, metavar="N",
                    help="compare the loaded engine with the pure-Python reference on the "
                         "first N events (0: skip)")
    ap.add_argument("--with", dest="extra", type=Path, action="append", default=[],
                    metavar="FILE", help="definitions whose segments are added for a last "
                    "comparison (same stream, same sample as --pure-sample): the catalogue "
                    "alone vs with them")
    ap.add_argument("--types", type=Path, help="event-types file for --with's segments")
    ap.add_argument("--custom-share", type=float, default=0.0,
                    help="share of known customers' events followed by a custom event "
                         "(app_session, review_posted: needs --types)")
    a = ap.parse_args(argv)

    types = load_types(a.types) if a.types else None
    catalogue = load_definitions(a.segments)
    compiled = compile_catalogue(catalogue)
    print(f"catalogue: {a.segments.name} version {catalogue.version}, "
          f"{len(catalogue.segments)} segments; engine: {native.describe()}")

    cfg = GeneratorConfig(customers=a.customers, events=a.events, days=a.days, seed=a.seed,
                          duplicate_share=0.01, out_of_order_share=0.01)
    source = Source(cfg, a.custom_share, Schema(types) if types is not None else None)
    # like the worker (stream/cli/cmd_worker.py): freeze what exists before the loop and raise
    # the gen0 threshold
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0, gen1, gen2)

    rss_start = rss_mb()
    base_s, n, n_ids = baseline(source)
    base_rate = n / base_s
    print(f"stream: {n:,} events, {n_ids:,} routing ids, made lazily in chunks of {CHUNK:,}; "
          f"generated in {source.gen_s:.1f} s ({n / source.gen_s:,.0f}/s), validated in "
          f"{source.val_s:.1f} s ({n / source.val_s:,.0f}/s)")
    rss_base = rss_mb()

    gc.collect()
    rss_before = rss_mb()
    result, eng_s = timed_replay(Engine(compiled), source)
    rss_after = rss_mb()
    peak_replay = peak_mb()
    assert result.events == n, (result.events, n)
    rate = n / eng_s
    print(f"\nthroughput (1 core): engine replay {rate:,.0f} events/s ({eng_s:.1f} s); "
          f"baseline loop {base_rate:,.0f} events/s; engine/baseline = {rate / base_rate:.3f} "
          f"(baseline is {base_rate / rate:.1f}x faster)")
    print(f"replay: applied {result.applied:,}, late {result.late:,}, timer runs "
          f"{result.timer_runs:,}, changes {result.changes:,}, merges {result.merges:,}, "
          f"forgets {result.forgets:,}, profiles {len(result.states):,}")
    print("segment sizes: " + ", ".join(f"{k} {v:,}" for k, v in result.sizes().items()))

    sizes: list[int] = []
    enc_s = dec_s = 0.0
    clock = time.perf_counter
    for s in result.states.values():  # one blob at a time: no list of every encoded state
        t = clock()
        blob = encode_state(s)
        t1 = clock()
        decode_state(blob)
        dec_s += clock() - t1
        enc_s += t1 - t
        sizes.append(len(blob))
    print(f"\nstate per profile (state.codec): mean {statistics.fmean(sizes):,.0f} B, "
          f"p50 {pct(sizes, 0.5):,.0f} B, p99 {pct(sizes, 0.99):,.0f} B, max {max(sizes):,} B; "
          f"encode {enc_s / len(sizes) * 1e6:.1f} µs, decode {dec_s / len(sizes) * 1e6:.1f} µs "
          f"per state")
    profiles = len(result.states)
    grew = rss_after - rss_before
    print(f"memory (input streamed, never held): RSS {rss_start:,.0f} MB at start, "
          f"{rss_base:,.0f} MB after the baseline pass, {rss_after:,.0f} MB after the replay; "
          f"peak RSS {peak_replay:,.0f} MB by the end of the replay; the replay grew RSS by "
          f"{grew:,.0f} MB, i.e. {grew * 2**20 / max(1, profiles):,.0f} B per profile for the "
          f"{profiles:,} final profiles (ReplayResult.states) that remain in memory")
    del result, sizes
    gc.collect()

    if not a.no_latency:
        timed = TimedEngine(Engine(compiled))
        replay(timed, source.stream())  # type: ignore[arg-type]
        us = [x / 1000 for x in timed.samples]
        print(f"\nper-event engine.apply (every {SAMPLE_EVERY}th call timed, {len(us):,} "
              f"samples): p50 {pct(us, 0.5):.1f} µs, p99 {pct(us, 0.99):.1f} µs, "
              f"max {max(us):,.0f} µs")

    if a.profile:
        prof = cProfile.Profile()
        engine = Engine(compiled)
        res: ReplayResult | None = None
        for chunk in source.chunks(a.profile, PROFILE_CHUNK):
            prof.enable()
            res = replay(engine, chunk, resume=res)
            prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
        print(f"\ncProfile of a replay of {res.events if res else 0:,} events (top by own "
              "time):")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip()
                        and not line.lstrip().startswith(("Ordered by", "List reduced"))))

    if a.pure_sample:
        compare_pure(list(source.stream(a.pure_sample)), a.segments)
    if a.extra:
        compare_catalogues(list(source.stream(a.pure_sample or 200_000)), catalogue,
                           combined_definitions(a.segments, a.extra, types))
    print(f"\npeak RSS of the whole run: {peak_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
