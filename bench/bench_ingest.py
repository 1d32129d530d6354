"""Ingest throughput on the real broker: arrays, singles, and a plain-Faust baseline, in one run.

`make bench-ingest` runs it through deploy/local/with-infra.sh (SEGSTREAM_KAFKA_BOOTSTRAP set).
Three phases, each in a fresh worker process on pre-produced input (its own topics):

  (a) arrays   raw records of 100 events each -> the ingest agent -> bundles
  (b) singles  one event per raw record        -> the ingest agent -> bundles
  (a') custom  the arrays of (a) with 30% custom events (processors/event_types.yaml, set as
               SEGSTREAM_TYPES_FILE): its rate must stay within 10% of (a)
  (c) baseline the same single-event input     -> a plain Faust agent that decodes each record
               and forwards it as one record (``await topic.send()``), no validation

Each phase is timed inside the worker from the start of the first batch (first records consumed)
to the acknowledgement of the output holding the last event. Printed: events/s, events per CPU
second of the worker process, and the ratios. The box is shared (2 cores, broker JVM, other
jobs): expect noise of +-20% between runs.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.common import Clock  # noqa: E402

RAW_PARTITIONS = 4
BUNDLE_PARTITIONS = 8


# --- input ---------------------------------------------------------------------------------

def make_events(n: int, seed: int, custom: float = 0.0) -> list[dict[str, Any]]:
    """Realistic small events (~250 bytes): page views and cart adds of 20k customers; a share
    ``custom`` of them are custom events (app_session, review_posted) instead."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        cid = f"customer-{rng.randrange(20_000)}"
        if rng.random() < custom:
            ev = ({"event_id": f"e-{seed}-{i}", "type": "app_session", "customer_id": cid,
                   "timestamp": now - rng.randrange(3_600_000), "source": "app",
                   "properties": {"minutes": round(rng.uniform(0, 60), 1),
                                  "platform": rng.choice(["ios", "android", "web"])}}
                  if rng.random() < 0.7 else
                  {"event_id": f"e-{seed}-{i}", "type": "review_posted", "customer_id": cid,
                   "timestamp": now - rng.randrange(3_600_000), "source": "web",
                   "properties": {"rating": rng.randint(1, 5),
                                  "product_id": f"sku-{rng.randrange(5000)}"}})
        elif rng.random() < 0.7:
            ev = {"event_id": f"e-{seed}-{i}", "type": "page_view", "customer_id": cid,
                  "timestamp": now - rng.randrange(3_600_000), "source": "web",
                  "properties": {"url": f"https://shop.example.com/p/{rng.randrange(5000)}",
                                 "category": rng.choice(["shoes", "hats", "bags"]),
                                 "device": rng.choice(["iphone", "mac", "android"])}}
        else:
            ev = {"event_id": f"e-{seed}-{i}", "type": "cart_add", "customer_id": cid,
                  "timestamp": now - rng.randrange(3_600_000), "source": "web",
                  "properties": {"product_id": f"sku-{rng.randrange(5000)}",
                                 "price": round(rng.uniform(1, 300), 2), "quantity": 1}}
        out.append(ev)
    return out


