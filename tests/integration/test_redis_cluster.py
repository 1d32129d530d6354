"""The worker and the state store on a Redis Cluster (3 masters on loopback, started by
deploy/local/redis-cluster.sh with this pytest's lease: its watchdog stops the nodes if pytest
dies).

- the state-store contract of test_state_store.py, run against the cluster;
- the end-to-end scenario of test_segmentation.py with
  ``SEGSTREAM_REDIS_URL=redis+cluster://127.0.0.1:PORT``: every partition's keys share the
  ``{pP}`` hash tag, so each commit script runs on one node, and the partitions spread over
  the three masters.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import RedisCluster

from state.redis_store import RedisStore
from state.store import StateStore

from . import test_state_store as contract
from .pipeline import LIVE_SEGMENTS, leased_server, live_scenario, make_pipeline

NODES = 3


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(rng: random.Random) -> int:
    """A base port with the 3 node ports and their bus ports (+10000) free."""
    for _ in range(200):
        base = rng.randrange(30_000, 45_000)
        if all(_free(base + i) and _free(base + i + 10_000) for i in range(NODES)):
            return base
    raise RuntimeError("no free port range for the Redis Cluster")


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+cluster://127.0.0.1:PORT`` of a fresh 3-master cluster for this module."""
    port = free_cluster_port(random.Random())
    env = {"SEGSTREAM_REDIS_CLUSTER_PORT": str(port), "SEGSTREAM_REDIS_CLUSTER_FRESH": "1",
           "SEGSTREAM_REDIS_CLUSTER_DATA": str(tmp_path_factory.mktemp("redis-cluster"))}
    with leased_server("redis-cluster.sh", env, "a Redis Cluster"):
        yield f"redis+cluster://127.0.0.1:{port}"


CONTRACT = [fn for name, fn in sorted(vars(contract).items())
            if name.startswith("test_") and "make_store" in inspect.signature(fn).parameters]


@pytest.mark.parametrize("scenario", CONTRACT, ids=lambda fn: fn.__name__)
def test_state_store_contract_on_cluster(
    scenario: Callable[[Callable[[], Awaitable[StateStore]]], None], cluster_url: str
) -> None:
    namespace = f"test-{uuid.uuid4().hex[:8]}:"
    seed = "redis://" + cluster_url.removeprefix("redis+cluster://")

    async def cluster_store() -> StateStore:
        return RedisStore(RedisCluster.from_url(seed), namespace=namespace)

    scenario(cluster_store)


def test_partitions_spread_over_the_masters(cluster_url: str) -> None:
    """The 4 partitions' hash tags land on more than one master (a real multi-node test)."""

    async def nodes() -> set[str]:
        client = RedisCluster.from_url("redis://" + cluster_url.removeprefix("redis+cluster://"))
        try:
            await client.initialize()
            store = RedisStore(client, namespace="x:")
            return {client.get_node_from_key(store.key(p, "state")).name for p in range(4)}
        finally:
            await client.aclose()

    assert len(asyncio.run(nodes())) >= 2


def test_pipeline_on_redis_cluster(kafka_bootstrap: str, cluster_url: str,
                                   unique_topic_prefix: str, tmp_path: Path) -> None:
    p = make_pipeline(kafka_bootstrap, cluster_url, unique_topic_prefix, tmp_path,
                      LIVE_SEGMENTS)
    try:
        live_scenario(p, p.worker())
    finally:
        p.stop_all()
