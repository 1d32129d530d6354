"""`segstream simulate`: a shopper simulator that feeds a running segstream, or writes a file.

Realistic content comes from :mod:`stream.tools.generate` (sessions that browse, fill a cart and
abandon it or buy; email campaigns with opens and clicks; identify and alias; a few forgets);
this module re-stamps those events in *real time* and paces them at ``--rate`` events per
second, sent in small JSON arrays:

- ``--to kafka`` (default): one raw record per array, to the raw topic of the settings;
- ``--to http://host:port/v1/events``: POSTs to the HTTP collector (``--write-key``, default
  the first key of ``SEGSTREAM_COLLECTOR_WRITE_KEYS``), honouring 429 ``Retry-After``;
- ``--to PATH`` (or ``file:PATH``; ``-`` for stdout): JSON lines for ``segstream replay``,
  written at once on a virtual clock starting at ``--start`` (default now).

Disorder knobs (shares of events): ``--late-share`` (timestamp ``--late-by`` in the past, beyond
the allowed lateness: dead-lettered as ``too_late``), ``--duplicate-share`` (the same event sent
again a few events later), ``--malformed-share`` (a broken envelope: rejected). One customer's
timestamps never go backwards except for late events. The same ``--seed`` gives the same
events (and, in file mode with a fixed ``--start``, the same file). A one-line progress summary
goes to stderr every few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import orjson

from schemas.errors import SegstreamError
from stream.tools.generate import GeneratorConfig, generate, malform

PROGRESS_EVERY_S = 5.0
DUPLICATE_MAX_GAP = 20  # a duplicate is re-sent within this many events of the original
HTTP_CONCURRENCY = 4
HTTP_RETRIES = 5
READY_TIMEOUT_S = 120.0


class SimulationError(SegstreamError):
    """A failure that stops the simulation (bad option, refused write key)."""


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``2h``.

    >>> parse_duration("90"), parse_duration("5m"), parse_duration("1.5h")
    (90.0, 300.0, 5400.0)
    """
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    scale = units.get(t[-1:], 0)
    try:
        value = float(t[:-1] if scale else t) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected seconds, e.g. 90, 90s, 5m, 2h") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def parse_target(words: list[str]) -> str:
    """``kafka``, a collector URL, or ``file:PATH`` from the ``--to`` words.

    >>> parse_target(["file", "out.jsonl"]), parse_target(["file:-"]), parse_target(["kafka"])
    ('file:out.jsonl', 'file:-', 'kafka')
    """
    if len(words) == 2 and words[0] == "file":
        return "file:" + words[1]
    if len(words) == 1:
        w = words[0]
        if w == "kafka" or w.startswith(("http://", "https://", "file:")):
            return w
        if w != "file":
            return "file:" + w
    raise SimulationError(f"--to {' '.join(words)}: expected kafka, a collector URL, or "
                          "file PATH")


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a share is between 0 and 1")
    return value


@dataclass(frozen=True, slots=True)
class SimConfig:
    customers: int = 1_000
    rate: float = 100.0  # events per second
    seed: int = 0
    late_share: float = 0.0
    duplicate_share: float = 0.0
    malformed_share: float = 0.0
    late_by_ms: int = 2 * 3_600_000
    source: str = "web"
    #: share of extra custom events (app_session, review_posted of processors/event_types.yaml)
    #: inserted after a shopper's event, for the same customer
    custom_share: float = 0.0


@dataclass(slots=True)
class Counts:
    events: int = 0
    late: int = 0
    duplicates: int = 0
    malformed: int = 0
    custom: int = 0


