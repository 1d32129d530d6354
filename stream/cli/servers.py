"""Reaching Kafka and Redis from the short-lived commands: one bounded, announced wait, then
one line on stderr and exit status 69 (``EX_UNAVAILABLE`` of sysexits.h) in every command.

The first attempt is quiet and short (:data:`FIRST_TRY_S`); when it fails the command says on
stderr what it waits for and for how long (``SEGSTREAM_CONNECT_WAIT_S``), then tries again
until that time is up and raises :class:`UnavailableError`, which :func:`stream.cli.main.main`
turns into the one-line error and the exit status.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.errors import SegstreamError
from stream.connections import kafka_kwargs, redis_for
from stream.settings import Settings, mask_url

EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: a server cannot be reached
FIRST_TRY_S = 2.0
REDIS_RETRY_S = 0.5


class UnavailableError(SegstreamError):
    """A server (Kafka, Redis, the collector) cannot be reached: exit 69 with this message."""


def quiet_kafka_logs() -> None:
    """kafka-python logs every failed bootstrap attempt at WARNING, which Python's last-resort
    handler prints on stderr; the commands say it once themselves."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _kafka_where(settings: Settings) -> str:
    return ",".join(settings.kafka.bootstrap)


def announce(command: str, what: str, wait_s: float) -> None:
    print(f"segstream {command}: {what} not reachable yet; waiting up to {wait_s:g} s "
          "(SEGSTREAM_CONNECT_WAIT_S)", file=sys.stderr, flush=True)


def kafka_client(settings: Settings, command: str, kind: str = "consumer",
                 **options: Any) -> Any:
    """A connected kafka-python ``KafkaConsumer`` (``kind="consumer"``), ``KafkaProducer`` or
    ``KafkaAdminClient``, or :class:`UnavailableError` after the bounded wait."""
    import kafka  # noqa: PLC0415 - keep `segstream --help` fast
    from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError  # noqa: PLC0415

    factory = {"consumer": kafka.KafkaConsumer, "producer": kafka.KafkaProducer,
               "admin": kafka.KafkaAdminClient}[kind]
    quiet_kafka_logs()
    wait_s = float(settings.process.connect_wait_s)
    deadline = time.monotonic() + wait_s
    first = True
    while True:
        remaining = max(0.1, deadline - time.monotonic())
        budget = min(FIRST_TRY_S, wait_s / 2) if first else remaining
        try:
            return factory(**kafka_kwargs(settings), bootstrap_timeout_ms=int(budget * 1000),
                           **options)
        except (KafkaTimeoutError, KafkaConnectionError):
            if first and deadline - time.monotonic() > 0.1:
                announce(command, f"Kafka at {_kafka_where(settings)}", wait_s)
                first = False
                continue
            raise UnavailableError(f"Kafka at {_kafka_where(settings)} cannot be reached "
                                   f"(gave up after {wait_s:g} s; check "
                                   "SEGSTREAM_KAFKA_BOOTSTRAP and the security settings)"
                                   ) from None
        except KafkaError as exc:  # e.g. a broker too old, a TLS handshake refused
            raise UnavailableError(f"Kafka at {_kafka_where(settings)} refused the connection: "
                                   f"{type(exc).__name__}: {exc}") from None


async def redis_connected(settings: Settings, command: str) -> Any:
    """A Redis client of ``settings`` that answered PING, or :class:`UnavailableError` after the
    bounded wait (a refused AUTH is not waited for: UnavailableError at once)."""
    client = redis_for(settings)
    wait_s = float(settings.process.connect_wait_s)
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            budget = min(FIRST_TRY_S, wait_s / 2) if not told else deadline - time.monotonic()
            async with asyncio.timeout(max(0.1, budget)):
                await client.ping()
            return client
        except AuthenticationError as exc:  # its text never holds the password
            await client.aclose()
            raise UnavailableError(f"Redis at {mask_url(settings.redis.url)} refused the "
                                   f"credentials: {type(exc).__name__}: {exc}") from None
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError):
            if time.monotonic() + REDIS_RETRY_S >= deadline:
                await client.aclose()
                raise UnavailableError(f"Redis at {mask_url(settings.redis.url)} cannot be "
                                       f"reached (gave up after {wait_s:g} s; check "
                                       "SEGSTREAM_REDIS_URL)") from None
            if not told:
                announce(command, f"Redis at {mask_url(settings.redis.url)}", wait_s)
                told = True
            await asyncio.sleep(REDIS_RETRY_S)
