"""segstream redis-rebuild refuses Redis Cluster URLs before connecting, TLS ones too."""

from __future__ import annotations

import asyncio

import pytest

from stream.redis_rebuild import rebuild
from stream.settings import Settings


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:1", "rediss+cluster://127.0.0.1:1"])
def test_cluster_urls_are_refused_with_exit_2(url: str) -> None:
    said: list[str] = []
    status = asyncio.run(rebuild(Settings.build(redis_url=url), [0], out=said.append))
    assert status == 2
    assert said == ["redis-rebuild: Redis Cluster URLs are not supported (see --help)"]