class Simulation:
    """The event sequence: generator content, re-stamped by the caller's clock, with disorder."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed ^ 0x5EED)
        self.counts = Counts()
        self._source = self._content()
        self._dups: list[tuple[int, int, dict[str, Any]]] = []  # (due index, seq, event)
        self._seq = itertools.count()
        self._last: dict[str, int] = {}  # routing id -> last timestamp given
        self._who: tuple[str | None, str | None] | None = None  # ids of the last shopper event

    def _content(self) -> Iterator[dict[str, Any]]:
        """Endless generator content: chunk after chunk, each with its own seed."""
        chunk = max(10_000, 10 * self.cfg.customers)
        for k in itertools.count():
            yield from generate(GeneratorConfig(
                customers=self.cfg.customers, events=chunk, seed=self.cfg.seed + k * 7919,
                source=self.cfg.source))

    def take(self, n: int, now_ms: int) -> list[dict[str, Any]]:
        """The next ``n`` events, stamped at ``now_ms`` (per customer strictly increasing)."""
        out: list[dict[str, Any]] = []
        rng, cfg, counts = self.rng, self.cfg, self.counts
        for _ in range(n):
            if self._dups and self._dups[0][0] <= counts.events:
                event = heapq.heappop(self._dups)[2]
                counts.duplicates += 1
            else:
                if self._who is not None and rng.random() < cfg.custom_share:
                    event = self._stamp(self._custom(*self._who), now_ms)
                    counts.custom += 1
                else:
                    event = self._stamp(next(self._source), now_ms)
                    self._who = ((event["customer_id"], event["anonymous_id"])
                                 if event["type"] not in ("alias", "forget") else None)
                r = rng.random()
                if r < cfg.malformed_share:
                    event = malform(event, rng)
                    counts.malformed += 1
                elif r < cfg.malformed_share + cfg.late_share:
                    event["timestamp"] -= cfg.late_by_ms
                    counts.late += 1
                if rng.random() < cfg.duplicate_share:
                    due = counts.events + rng.randint(1, DUPLICATE_MAX_GAP)
                    heapq.heappush(self._dups, (due, next(self._seq), dict(event)))
            counts.events += 1
            out.append(event)
        return out

    def _custom(self, cid: str | None, aid: str | None) -> dict[str, Any]:
        """A custom event (app_session or review_posted) of the customer ``cid``/``aid``."""
        rng = self.rng
        n = self.counts.custom
        if rng.random() < 0.7:
            typ, props = "app_session", {"minutes": round(rng.expovariate(1 / 12), 1),
                                         "platform": rng.choice(["ios", "android", "web"])}
        else:  # ratings skewed high, as shops see them
            typ, props = "review_posted", {
                "rating": rng.choices([1, 2, 3, 4, 5], weights=[1, 1, 2, 4, 6])[0],
                "product_id": f"p{rng.randrange(500):04d}"}
        return {"event_id": f"sim-{self.cfg.seed}-c{n}", "type": typ, "customer_id": cid,
                "anonymous_id": aid, "timestamp": 0, "source": "app" if typ == "app_session"
                else self.cfg.source, "properties": props}

    def _stamp(self, event: dict[str, Any], now_ms: int) -> dict[str, Any]:
        rid = event["customer_id"] or event["anonymous_id"]
        ts = max(now_ms, self._last.get(rid, 0) + 1)
        self._last[rid] = ts
        if event["type"] == "alias":  # the anonymous profile's clock moves too
            self._last[event["anonymous_id"]] = ts
        event["timestamp"] = ts
        return event


# --- sinks ------------------------------------------------------------------------------------
class Sink(Protocol):
    async def send(self, batch: list[dict[str, Any]]) -> None: ...
    async def close(self) -> None: ...
    def status(self) -> str: ...


@dataclass
class FileSink:
    out: IO[bytes]
    written: int = 0

    async def send(self, batch: list[dict[str, Any]]) -> None:
        self.out.write(b"".join(orjson.dumps(e) + b"\n" for e in batch))
        self.written += len(batch)

    async def close(self) -> None:
        self.out.flush()

    def status(self) -> str:
        return f"{self.written} written"


def _key(event: dict[str, Any]) -> bytes | None:
    rid = event.get("customer_id") or event.get("anonymous_id")
    return rid.encode() if isinstance(rid, str) else None


@dataclass
class KafkaSink:
    bootstrap: str
    topic: str
    security: dict[str, Any] = field(default_factory=dict)  # stream.connections.kafka_security
    producer: Any = None
    pending: list[asyncio.Future[Any]] = field(default_factory=list)
    records: int = 0
    errors: int = 0

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - file mode needs no client

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **self.security, acks="all",
                                    enable_idempotence=True, linger_ms=5,
                                    client_id="segstream-simulate")
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self.producer = producer

    async def send(self, batch: list[dict[str, Any]]) -> None:
        self.pending.append(await self.producer.send(self.topic, orjson.dumps(batch),
                                                     _key(batch[0])))
        if len(self.pending) >= 200:
            await self._settle()

    async def _settle(self) -> None:
        results = await asyncio.gather(*self.pending, return_exceptions=True)
        self.errors += sum(1 for r in results if isinstance(r, BaseException))
        self.records += len(results)
        self.pending.clear()

    async def close(self) -> None:
        await self._settle()
        await self.producer.stop()

    def status(self) -> str:
        return f"{self.records} records acknowledged, {self.errors} failed"


@dataclass
class HttpSink:
    url: str
    write_key: str | None
    session: Any = None
    accepted: int = 0
    rejected: int = 0
    lost: int = 0
    limited: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(HTTP_CONCURRENCY))
    fatal: str | None = None

    async def start(self) -> None:
        import aiohttp  # noqa: PLC0415

        headers = {"Content-Type": "application/json"}
        if self.write_key:
            headers["X-Write-Key"] = self.write_key
        self.session = aiohttp.ClientSession(headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=30))
        await self.wait_ready()

    async def wait_ready(self) -> None:
        """Wait until the collector's ``/ready`` answers 200 (it is connected to Kafka), so a
        simulator started together with the collector loses nothing; a server without
        ``/ready`` (404) is taken as ready."""
        from yarl import URL  # noqa: PLC0415 - aiohttp's URL type

        ready = URL(self.url).with_path("/ready")
        deadline = time.monotonic() + READY_TIMEOUT_S
        told = False
        while True:
            try:
                async with self.session.get(ready) as resp:
                    if resp.status in (200, 404):
                        return
            except (TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                from stream.cli.servers import UnavailableError  # noqa: PLC0415

                raise UnavailableError(f"{ready} not ready after {READY_TIMEOUT_S:.0f} s")
            if not told:
                print(f"simulate: waiting for {ready}", file=sys.stderr, flush=True)
                told = True
            await asyncio.sleep(0.5)

    async def send(self, batch: list[dict[str, Any]]) -> None:
        if self.fatal:
            raise SimulationError(self.fatal)
        await self.slots.acquire()  # at most HTTP_CONCURRENCY requests in flight
        task = asyncio.create_task(self._post(orjson.dumps(batch), len(batch)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post(self, body: bytes, n: int) -> None:
        try:
            delay = 0.5
            for _ in range(HTTP_RETRIES):
                try:
                    async with self.session.post(self.url, data=body) as resp:
                        if resp.status in (200, 207, 400):
                            result = await resp.json()
                            self.accepted += result["accepted"]
                            self.rejected += len(result["rejected"])
                            return
                        if resp.status in (401, 403, 413):
                            err = (await resp.json()).get("error", {})
                            self.fatal = f"collector answered {resp.status} {err.get('code')}"
                            self.lost += n
                            return
                        if resp.status == 429:
                            self.limited += 1
                            wait = float(resp.headers.get("Retry-After", "1"))
                            await asyncio.sleep(wait)
                            continue
                except (TimeoutError, OSError, ValueError):
                    pass  # connection refused/reset, timeout: retry
                await asyncio.sleep(delay)
                delay *= 2
            self.lost += n
        finally:
            self.slots.release()

    async def close(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks)
        await self.session.close()
        if self.fatal:
            raise SimulationError(self.fatal)

    def status(self) -> str:
        return (f"{self.accepted} accepted, {self.rejected} rejected, {self.lost} lost, "
                f"{self.limited} rate-limited")


# --- driving ----------------------------------------------------------------------------------
def progress_line(sim: Simulation, sink: Sink, elapsed: float) -> str:
    c = sim.counts
    rate = c.events / elapsed if elapsed > 0 else 0.0
    return (f"simulate: {elapsed:.0f}s {c.events} events ({rate:.0f}/s; {c.malformed} "
            f"malformed, {c.late} late, {c.duplicates} duplicates, {c.custom} custom); "
            f"{sink.status()}")


async def run_paced(sim: Simulation, sink: Sink, *, rate: float, duration: float | None,
                    batch: int, stop: asyncio.Event) -> None:
    """Send ``rate`` events/s in arrays of up to ``batch``, stamped with the wall clock."""
    loop = asyncio.get_running_loop()
    t0 = last_report = loop.time()
    tick = max(0.01, min(0.25, batch / rate))
    while not stop.is_set():
        now = loop.time()
        elapsed = now - t0
        if duration is not None and elapsed >= duration:
            break
        due = min(int(elapsed * rate) - sim.counts.events, max(batch, int(rate)))
        while due > 0:
            n = min(due, batch)
            await sink.send(sim.take(n, time.time_ns() // 1_000_000))
            due -= n
        if now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            print(progress_line(sim, sink, elapsed), file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick)


async def run_file(sim: Simulation, sink: Sink, *, rate: float, total: int, start_ms: int,
                   batch: int) -> None:
    """Write ``total`` events on a virtual clock: event i at ``start_ms + i * 1000 / rate``."""
    while sim.counts.events < total:
        n = min(batch, total - sim.counts.events)
        await sink.send(sim.take(n, start_ms + int(sim.counts.events * 1000 / rate)))


async def _start(live: KafkaSink | HttpSink, target: str) -> None:
    """Connect the live sink; a server that cannot be reached is an ``UnavailableError``."""
    from stream.cli.servers import UnavailableError  # noqa: PLC0415

    aiokafka_log = logging.getLogger("aiokafka")  # it logs each failed connect on stderr
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        await live.start()
    except (SimulationError, UnavailableError):
        raise
    except Exception as exc:  # the client libraries' connection errors
        where = f"Kafka at {live.bootstrap}" if isinstance(live, KafkaSink) else target
        raise UnavailableError(f"cannot connect to {where}: {type(exc).__name__}: {exc}"
                               ) from None
    finally:
        aiokafka_log.setLevel(level)


async def simulate(args: argparse.Namespace) -> int:
    cfg = SimConfig(customers=args.customers, rate=args.rate, seed=args.seed,
                    late_share=args.late_share, duplicate_share=args.duplicate_share,
                    malformed_share=args.malformed_share,
                    late_by_ms=int(args.late_by * 1000), custom_share=args.custom_share)
    sim = Simulation(cfg)
    target = parse_target(args.to)
    started = time.monotonic()
    if target.startswith("file:"):
        path = target.removeprefix("file:")
        try:
            out = sys.stdout.buffer if path == "-" else open(path, "wb")  # noqa: SIM115, ASYNC230
        except OSError as exc:
            raise SimulationError(f"cannot write {path}: {exc.strerror}") from None
        sink = FileSink(out)
        try:
            total = int(cfg.rate * (args.duration or 60.0))
            start = args.start if args.start is not None else time.time_ns() // 1_000_000
            await run_file(sim, sink, rate=cfg.rate, total=total, start_ms=start,
                           batch=args.batch)
            await sink.close()
        finally:
            if out is not sys.stdout.buffer:
                out.close()
        print(progress_line(sim, sink, time.monotonic() - started), file=sys.stderr)
        return 0
    from stream.connections import kafka_security  # noqa: PLC0415
    from stream.settings import Settings, SettingsError  # noqa: PLC0415

    try:
        settings = Settings.from_env()
        security = kafka_security(settings).client_kwargs() if target == "kafka" else {}
    except SettingsError as exc:
        raise SimulationError(str(exc)) from None
    live: KafkaSink | HttpSink
    if target == "kafka":
        live = KafkaSink(",".join(settings.kafka.bootstrap), settings.topic("raw"),
                         security=security)
    else:
        key = args.write_key
        if key is None and settings.collector.write_keys:
            key = settings.collector.write_keys[0].partition("=")[2].strip()
        live = HttpSink(target, key or None)
    await _start(live, target)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_paced(sim, live, rate=cfg.rate, duration=args.duration, batch=args.batch,
                        stop=stop)
    finally:
        await live.close()
        print(progress_line(sim, live, time.monotonic() - started), file=sys.stderr)
    return 0


DESCRIPTION = """\
A shopper simulator that feeds a running segstream, or writes an event file. Sessions browse,
fill a cart and abandon it or buy; email campaigns bring opens and clicks; identify, alias
and a few forgets happen too. Events are stamped in real time and paced at --rate events per
second, sent in small JSON arrays:

  --to kafka                           one raw record per array, to the raw topic (default)
  --to http://HOST:PORT/v1/events      POSTs to the HTTP collector (--write-key), honouring
                                       429 Retry-After; waits for the collector's /ready
  --to PATH (or file:PATH; - = stdout) JSON lines for `segstream replay`, written at once on
                                       a virtual clock starting at --start

