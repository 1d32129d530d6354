"""The collector's HTTP layer in process, with a fake producer (no broker): what is produced,
when the answer is sent, and the failure answers."""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from stream.collector.service import Collector, create_app
from stream.settings import Settings

KEY = "web-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class FakeProducer:
    """Records sends; each send's future resolves when ``release`` is set (or fails)."""

    sent: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None
                   ) -> Awaitable[Any]:
        assert value is not None
        self.sent.append((topic, value, key))

        async def ack() -> None:
            await self.release.wait()
            if self.fail:
                raise ConnectionError("broker gone")

        return asyncio.ensure_future(ack())


def ev(eid: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "type": "page_view", "anonymous_id": "a-1",
            "timestamp": time.time_ns() // 1_000_000, "properties": {"url": "/"}, **extra}


def run(test: Callable[[TestClient[Any, Any], Collector, FakeProducer], Awaitable[None]],
        **settings: Any) -> None:
    async def main() -> None:
        s = Settings.build(collector_write_keys=(f"web={KEY}",), topic_prefix="u-",
                           **settings)
        producer = FakeProducer()
        collector = Collector(s, producer)
        async with TestClient(TestServer(create_app(collector))) as client:
            await test(client, collector, producer)

    asyncio.run(main())


async def body(resp: ClientResponse) -> Any:
    return orjson.loads(await resp.read())


def test_answer_waits_for_the_acknowledgement() -> None:
    async def t(client: TestClient[Any, Any], c: Collector, p: FakeProducer) -> None:
        task = asyncio.ensure_future(client.post("/v1/events", data=orjson.dumps(
            [ev("e1"), ev("e2", customer_id="c-9")]), headers=AUTH))
        await asyncio.sleep(0.2)
        assert not task.done() and len(p.sent) == 1  # produced, not yet acknowledged
        p.release.set()
        resp = await task
        assert resp.status == 200 and await body(resp) == {"accepted": 2, "rejected": []}
        topic, value, key = p.sent[0]
        assert topic == "u-segstream-events" and key == b"a-1"  # first event's routing id
        assert [e["event_id"] for e in orjson.loads(value)] == ["e1", "e2"]
        assert {e["source"] for e in orjson.loads(value)} == {"web"}

    run(t)


def test_failed_produce_is_503_with_retry_after() -> None:
    async def t(client: TestClient[Any, Any], c: Collector, p: FakeProducer) -> None:
        p.fail = True
        p.release.set()
        resp = await client.post("/v1/events", data=orjson.dumps(ev("e1")), headers=AUTH)
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert (await body(resp))["error"]["code"] == "kafka_unavailable"
        c.producer = None
        resp = await client.post("/v1/events", data=orjson.dumps(ev("e1")), headers=AUTH)
        assert (resp.status, (await body(resp))["error"]["code"]) == (503, "starting")
        assert (await client.get("/ready")).status == 503
        assert (await client.get("/health")).status == 200  # liveness only

    run(t)


def test_produce_timeout_is_503() -> None:
    async def t(client: TestClient[Any, Any], c: Collector, p: FakeProducer) -> None:
        resp = await client.post("/v1/events", data=orjson.dumps([ev("e1")]), headers=AUTH)
        assert (resp.status, (await body(resp))["error"]["code"]) == (503, "kafka_unavailable")

    run(t, collector_produce_timeout_ms=200)


def test_big_request_is_split_in_order_under_one_key() -> None:
    async def t(client: TestClient[Any, Any], c: Collector, p: FakeProducer) -> None:
        p.release.set()
        c.record_bytes = 4_000  # as if the broker's limit were small
        events = [ev(f"e{i}", properties={"url": "/" + "x" * 300}) for i in range(40)]
        resp = await client.post("/v1/events", data=orjson.dumps(events), headers=AUTH)
        assert resp.status == 200
        assert len(p.sent) > 3 and {k for _, _, k in p.sent} == {b"a-1"}
        got = [e["event_id"] for _, v, _ in p.sent for e in orjson.loads(v)]
        assert got == [f"e{i}" for i in range(40)]

    run(t)


def test_chunked_oversized_body_is_413_and_nothing_produced() -> None:
    async def t(client: TestClient[Any, Any], c: Collector, p: FakeProducer) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'[{"pad": "'
            for _ in range(10):
                yield b"y" * 1_000
            yield b'"}]'

        resp = await client.post("/v1/events", data=chunks(), headers=AUTH)  # no length
        assert (resp.status, (await body(resp))["error"]["code"]) == (413, "oversized")
        assert p.sent == []

    run(t, max_record_bytes=5_000)


def test_all_invalid_produces_nothing_and_sendbeacon_style_works() -> None:
    async def t(client: TestClient[Any, Any], c: Collector, p: FakeProducer) -> None:
        p.release.set()
        resp = await client.post("/v1/events", data=b'[{"type": "page_view"}]',
                                 headers=AUTH)
        assert resp.status == 400 and p.sent == []
        # sendBeacon: text/plain body, key in the query string, CORS headers on the answer
        resp = await client.post(f"/v1/events?write_key={KEY}", data=orjson.dumps([ev("b1")]),
                                 headers={"Content-Type": "text/plain;charset=UTF-8",
                                          "Origin": "https://shop.example"})
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        text = await (await client.get("/metrics")).text()
        assert 'segstream_collector_events_total{outcome="accepted"} 1.0' in text
        assert 'segstream_collector_requests_total{status="400"} 1.0' in text

    run(t, collector_cors_origins=("*",))


def test_body_that_cannot_be_decoded_is_400_not_500(caplog: Any) -> None:
    # found by fuzzing: `Content-Encoding: gzip` on a body that is not gzip made request.read()
    # raise RequestPayloadError: answered 500 internal_error, with two tracebacks logged
    async def t(client: TestClient[Any, Any], c: Collector, p: FakeProducer) -> None:
        p.release.set()
        close = {**AUTH, "Connection": "close"}
        for data in (b"not gzip at all", b"\x1f\x8b\x08\x00garbage", b"\x00" * 100):
            resp = await client.post("/v1/events", data=data,
                                     headers={**close, "Content-Encoding": "gzip"})
            assert resp.status == 400, await resp.text()
            error = (await body(resp))["error"]
            assert error["code"] == "unparsable", error  # (a cut gzip stream reads as empty)
            assert "Content-Encoding" in error["message"] or data.startswith(b"\x1f\x8b")
        resp = await client.post("/v1/events", data=gzip.compress(orjson.dumps([ev("z1")])),
                                 headers={**close, "Content-Encoding": "gzip"})
        assert (resp.status, await body(resp)) == (200, {"accepted": 1, "rejected": []})
        assert [e["event_id"] for _, v, _ in p.sent for e in orjson.loads(v)] == ["z1"]
        text = await (await client.get("/metrics")).text()
        assert 'segstream_collector_requests_total{status="500"}' not in text

    with caplog.at_level(logging.ERROR):
        run(t)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_client_leaving_mid_body_is_not_a_500(caplog: Any) -> None:
    # found by fuzzing: a client that closes the connection before sending Content-Length bytes
    # made request.read() raise ConnectionResetError: counted as a 500 internal_error (what
    # 5xx alerts watch) with a traceback logged, for a client's behaviour. (aiohttp's
    # TestServer cancels the handler instead; web.run_app lets it finish, as here.)
    async def main() -> None:
        collector = Collector(Settings.build(collector_write_keys=(f"web={KEY}",),
                                             topic_prefix="u-"),
                              FakeProducer())
        runner = web.AppRunner(create_app(collector), handler_cancellation=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
            writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         + KEY.encode() + b'\r\nContent-Length: 1000\r\n\r\n[{"event_id":')
            await writer.drain()
            await asyncio.sleep(0.2)  # the handler is reading the body
            writer.write_eof()  # gone before the rest
            await reader.read()
            writer.close()
            for _ in range(50):
                samples = {s.labels["status"]: s.value for s in
                           collector.metrics.requests.collect()[0].samples
                           if s.name.endswith("_total")}
                if samples:
                    break
                await asyncio.sleep(0.1)
            assert samples == {"400": 1.0}
            assert collector.producer.sent == []  # type: ignore[union-attr]
        finally:
            await runner.cleanup()

    with caplog.at_level(logging.ERROR, logger="stream.collector.service"):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.name == "stream.collector.service"], caplog.text


def test_custom_event_types_from_the_types_file() -> None:
    types_file = str(Path(__file__).resolve().parents[2] / "processors" / "event_types.yaml")

    async def t(client: TestClient[Any, Any], c: Collector, p: FakeProducer) -> None:
        p.release.set()
        resp = await client.post("/v1/events", data=orjson.dumps([
            ev("e1", type="review_posted", properties={"rating": 5}),
            ev("e2", type="review_posted", properties={"rating": 9}),
            ev("e3", type="review_postd", properties={"rating": 1})]), headers=AUTH)
        got = await body(resp)
        assert got["accepted"] == 1, got
        (bad_prop, unknown) = got["rejected"]
        assert bad_prop["code"] == "bad_property" and "`rating`" in bad_prop["message"]
        assert "expected integer >= 1 <= 5" in bad_prop["message"]
        assert unknown["code"] == "unknown_type"
        assert "did you mean 'review_posted'?" in unknown["message"]
        assert [e["event_id"] for e in orjson.loads(p.sent[0][1])] == ["e1"]

    run(t, types_file=types_file)
