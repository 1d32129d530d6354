"""Helpers of the `segstream deliver` end-to-end tests: a real aiohttp receiver (in a thread of
the test process), change records on a real topic, the deliver process, and the delivery check
(nothing lost, nothing reordered per customer, repeats only as exact copies)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from schemas.changes import SegmentChange, change_key, encode_change

from .support import REPO, ProcessControl

SECRET = "it-s3cret-for-tests"
DOCS = REPO / "docs" / "destinations.md"


def documented_verifier() -> Callable[[bytes, Any, bytes], bool]:
    """``verify_segstream`` of docs/destinations.md (the block fenced as ```python verify):
    the receiver checks every request with the snippet receivers are told to copy."""
    text = DOCS.read_text()
    code = text.split("```python verify\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # our own docs
    verifier: Callable[[bytes, Any, bytes], bool] = namespace["verify_segstream"]
    return verifier


VERIFY = documented_verifier()
SEGMENTS = ("seg_a", "seg_b", "seg_c")


@dataclass
class Answer:
    """How the receiver answers on one path (changed by the test while it runs)."""

    status: int = 200
    delay_s: float = 0.0


@dataclass
class Receiver:
    """An aiohttp webhook receiver that verifies signatures and records what it applied."""

    port: int
    secret: bytes = SECRET.encode()
    paths: dict[str, Answer] = field(default_factory=lambda: defaultdict(Answer))
    #: path -> the changes of every request answered 2xx, in the order of the answers
    applied: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    requests: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    bad_signatures: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        how = self.paths[request.path]
        if not VERIFY(self.secret, request.headers, body):
            self.bad_signatures += 1
            return web.Response(status=401)
        status, delay = how.status, how.delay_s
        if delay:
            await asyncio.sleep(delay)
        self.requests[request.path].append(status)
        if 200 <= status < 300:
            self.applied[request.path].extend(orjson.loads(body)["changes"])
        return web.Response(status=status)

    # --- lifecycle (called from the test thread) ---------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.up()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def up(self) -> None:
        """Listen (again)."""
        async def go() -> None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await site.start()
        self._call(go())

    def down(self) -> None:
        """Stop listening and close every connection: new ones are refused."""
        async def go() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        self._call(go())

    def stop(self) -> None:
        if self._loop is None:
            return
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def make_changes(customers: int, per_customer: int, prefix: str = "c") -> list[SegmentChange]:
    """Changes of ``customers`` customers, ``per_customer`` each, interleaved across customers;
    per (customer, segment) the versions count up (odd ENTER, even EXIT)."""
    out: list[SegmentChange] = []
    versions: dict[tuple[str, str], int] = defaultdict(int)
    now = time.time_ns() // 1_000_000
    for i in range(per_customer):
        for c in range(customers):
            cid = f"{prefix}-{c}"
            seg = SEGMENTS[(c + i) % len(SEGMENTS)]
            versions[cid, seg] += 1
            v = versions[cid, seg]
            out.append(SegmentChange(customer_id=cid, segment=seg,
                                     action="enter" if v % 2 else "exit", at=now + i, version=v,
                                     cause=f"e-{c}-{i}", definition_version="it"))
    return out


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, changes: Iterable[SegmentChange]) -> None:
    """Publish like the worker: key = customer id, so a customer's changes share a
    partition, in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for ch in changes:
            producer.send(topic, encode_change(ch), key=change_key(ch.customer_id))
        producer.flush(30)
    finally:
        producer.close()


def destinations_yaml(entries: Iterable[dict[str, Any]]) -> str:
    import yaml  # noqa: PLC0415

    return yaml.safe_dump({"destinations": list(entries)}, sort_keys=False)


@dataclass
class DeliverProcess(ProcessControl):
    """`python -m stream.cli deliver --destinations FILE` with its own environment and log."""

    env: dict[str, str]
    destinations: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    def start(self) -> None:
        self.runs += 1
        with self.log().open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "deliver", "--destinations",
                 str(self.destinations)], cwd=REPO, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> Path:
        return self.log_path.with_suffix(f".{self.runs}.log")

    def log_text(self) -> str:
        return "\n".join(self.log().read_text(errors="replace").splitlines()[-60:])



def wait_for(cond: Callable[[], bool], timeout_s: float, what: str,
             proc: DeliverProcess | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"deliver exited ({proc.proc.returncode}) waiting for {what}:"
                                 f"\n{proc.log_text()}")
        if time.monotonic() > deadline:
            tail = proc.log_text() if proc is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)


def as_dict(ch: SegmentChange) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(encode_change(ch))
    return out


def check_delivery(expected: list[SegmentChange], received: list[dict[str, Any]]) -> int:
    """Nothing lost, nothing reordered per customer, a repeat only as an exact copy of a change
    received before (same version): the number of repeats."""
    want: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ch in expected:
        want[ch.customer_id].append(as_dict(ch))
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ch in received:
        got[ch["customer_id"]].append(ch)
    assert set(got) <= set(want), f"unknown customers {sorted(set(got) - set(want))[:5]}"
    repeats = 0
    for cid, changes in want.items():
        seen: dict[tuple[str, int], dict[str, Any]] = {}
        nxt = 0
        for ch in got.get(cid, []):
            key = (ch["segment"], ch["version"])
            if key in seen:
                assert ch == seen[key], f"{cid}: a repeat of {key} differs: {ch} vs {seen[key]}"
                repeats += 1
                continue
            assert nxt < len(changes), f"{cid}: more changes than published: {ch}"
            assert ch == changes[nxt], f"{cid}: reordered: got {ch}, expected {changes[nxt]}"
            seen[key] = ch
            nxt += 1
        assert nxt == len(changes), f"{cid}: lost {len(changes) - nxt} of {len(changes)}"
    return repeats


def unique_count(received: list[dict[str, Any]]) -> int:
    return len({(c["customer_id"], c["segment"], c["version"]) for c in received})