Disorder knobs (shares of events): --late-share (stamped --late-by in the past, beyond the
allowed lateness: dead-lettered as too_late), --duplicate-share (the same event sent again a
few events later), --malformed-share (a broken envelope: rejected). One customer's timestamps
never go backwards except for late events. The same --seed gives the same events (and, in
file mode with a fixed --start, the same file). Progress goes to stderr every few seconds.

exit status: 0 done; 1 the collector refused the write key; 2 bad command line; 69 Kafka or
the collector cannot be reached; 130 Ctrl-C; 141 stdout closed early (`| head`).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("simulate", help="simulate shoppers: live events or a file",
                              description=DESCRIPTION)
    p.add_argument("--customers", type=int, default=1_000, help="known customers (plus 10%% "
                   "anonymous-only visitors)")
    p.add_argument("--rate", type=float, default=100.0, help="events per second")
    p.add_argument("--duration", type=parse_duration, help="stop after this long (90, 90s, "
                   "5m, 2h; default: until Ctrl-C; file mode: 60s of events)")
    p.add_argument("--to", nargs="+", default=["kafka"], metavar="TARGET",
                   help="kafka | http(s)://host:port/v1/events | file PATH (also file:PATH; "
                   "PATH - is stdout)")
    p.add_argument("--write-key", help="collector write key (default: the first of "
                   "SEGSTREAM_COLLECTOR_WRITE_KEYS)")
    p.add_argument("--late-share", type=_share, default=0.0, metavar="SHARE",
                   help="share of events stamped --late-by in the past (0 to 1)")
    p.add_argument("--late-by", type=parse_duration, default=7_200.0,
                   help="how far in the past a late event is stamped (default 2h)")
    p.add_argument("--duplicate-share", type=_share, default=0.0, metavar="SHARE",
                   help="share of events sent a second time a few events later (0 to 1)")
    p.add_argument("--malformed-share", type=_share, default=0.0, metavar="SHARE",
                   help="share of events with a broken envelope (0 to 1)")
    p.add_argument("--custom-share", type=_share, default=0.0, metavar="SHARE",
                   help="share of extra custom events (app_session, review_posted: declare "
                   "them with processors/event_types.yaml)")
    p.add_argument("--batch", type=int, default=10, help="events per array (default 10)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed gives the same events")
    p.add_argument("--start", type=int, help="file mode: epoch ms of the first event "
                   "(default now)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.customers < 1 or args.rate <= 0 or args.batch < 1:
        print("segstream simulate: --customers, --rate and --batch must be positive",
              file=sys.stderr)
        return 2
    try:
        return asyncio.run(simulate(args))
    except SimulationError as exc:
        print(f"segstream simulate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
