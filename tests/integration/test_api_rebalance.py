"""The membership API during a rolling restart of two workers (real Kafka, Redis, processes).

Each restart makes the consumer group rebalance. The API reads Redis, which every worker can, so
a rebalance must not take it away: at every instant of the restart at least one worker is ready
(what a Kubernetes Service routes to) and every ready worker answers the API. Before, /ready
answered 503 on every worker while the group rebalanced, so a rolling restart emptied the
Service's endpoints.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from kafka import KafkaProducer

from .support import Worker, free_port
from .test_api import TOKEN, WAIT_S, Http, served, wait_ready

__all__ = ["served"]  # the fixture, used by name below

CUSTOMER = "rolling-ada"


@dataclass
class Poller:
    """One thread per worker and endpoint: /ready every ``ready_s`` (a rebalance of two
    workers lasts a few hundred milliseconds), the API every ``api_s``; each poll is logged as
    (start, end, worker, status)."""

    ports: list[int]
    ready_s: float = 0.01
    api_s: float = 0.1
    ready: list[tuple[float, float, int, int]] = field(default_factory=list)
    api: list[tuple[float, float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @staticmethod
    def status(http: Http, path: str, token: str | None) -> int:
        try:
            return http.get(path, token=token)[0]
        except OSError:  # refused (restarting) or timed out
            return 0

    def poll(self, worker: int, path: str, token: str | None, period: float,
             log: list[tuple[float, float, int, int]]) -> None:
        http = Http(self.ports[worker])
        while not self._stop.is_set():
            started = time.monotonic()
            status = self.status(http, path, token)
            log.append((started, time.monotonic(), worker, status))
            time.sleep(period)

    def __enter__(self) -> Poller:
        for w in range(len(self.ports)):
            self._threads += [
                threading.Thread(target=self.poll, daemon=True,
                                 args=(w, "/ready", None, self.ready_s, self.ready)),
                threading.Thread(target=self.poll, daemon=True,
                                 args=(w, f"/customers/{CUSTOMER}/segments", TOKEN, self.api_s,
                                       self.api))]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def outages(self) -> list[tuple[float, list[int]]]:
        """Instants (the end of a /ready poll) when the last /ready answer of every worker was
        not 200: no worker a Service would route to."""
        last = [200] * len(self.ports)  # both were ready when the polling started
        found = []
        for _, end, worker, status in sorted(self.ready, key=lambda r: r[1]):
            last[worker] = status
            if all(s != 200 for s in last):
                found.append((end, list(last)))
        return found

    def api_failures_while_ready(self) -> list[tuple[float, int, int]]:
        """API polls that failed on a worker whose /ready answered 200 just before and just
        after the poll (a worker a Service routes to must answer)."""
        by_worker: dict[int, list[tuple[float, float, int]]] = {}
        for start, end, worker, status in self.ready:
            by_worker.setdefault(worker, []).append((start, end, status))
        failures = []
        for start, end, worker, status in self.api:
            if status == 200:
                continue
            polls = by_worker[worker]
            before = [s for _, e, s in polls if e <= start]
            after = [s for b, _, s in polls if b >= end]
            if before and after and before[-1] == 200 and after[0] == 200:
                failures.append((start, worker, status))
        return failures


def rebalances(port: int) -> float:
    """The partition assignments this worker completed (one per rebalance it went through)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith('faust_assignment_operations_total{operation="completed"}'):
                return float(line.split()[-1])
    return 0.0  # no assignment completed yet: the family has no child


def test_rolling_restart_of_two_workers_keeps_the_api_up(
        kafka_bootstrap: str, served: tuple[Worker, dict[str, str]], tmp_path: Path) -> None:
    first, names = served
    ports = [int(names["port"]), free_port()]
    second = Worker({**first.env, "SEGSTREAM_WEB_PORT": str(ports[1]),
                     "SEGSTREAM_DATA_DIR": str(tmp_path / "data-2")}, tmp_path / "worker-2")
    workers = [first, second]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(names["raw"], orjson.dumps({
        "event_id": "rolling-1", "type": "page_view", "customer_id": CUSTOMER,
        "timestamp": int(time.time() * 1000), "properties": {"url": "/"}}))
    producer.flush()
    producer.close()
    try:
        for w in workers:
            w.start()
        for w, port in zip(workers, ports, strict=True):
            wait_ready(Http(port), w)
        deadline = time.monotonic() + WAIT_S
        while Http(ports[0]).get(f"/customers/{CUSTOMER}/segments")[0] != 200:
            assert time.monotonic() < deadline, first.log_tail()
            time.sleep(0.3)
        time.sleep(3)  # the group settles after the second worker joined
        with Poller(ports) as poller:
            for i, w in enumerate(workers):
                other = ports[1 - i]
                before = rebalances(other)
                assert w.stop() == 0, w.log_tail()
                w.start()
                wait_ready(Http(ports[i]), w)
                time.sleep(3)  # the rejoin's rebalance runs on the other worker
                assert rebalances(other) > before, "no rebalance happened: the test is vacuous"
    finally:
        for w in workers:
            w.stop()
    assert len(poller.ready) > 500 and len(poller.api) > 50
    outages = poller.outages()
    assert outages == [], f"{len(outages)} instants with no ready worker, first: {outages[:3]}"
    assert poller.api_failures_while_ready() == []
    assert any(s == 200 for *_, s in poller.api)
