"""What the segmentation parts share: the definitions and engine running now, and the Redis
retry loop (every Redis call of the agent waits out a transient failure the same way)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from processors.engine import Engine
from processors.hashing import deployment_key
from processors.lang.ast import Catalogue
from processors.lang.compile import compile_catalogue
from stream.errors import is_retriable

log = logging.getLogger("stream.worker.agents.segmentation")

T = TypeVar("T")


class Running:
    """The definitions the worker runs and their engine (replaced together by a switch)."""

    __slots__ = ("definitions", "engine", "hash_key")

    def __init__(self, definitions: Catalogue, hash_key: str) -> None:
        self.hash_key = hash_key
        self.definitions = definitions  # what the engine runs (the API shows it)
        self.engine = self.compile(definitions)

    def compile(self, definitions: Catalogue) -> Engine:
        """An engine for ``definitions`` (:class:`DefinitionError` when they do not compile)."""
        return Engine(compile_catalogue(definitions), deployment_key(self.hash_key))

    @property
    def version(self) -> str:
        return self.engine.catalogue.version


async def retrying(what: str, call: Callable[[], Awaitable[T]],
                   on_error: Callable[[], None]) -> T:
    """``call()`` again after a transient Redis failure (connection lost, timeout, failover,
    loading), with back-off, for as long as it takes: the partition waits, the lag grows and is
    reported, nothing is skipped. ``on_error`` counts each failure. What is transient is
    :func:`stream.errors.is_retriable`'s answer; anything else propagates at once."""
    delay = 0.1
    while True:
        try:
            return await call()
        except Exception as err:
            if not is_retriable(err):
                raise
            on_error()
            log.warning("Redis %s failed (%r); retrying in %.1f s", what, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


# How far behind the wall clock a partition's "now" may run while it works off a backlog:
# ARRIVAL_SLACK_MS past the arrival of the records being processed (see engine_now).
ARRIVAL_SLACK_MS = 10_000


def engine_now(wall_ms: int, arrived_ms: int | None) -> int:
    """The engine's "now" for records that arrived at ``arrived_ms`` (their bundles' record
    timestamp, stamped by ingest with the raw records' arrival): the wall clock, held back to
    ``arrived_ms + ARRIVAL_SLACK_MS`` while a backlog is worked off. So an event is judged late
    by when it arrived, not by when it is processed: a worker down for hours (or a slow one)
    refuses none of the events that arrived meanwhile, and the result does not depend on the
    processing delay. Caught up, it is the wall clock (records are seconds old at most).

    >>> engine_now(1_700_000_000_000, None)
    1700000000000
    >>> engine_now(1_700_000_000_000, 1_000_000)
    1010000
    """
    return wall_ms if arrived_ms is None else min(wall_ms, arrived_ms + ARRIVAL_SLACK_MS)
