"""What /ready reports (stream.worker.api.MembershipApi.readiness), one condition at a time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from state.store import MemoryStore
from stream.settings import Settings
from stream.worker.api import MembershipApi


async def _ok() -> None:
    return None


async def _down() -> None:
    raise ConnectionError("refused")


async def _hangs() -> None:
    await asyncio.sleep(10)


def reasons(ping: Any = _ok, definitions_ready: asyncio.Event | None = None,
            **app_state: Any) -> list[str]:
    state = {"should_stop": False, "rebalancing": False, **app_state}
    status = SimpleNamespace(**state)
    api = MembershipApi(Settings(), status, definitions_ready=definitions_ready)
    api.use_store(MemoryStore(), ping)
    api.started = state.get("started", True)
    api.assignments = state.get("assignments", 1)
    return asyncio.run(api.readiness())


def test_ready_when_started_assigned_settled_and_redis_answers() -> None:
    assert reasons() == []


def test_each_condition_has_its_reason() -> None:
    assert reasons(started=False) == ["starting: the Faust app has not finished starting"]
    assert reasons(assignments=0) == [
        "waiting for the first partition assignment of the consumer group"]
    assert reasons(rebalancing=True) == []  # the API reads Redis: it answers during a rebalance
    assert reasons(should_stop=True) == ["stopping"]
    pending = asyncio.Event()
    assert reasons(definitions_ready=pending) == ["reading the definitions topic"]
    pending.set()
    assert reasons(definitions_ready=pending) == []


def test_redis_down_or_slow_is_not_ready() -> None:
    assert reasons(ping=_down) == ["redis not answering (ConnectionError)"]
    assert reasons(ping=_hangs) == ["redis not answering (TimeoutError)"]
    assert reasons(ping=_down, rebalancing=True) == ["redis not answering (ConnectionError)"]
