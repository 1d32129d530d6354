"""The API's HTTP surface in process: the app built by the factory, served by aiohttp's test
server, with a MemoryStore (status codes, JSON bodies, auth on Faust's own pages)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from schemas.partitioner import partition_for
from state.store import Commit, MemberOp, MemoryStore
from stream.settings import Settings
from stream.worker.bootstrap import build_worker
from stream.worker.faust_adapter import web_application

SEGMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "live_segments.yaml"
TOKEN = "unit-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _ok() -> None:
    return None


def serve(scenario: Callable[[TestClient[Any, Any], MemoryStore], Awaitable[None]],
          **settings: Any) -> None:
    """Run ``scenario(client, store)`` against a fresh app."""
    worker = build_worker(Settings.build(segments_file=str(SEGMENTS), bundle_partitions=4,
                                         **{"api_tokens": (TOKEN,), **settings}))
    store = MemoryStore()
    assert worker.api is not None
    worker.api.use_store(store, _ok)

    async def run() -> None:
        async with TestClient(TestServer(web_application(worker.app))) as client:
            await scenario(client, store)

    asyncio.run(run())


async def add(store: MemoryStore, cid: str, *segments: str) -> int:
    p = partition_for(cid, 4)
    epoch = await store.claim(p)
    await store.commit(Commit(p, epoch, states={cid: b"s"},
                              members=[MemberOp(cid, s, 1) for s in segments]))
    return p


def test_routes_answer_json() -> None:
    async def scenario(client: TestClient[Any, Any], store: MemoryStore) -> None:
        p = await add(store, "alice", "german", "viewers_1h")
        await add(store, "bob", "german")
        r = await client.get("/customers/alice/segments", headers=AUTH)
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.json() == {"customer_id": "alice", "partition": p, "segments": [
            {"segment": "german", "version": 1}, {"segment": "viewers_1h", "version": 1}]}
        r = await client.get("/customers/nobody/segments", headers=AUTH)
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "customer_not_found"
        body = await (await client.get("/segments", headers=AUTH)).json()
        assert body["definitions_version"] == "live-1"
        sizes = {s["name"]: s["size"] for s in body["segments"]}
        assert sizes == {"viewers_1h": 1, "buyers_1h": 0, "german": 2, "cart_open": 0,
                         "opened_recently": 0}
        german = next(s for s in body["segments"] if s["name"] == "german")
        assert german["condition"] == 'trait.country == "DE"' and german["enabled"] is True
        r = await client.get("/segments/german/members", params={"limit": "1"}, headers=AUTH)
        page = await r.json()
        assert len(page["members"]) == 1 and page["next_cursor"]
        r = await client.get("/segments/german/members", headers=AUTH,
                             params={"cursor": page["next_cursor"]})
        rest = await r.json()
        assert sorted(page["members"] + rest["members"]) == ["alice", "bob"]
        assert rest["next_cursor"] is None
        bad = [({"limit": "0"}, "invalid_limit"), ({"limit": "1001"}, "invalid_limit"),
               ({"limit": "x"}, "invalid_limit"), ({"cursor": "junk"}, "invalid_cursor")]
        for query, code in bad:
            r = await client.get("/segments/german/members", params=query, headers=AUTH)
            assert r.status == 400 and (await r.json())["error"]["code"] == code
        r = await client.get("/segments/nope/members", headers=AUTH)
        assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_segment"
        r = await client.get("/no/such/route", headers=AUTH)
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"

    serve(scenario)


def test_auth_guards_everything_but_probes_and_metrics() -> None:
    async def scenario(client: TestClient[Any, Any], store: MemoryStore) -> None:
        for path in ("/health", "/metrics"):
            assert (await client.get(path)).status == 200, path
        r = await client.get("/ready")  # no token needed; not ready: the app is not started
        assert r.status == 503
        assert "starting" in (await r.json())["reasons"][0]
        for path in ("/segments", "/customers/alice/segments", "/segments/german/members",
                     "/router", "/"):  # Faust's own pages too
            r = await client.get(path)
            assert r.status == 401, path
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["error"]["code"] == "missing_token"
        r = await client.get("/segments", headers={"Authorization": "Bearer wrong-wrong-wrong"})
        assert r.status == 401 and TOKEN not in await r.text()

    serve(scenario)


def test_no_token_configured_is_a_clear_503_and_insecure_mode_opens() -> None:
    async def refused(client: TestClient[Any, Any], store: MemoryStore) -> None:
        r = await client.get("/segments", headers=AUTH)
        assert r.status == 503
        assert "SEGSTREAM_API_TOKENS" in (await r.json())["error"]["message"]
        assert (await client.get("/health")).status == 200

    serve(refused, api_tokens=())

    async def open_(client: TestClient[Any, Any], store: MemoryStore) -> None:
        assert (await client.get("/segments")).status == 200

    serve(open_, api_tokens=(), api_auth="none")


def test_customer_ids_are_percent_decoded_and_aliases_explained() -> None:
    async def scenario(client: TestClient[Any, Any], store: MemoryStore) -> None:
        for cid in ("a/b", "é x"):
            await add(store, cid, "german")
        for path, cid in (("/customers/a%2Fb/segments", "a/b"),
                          ("/customers/%C3%A9%20x/segments", "é x")):
            r = await client.get(path, headers=AUTH)
            assert r.status == 200 and (await r.json())["customer_id"] == cid
        p = partition_for("anon-1", 4)
        await store.commit(Commit(p, await store.claim(p), aliases={"anon-1": "known-1"}))
        r = await client.get("/customers/anon-1/segments", headers=AUTH)
        body = await r.json()
        assert r.status == 404 and body["error"]["code"] == "customer_aliased"
        assert "known-1" in body["error"]["message"]
        r = await client.get("/customers/" + "x" * 129 + "/segments", headers=AUTH)
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_id"

    serve(scenario)
