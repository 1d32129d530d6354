"""Validation throughput: µs per event and events/s for each approach, against bare orjson.

Approaches, all on the same realistic events (``stream.tools.generate``), in one process and run:

* ``orjson.loads`` (baseline)         parse the record only, no validation at all
* ``per-event validate_event``       orjson + ``validate_event`` per element (one
                                     msgspec.convert per event, no size check, no raw bytes)
* ``parse_record, chunk N``          the shipped function: orjson + one ``msgspec.convert`` per
                                     N events, per-element fallback only for a chunk holding an
                                     invalid event (``*`` marks the shipped N)
* ``typed decoder``                  msgspec.json.Decoder(list[AnyEvent]) straight from bytes
                                     (validation while parsing) + orjson for the dicts that
                                     keep extra properties: two parses
* ``hand-written``                   plain-Python isinstance checks of the envelope and the
                                     required properties (a *subset* of the rules: no
                                     bounds, patterns, optional-property types)

Records are arrays of ``--batch`` events (the collector's and bundle's shape) and, separately,
one event per record; a mixed run puts ``--invalid`` share of broken events in the arrays to
price the fallback. Figures are noisy on a shared 2-core machine: each number is the best of
``--repeat`` runs.

    .venv/bin/python bench/bench_validate.py [--events 20000] [--batch 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas import validation
from schemas.models import AnyEvent
from schemas.partitioner import murmur2, partition_for
from schemas.validation import (
    DEFAULT_LIMITS,
    InvalidEvent,
    _canonical,
    _canonical_many,
    parse_record,
    validate_event,
)
from stream.tools.generate import GeneratorConfig, generate

Event = dict[str, Any]


def make_events(n: int, seed: int) -> list[Event]:
    events = list(generate(GeneratorConfig(customers=max(50, n // 40), events=n, seed=seed)))
    return events[:n]


def break_some(events: list[Event], share: float, seed: int) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for event in events:
        if rng.random() < share:
            broken = dict(event)
            broken[rng.choice(["event_id", "timestamp", "type"])] = None
            out.append(broken)
        else:
            out.append(event)
    return out


# --- the approaches -----------------------------------------------------------------------------


def run_orjson(records: list[bytes], now: int) -> int:
    n = 0
    for r in records:
        obj = orjson.loads(r)
        n += len(obj) if type(obj) is list else 1
    return n


def run_per_event(records: list[bytes], now: int) -> int:
    n = 0
    for r in records:
        obj = orjson.loads(r)
        for e in obj if type(obj) is list else [obj]:
            try:
                validate_event(e, now)
                n += 1
            except InvalidEvent:
                n += 1
    return n


def run_parse_record(records: list[bytes], now: int) -> int:
    n = 0
    for r in records:
        good, bad = parse_record(r, now)
        n += len(good) + len(bad)
    return n


def with_chunk(chunk: int) -> Callable[[list[bytes], int], int]:
    """parse_record with another number of events per msgspec.convert call."""

    def run(records: list[bytes], now: int) -> int:
        saved, validation.CHUNK = validation.CHUNK, chunk
        try:
            return run_parse_record(records, now)
        finally:
            validation.CHUNK = saved

    return run


_TYPED = msgspec.json.Decoder(list[AnyEvent] | AnyEvent)  # type: ignore[valid-type]


def run_typed_decoder(records: list[bytes], now: int) -> int:
    n = 0
    max_bytes = DEFAULT_LIMITS.max_event_bytes
    for r in records:
        try:
            structs = _TYPED.decode(r)
        except msgspec.ValidationError:
            n += len(parse_record(r, now)[0])  # same fallback as parse_record
            continue
        objs = orjson.loads(r)
        if type(objs) is not list:
            n += len([_canonical(objs, structs, now, DEFAULT_LIMITS)])
            continue
        if len(r) > max_bytes:  # the same element size check as parse_record
            assert all(len(x) <= max_bytes for x in validation._RAW_LIST.decode(r))
        n += len(_canonical_many(objs, structs, now, DEFAULT_LIMITS))
    return n


_REQUIRED = {
    "page_view": {"url": str}, "cart_add": {"product_id": str, "price": (int, float)},
    "cart_remove": {"product_id": str}, "checkout": {}, "purchase": {
        "order_id": str, "amount": (int, float), "currency": str},
    "email_sent": {"campaign_id": str}, "email_open": {"campaign_id": str},
    "email_click": {"campaign_id": str}, "email_unsubscribe": {}, "email_bounce": {},
    "identify": {"traits": dict}, "alias": {}, "forget": {},
}  # fmt: skip


def hand_check(e: Any, now: int) -> Event:
    if type(e) is not dict:
        raise ValueError("not_object")
    req = _REQUIRED.get(e.get("type"))  # type: ignore[arg-type]
    if req is None:
        raise ValueError("unknown_type")
    eid = e.get("event_id")
    if type(eid) is not str or not 0 < len(eid) <= 128:
        raise ValueError("bad_id")
    cid, aid = e.get("customer_id"), e.get("anonymous_id")
    if cid is None and aid is None:
        raise ValueError("missing_routing_id")
    ts = e.get("timestamp")
    if type(ts) is not int or not 946_684_800_000 <= ts <= now + 600_000:
        raise ValueError("bad_timestamp")
    props = e.get("properties") or {}
    if type(props) is not dict:
        raise ValueError("bad_properties")
    for name, kind in req.items():
        v = props.get(name)
        if not isinstance(v, kind) or type(v) is bool:
            raise ValueError("bad_properties")
    return {"event_id": eid, "type": e["type"], "customer_id": cid, "anonymous_id": aid,
            "timestamp": ts, "source": e.get("source", "unknown"),
            "schema_version": e.get("schema_version", 1), "properties": props}  # fmt: skip


def run_hand(records: list[bytes], now: int) -> int:
    n = 0
    for r in records:
        obj = orjson.loads(r)
        for e in obj if type(obj) is list else [obj]:
            with contextlib.suppress(ValueError):
                hand_check(e, now)
            n += 1
    return n


APPROACHES: list[tuple[str, Callable[[list[bytes], int], int]]] = [
    ("orjson.loads (baseline)", run_orjson),
    ("per-event validate_event", run_per_event),
    ("parse_record, chunk 1", with_chunk(1)),
    ("parse_record, chunk 8", with_chunk(8)),
    ("parse_record, chunk 16 *", run_parse_record),
    ("parse_record, chunk 32", with_chunk(32)),
    ("parse_record, chunk 500", with_chunk(500)),
    ("typed decoder + orjson", run_typed_decoder),
    ("hand-written (subset)", run_hand),
]


def report(title: str, records: list[bytes], now: int, repeat: int) -> None:
    """Run the approaches round-robin (so all see the same machine load); keep each best."""
    best = {name: float("inf") for name, _ in APPROACHES}
    counts = dict.fromkeys(best, 0)
    for round_ in range(repeat):
        order = APPROACHES[round_ % len(APPROACHES) :] + APPROACHES[: round_ % len(APPROACHES)]
        for name, fn in order:
            t0 = time.process_time()
            counts[name] = fn(records, now)
            best[name] = min(best[name], time.process_time() - t0)
    print(f"\n{title}")
    print(f"  {'approach':28} {'µs/event':>9} {'events/s':>11} {'x baseline':>10}")
    base = best[APPROACHES[0][0]] / counts[APPROACHES[0][0]]
    for name, _ in APPROACHES:
        per_event = best[name] / counts[name]
        print(f"  {name:28} {per_event * 1e6:9.2f} {1 / per_event:11,.0f} {per_event / base:10.1f}")


def bench_partitioner(events: list[Event], repeat: int) -> None:
    ids = [e.get("customer_id") or e.get("anonymous_id") or "x" for e in events]
    keys = [i.encode() for i in ids]
    from kafka.partitioner.default import murmur2 as kp_murmur2  # noqa: PLC0415

    print("\nrouting (per id)")
    for name, fn in [
        ("kafka-python murmur2", lambda: [kp_murmur2(k) for k in keys]),
        ("schemas murmur2", lambda: [murmur2(k) for k in keys]),
        ("partition_for (encode+hash)", lambda: [partition_for(i, 12) for i in ids]),
    ]:
        best = min(_timed(fn) for _ in range(repeat))
        print(f"  {name:28} {best / len(ids) * 1e6:6.2f} µs")


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--invalid", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()

    events = make_events(args.events, seed=1)
    now = max(e["timestamp"] for e in events if isinstance(e.get("timestamp"), int)) + 1
    sizes = [len(orjson.dumps(e)) for e in events]
    print(f"{len(events)} generated events, mean {sum(sizes) / len(sizes):.0f} bytes; "
          f"best of {args.repeat} runs, process CPU time")  # fmt: skip

    arrays = [orjson.dumps(events[i : i + args.batch]) for i in range(0, len(events), args.batch)]
    report(f"all valid, arrays of {args.batch} events per record", arrays, now, args.repeat)
    singles = [orjson.dumps(e) for e in events]
    report("all valid, one event per record", singles, now, args.repeat)
    broken = break_some(events, args.invalid, seed=2)
    mixed = [orjson.dumps(broken[i : i + args.batch]) for i in range(0, len(broken), args.batch)]
    report(f"{args.invalid:.0%} invalid, arrays of {args.batch}", mixed, now, args.repeat)
    bench_partitioner(events, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
