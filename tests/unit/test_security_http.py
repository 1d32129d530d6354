"""The HTTP surfaces (membership API, collector) in process: request size limits (body, request
line, headers) and secrets never echoed in a response body or a log record."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from state.store import MemoryStore
from stream.cli.cmd_collector import build
from stream.collector.service import AccessLogger
from stream.settings import Settings
from stream.worker.api import API_MAX_BODY_BYTES
from stream.worker.bootstrap import build_worker
from stream.worker.faust_adapter import web_application

TOKEN = "api-token-Sx81lq0123456789"
REVOKED = "api-token-Rv55kw0123456789"
WRITE_KEY = "write-key-Hn27pd0123456789"
REVOKED_KEY = "write-key-Ok63ut0123456789"
WRONG = "wrong-secret-Ab12cd0123456789"
SECRETS = (TOKEN, REVOKED, WRITE_KEY, REVOKED_KEY, WRONG)


def digest_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def _ok() -> None:
    return None


def api_app() -> web.Application:
    worker = build_worker(Settings.build(api_tokens=(TOKEN, REVOKED), bundle_partitions=4,
                                         api_revoked_tokens=(digest_hex(REVOKED),)))
    assert worker.api is not None
    worker.api.use_store(MemoryStore(), _ok)
    return web_application(worker.app)


def collector_app() -> web.Application:
    return build(Settings.build(collector_write_keys=(f"web={WRITE_KEY}", f"old={REVOKED_KEY}"),
                                collector_revoked_keys=(digest_hex(REVOKED_KEY),),
                                # never connects: no body is produced
                                kafka_bootstrap=("127.0.0.1:1",)))


def serve(app: web.Application, scenario: Callable[[TestClient[Any, Any]], Awaitable[None]],
          **server: Any) -> None:
    async def run() -> None:
        test_server = TestServer(app)
        await test_server.start_server(**server)
        async with TestClient(test_server) as client:
            await scenario(client)

    asyncio.run(run())


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret[:9]}... echoed"


def test_api_refuses_large_bodies_long_lines_and_big_headers(caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario(client: TestClient[Any, Any]) -> None:
        r = await client.get("/segments", headers=auth, data=b"x" * (API_MAX_BODY_BYTES + 1))
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "payload_too_large"
        r = await client.get("/segments", headers=auth, data=b"x" * 100)
        assert r.status == 200  # a small body is ignored
        # request line and each header: aiohttp's 8190-byte limits (400, connection closed)
        r = await client.get("/segments", headers=auth, params={"q": "x" * 9000})
        assert r.status == 400
        r = await client.get("/segments", headers={"Authorization": f"Bearer {TOKEN}" + "z" * 9000})
        assert r.status == 400
        r = await client.get("/segments", headers=auth)
        assert r.status == 200  # still serving

    with caplog.at_level(logging.DEBUG):
        serve(api_app(), scenario)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "request bytes not logged" in logged
    assert_no_secret(logged)


def test_api_wrong_missing_revoked_tokens_are_not_echoed(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        cases = [({}, 401, "missing_token"),
                 ({"Authorization": f"Bearer {WRONG}"}, 401, "invalid_token"),
                 ({"Authorization": f"Basic {WRONG}"}, 401, "missing_token"),
                 ({"Authorization": f"Bearer {REVOKED}"}, 403, "token_revoked")]
        for headers, status, code in cases:
            r = await client.get("/customers/alice/segments", headers=headers)
            text = await r.text()
            assert (r.status, (await r.json())["error"]["code"]) == (status, code)
            assert_no_secret(text + str(r.headers))

    with caplog.at_level(logging.DEBUG):
        serve(api_app(), scenario)
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records))


def test_collector_limits_and_wrong_keys_echo_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        cases = [({"X-Write-Key": WRONG}, {}, 401, "invalid_key"),
                 ({"Authorization": f"Bearer {WRONG}"}, {}, 401, "invalid_key"),
                 ({}, {"write_key": WRONG}, 401, "invalid_key"),
                 ({"X-Write-Key": REVOKED_KEY}, {}, 403, "key_revoked"),
                 ({}, {}, 401, "missing_key")]
        for headers, params, status, code in cases:
            r = await client.post("/v1/events", data=b"[]", headers=headers, params=params)
            assert (r.status, (await r.json())["error"]["code"]) == (status, code)
            assert_no_secret(await r.text() + str(r.headers))
        # the body limit (max_record_bytes) holds before anything is read
        r = await client.post("/v1/events", headers={"X-Write-Key": WRITE_KEY},
                              data=b"[" + b" " * (1024 * 1024 + 1) + b"]")
        assert r.status == 413
        # an over-long URL carrying a key, an over-long header: 400, nothing of it logged
        r = await client.post("/v1/events", data=b"[]",
                              params={"write_key": WRITE_KEY, "pad": "p" * 9000})
        assert r.status == 400
        r = await client.post("/v1/events", data=b"[]",
                              headers={"X-Write-Key": WRITE_KEY + "k" * 9000})
        assert r.status == 400

    with caplog.at_level(logging.DEBUG):
        # the access logger `segstream collector` serves with (no query string: ?write_key=)
        serve(collector_app(), scenario, access_log_class=AccessLogger)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "request bytes not logged" in logged
    assert_no_secret(logged)