def validation_rates(inputs: dict[str, list[bytes]], rounds: int = 7) -> dict[str, float]:
    """Events per CPU-second of ``parse_record`` alone on each input, in this process: rounds
    interleaved, the median kept (steadier than the worker phases on a shared box)."""
    from processors.lang.typesfile import load_types  # noqa: PLC0415
    from schemas.validation import Schema, parse_record  # noqa: PLC0415

    schema = Schema(load_types(REPO / "processors" / "event_types.yaml"))
    now = int(time.time() * 1000) + 60_000
    times: dict[str, list[float]] = {name: [] for name in inputs}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        for name, records in inputs.items():
            t = time.process_time()
            sch = schema if name == "custom" else None  # arrays: no types file, like (a)
            n = sum(len(parse_record(r, now, schema=sch)[0]) for r in records)
            times[name].append(time.process_time() - t)
            counts[name] = n
    return {name: counts[name] / sorted(ts)[len(ts) // 2] for name, ts in times.items()}


# --- phases (run inside a worker subprocess) --------------------------------------------------

def run_phase(phase: str, target: int, result_path: Path) -> None:
    import faust  # noqa: PLC0415

    from stream.cli.cmd_worker import tune_gc  # noqa: PLC0415
    from stream.settings import Settings  # noqa: PLC0415
    from stream.worker.agents import ingest  # noqa: PLC0415
    from stream.worker.bootstrap import attach_ingest, build_worker  # noqa: PLC0415

    settings = Settings.from_env()
    worker = build_worker(settings, with_agents=False)
    app, topics = worker.app, worker.topics
    clock = Clock(target, result_path)

    if phase in ("arrays", "custom", "singles"):
        agent = attach_ingest(worker)
        handle, confirm = agent.handle, agent._confirm
        done: dict[str, float] = {"events": 0, "bundles": 0, "records": 0, "pack_cpu": 0.0,
                                  "encode_cpu": 0.0}
        packer_class = type(agent.packer)  # __slots__: patch the class (this process only)
        add_record, encode_within = packer_class.add_record, ingest.encode_within

        def timed_add_record(self: Any, *args: Any) -> None:  # validate + pack one raw record
            cpu = time.process_time()
            add_record(self, *args)
            done["pack_cpu"] += time.process_time() - cpu

        def timed_encode(*args: Any) -> Any:  # encoding of one bundle
            cpu = time.process_time()
            out = encode_within(*args)
            done["encode_cpu"] += time.process_time() - cpu
            return out

        packer_class.add_record = timed_add_record
        ingest.encode_within = timed_encode  # type: ignore[assignment]

        async def timed_handle(events: Any) -> None:
            clock.start()
            await handle(events)

        async def timed_confirm(events: Any, result: Any, futures: Any, sizes: list[int],
                                started: float) -> None:
            await confirm(events, result, futures, sizes, started)
            done["events"] += sum(sizes)
            done["bundles"] += len(sizes)
            done["records"] += result.records
            if not clock.done and done["events"] >= target:
                clock.finish(int(done["events"]), {
                    "bundles": int(done["bundles"]), "records": int(done["records"]),
                    "pack_cpu_seconds": done["pack_cpu"],
                    "encode_cpu_seconds": done["encode_cpu"]})

        agent.handle, agent._confirm = timed_handle, timed_confirm
    else:
        out = topics.bundles  # any raw-bytes topic will do: forward one record per event
        count = 0

        async def baseline(stream: Any) -> None:
            nonlocal count
            await out.maybe_declare()
            async for value in stream:
                clock.start()
                event = orjson.loads(value)
                await out.send(key=event["customer_id"].encode(), value=orjson.dumps(event))
                count += 1
                if count >= target and not clock.done:
                    await app.producer.flush()  # the last forward is acknowledged
                    clock.finish(count, {})

        app.agent(topics.raw, name="bench.baseline")(baseline)

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    tune_gc()  # as `segstream worker` does
    worker.execute_from_commandline()


# --- driver ------------------------------------------------------------------------------------

def phase_env(bootstrap: str, prefix: str, tmp: Path) -> dict[str, str]:
    return common.phase_env(bootstrap, prefix, tmp, {
        "SEGSTREAM_RAW_PARTITIONS": str(RAW_PARTITIONS),
        "SEGSTREAM_BUNDLE_PARTITIONS": str(BUNDLE_PARTITIONS)})


def spawn_phase(phase: str, target: int, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    return common.spawn_phase(Path(__file__), phase, ["--target", str(target)], env, tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--array-events", type=int, default=200_000)
    parser.add_argument("--single-events", type=int, default=60_000)
    parser.add_argument("--phase", choices=["arrays", "custom", "singles", "baseline"])
    parser.add_argument("--target", type=int)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args()
    if args.phase:
        run_phase(args.phase, args.target, args.result)
        return 0

    from stream.settings import Settings  # noqa: PLC0415

    bootstrap = ",".join(Settings.from_env().kafka.bootstrap)
    run_id = f"bench{int(time.time())}-{os.getpid()}"
    tmp = REPO / ".run" / run_id
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"broker {bootstrap}; run {run_id}; logs in {tmp}")

    n_arr = args.array_events - args.array_events % 100
    arrays = make_events(n_arr, seed=1)
    customs = make_events(n_arr, seed=3, custom=0.3)
    singles = make_events(args.single_events, seed=2)
    single_records = [orjson.dumps(e) for e in singles]
    inputs = {
        "arrays": ([orjson.dumps(arrays[i:i + 100]) for i in range(0, n_arr, 100)], n_arr),
        "custom": ([orjson.dumps(customs[i:i + 100]) for i in range(0, n_arr, 100)], n_arr),
        "singles": (single_records, len(singles)),
        "baseline": (single_records, len(singles)),
    }
    results: dict[str, dict[str, Any]] = {}
    for phase, (records, n_events) in inputs.items():
        prefix = f"{run_id}-{phase}-"
        t = time.perf_counter()
        common.produce(bootstrap, common.topic(prefix, "raw", RAW_PARTITIONS), records)
        print(f"[{phase}] produced {len(records)} records ({n_events} events) "
              f"in {time.perf_counter() - t:.1f}s; running the worker...", flush=True)
        env = phase_env(bootstrap, prefix, tmp)
        if phase == "custom":
            env["SEGSTREAM_TYPES_FILE"] = str(REPO / "processors" / "event_types.yaml")
        results[phase] = spawn_phase(phase, n_events, env, tmp)

    print()
    print(f"{'phase':<10} {'events':>8} {'seconds':>8} {'events/s':>10} {'ev/CPU-s':>10}  notes")
    for phase, r in results.items():
        rate = r["events"] / r["seconds"]
        per_cpu = r["events"] / max(r["cpu_seconds"], 1e-9)
        notes = (f"{r['records']} raw records -> {r['bundles']} bundles "
                 f"({r['events'] / max(r['bundles'], 1):.0f} events/bundle); CPU share: "
                 f"validate+pack {100 * r['pack_cpu_seconds'] / r['cpu_seconds']:.0f}%, "
                 f"encode {100 * r['encode_cpu_seconds'] / r['cpu_seconds']:.0f}%"
                 if "bundles" in r else "await topic.send() per event, no validation")
        r["rate"] = rate
        print(f"{phase:<10} {r['events']:>8} {r['seconds']:>8.2f} {rate:>10,.0f} "
              f"{per_cpu:>10,.0f}  {notes}")
    base = results["baseline"]["rate"]
    print()
    print(f"arrays  / baseline: {results['arrays']['rate'] / base:6.1f}x")
    print(f"singles / baseline: {results['singles']['rate'] / base:6.1f}x")
    print(f"arrays  / singles : {results['arrays']['rate'] / results['singles']['rate']:6.1f}x")
    per_cpu = {p: r["events"] / max(r["cpu_seconds"], 1e-9) for p, r in results.items()}
    print(f"custom  / arrays  : {results['custom']['rate'] / results['arrays']['rate']:6.2f}x "
          f"(events/s), {per_cpu['custom'] / per_cpu['arrays']:.2f}x (events per CPU-s); "
          "30% custom events, must stay >= 0.90")
    rates = validation_rates({"arrays": inputs["arrays"][0], "custom": inputs["custom"][0]})
    print(f"validation alone (parse_record, median of 7 interleaved rounds): arrays "
          f"{rates['arrays']:,.0f}, custom {rates['custom']:,.0f} events per CPU-s: "
          f"{rates['custom'] / rates['arrays']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
