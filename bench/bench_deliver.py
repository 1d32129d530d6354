"""`make bench-deliver`: webhook deliveries per second, `segstream deliver` vs raw aiohttp POSTs.

1. N change records (default 100,000; BENCH_DELIVER_CHANGES) on a fresh 8-partition changes
   topic of the real broker, one customer per partition like the worker's keyed records.
2. A local aiohttp receiver in its own process (verifies nothing, answers 204, counts changes).
3. (a) ``segstream deliver``'s Deliverer in this process: consumes the topic, batches
   (BENCH_DELIVER_BATCH changes, default 500), signs, POSTs, commits; timed from start until
   the receiver has every change; CPU time of this process over the same window.
   (b) baseline, same run: the same record values cut into the same batch size, signed and
   POSTed one request at a time with one aiohttp session: no Kafka, no offsets, no lanes.
4. Prints changes/s, changes per CPU-second and the ratio (a)/(b).

The receiver runs in another process, so its CPU is not counted in either figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import produce
from schemas.changes import SegmentChange, encode_change
from stream.deliver import signing
from stream.deliver.config import Destination
from stream.deliver.lane import Item, batch_body
from stream.deliver.metrics import DeliverMetrics
from stream.deliver.offsets import Ticket
from stream.deliver.runner import Deliverer
from stream.settings import Settings

N = int(os.environ.get("BENCH_DELIVER_CHANGES", "100000"))
BATCH = int(os.environ.get("BENCH_DELIVER_BATCH", "500"))
PARTITIONS = 8
SECRET = "bench-secret"

RECEIVER = """
import sys
import orjson
from aiohttp import web
count = 0
async def hook(request):
    global count
    count += len(orjson.loads(await request.read())["changes"])
    return web.Response(status=204)
async def get(request):
    return web.json_response({"count": count})
async def reset(request):
    global count
    count = 0
    return web.json_response({"count": 0})
app = web.Application()
app.router.add_post("/hook", hook)
app.router.add_get("/count", get)
app.router.add_post("/reset", reset)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count(base: str) -> int:
    with urllib.request.urlopen(f"{base}/count", timeout=5) as r:
        return int(json.loads(r.read())["count"])


def reset(base: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{base}/reset", method="POST"), timeout=5)


def changes(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        c = i % 5000
        v = i // 5000 + 1
        out.append(encode_change(SegmentChange(
            customer_id=f"c-{c}", segment="vip", action="enter" if v % 2 else "exit",
            at=1795424400000 + i, version=v, cause=f"e-{i}", definition_version="bench")))
    return out


async def run_deliver(settings: Settings, dest: Destination,
                      base: str) -> tuple[float, float, float, float]:
    """(wall, CPU) from start to the last change, and from the first delivered change to the
    last (steady state: without the group join and the first fetch)."""
    stop = asyncio.Event()
    deliverer = Deliverer(settings, [dest], DeliverMetrics.create())
    t0, c0 = time.perf_counter(), cpu()
    t1 = c1 = None
    task = asyncio.create_task(deliverer.run(stop))
    loop = asyncio.get_running_loop()
    while (got := await loop.run_in_executor(None, count, base)) < N:
        if got and t1 is None:
            t1, c1 = time.perf_counter(), cpu()
        if task.done():
            task.result()
            raise RuntimeError("deliver stopped early")
        await asyncio.sleep(0.05)
    t2, c2 = time.perf_counter(), cpu()
    stop.set()
    await task
    t1, c1 = (t0, c0) if t1 is None else (t1, c1)
    assert c1 is not None
    return t2 - t0, c2 - c0, t2 - t1, c2 - c1


async def run_baseline(values: list[bytes], dest: Destination, base: str) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), cpu()
    async with aiohttp.ClientSession() as session:
        for i in range(0, len(values), BATCH):
            items = [Item(Ticket(0, 0, 1), "", v, 0) for v in values[i:i + BATCH]]
            body = batch_body(dest.name, uuid.uuid4().hex, items)
            headers = {"Content-Type": "application/json",
                       **signing.headers(SECRET.encode(), int(time.time()), body)}
            async with session.post(dest.url, data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 204
    assert count(base) == len(values)  # each 204 came after the receiver counted
    return time.perf_counter() - t0, cpu() - c0


def main() -> int:
    bootstrap = os.environ.get("SEGSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
    prefix = f"bdeliver{int(time.time())}-"
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix,
                        auto_offset_reset="earliest", log_level="warning")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                count(base)
                break
            time.sleep(0.1)
        values = changes(N)
        topic = settings.topic("changes")
        # one customer, one partition (as the worker's keyed records): customer = i % 5000
        produce(bootstrap, topic, values, PARTITIONS,
                [(i % 5000) % PARTITIONS for i in range(N)])
        dest = Destination("bench", f"{base}/hook", SECRET, None, max_changes=BATCH,
                           max_wait_ms=50, timeout_ms=30_000)
        print(f"bench-deliver: {N:,} changes, batches of {BATCH}, {PARTITIONS} partitions, "
              f"receiver in its own process (box shared with other jobs: noisy)")
        wall_b, cpu_b = asyncio.run(run_baseline(values, dest, base))
        reset(base)
        wall_d, cpu_d, steady_w, steady_c = asyncio.run(run_deliver(settings, dest, base))
        rows = [("(a) segstream deliver, from start (group join, first fetch included)",
                 N, wall_d, cpu_d),
                ("(a') segstream deliver, first delivery to last (steady state)",
                 N, steady_w, steady_c),
                ("(b) baseline: signed aiohttp POSTs of the same batches, no Kafka",
                 N, wall_b, cpu_b)]
        for name, n, wall, used in rows:
            print(f"{name:<70} {n / wall:>9,.0f} changes/s {n / max(used, 1e-9):>10,.0f} "
                  f"changes/CPU-s ({wall:.2f} s wall, {used:.2f} s CPU)")
        print(f"ratio (a')/(b): {wall_b / steady_w:.2f} of the baseline's changes/s, "
              f"{cpu_b / steady_c:.2f} of its changes per CPU-second; (a)/(b): "
              f"{wall_b / wall_d:.2f} and {cpu_b / cpu_d:.2f}")
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
