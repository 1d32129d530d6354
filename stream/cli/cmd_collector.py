"""`segstream collector`: run the HTTP event collector (stream/collector/,
docs/collector.md).

A process of its own, separate from the worker: it validates posted events and produces the
valid ones to the raw topic with an idempotent, acks=all producer, answering only once Kafka
acknowledged them. Configuration comes from the ``SEGSTREAM_COLLECTOR_*`` settings (and the
Kafka ones); ``--host``/``--port`` override the bind address. SIGINT/SIGTERM stop it
gracefully: requests in flight are answered, the producer is flushed and closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from processors.lang.errors import DefinitionError
from stream.auth import scrub_http_parser_errors
from stream.collector.service import AccessLogger, Collector, create_app
from stream.connections import kafka_kwargs
from stream.logs import configure_logging
from stream.settings import Settings, SettingsError
from stream.topics import topic_spec

log = logging.getLogger("segstream.collector")

SHUTDOWN_TIMEOUT_S = 10.0


DESCRIPTION = """\
Run the HTTP event collector: websites and back ends POST events to /v1/events; valid events
are written to the raw topic, and a request is answered only once Kafka acknowledged them
(docs/collector.md). It starts serving at once and connects to Kafka in the background
(/ready and POST answer 503 until then). Configuration: the SEGSTREAM_COLLECTOR_* and Kafka
settings. SIGINT/SIGTERM stop it gracefully: requests in flight are answered first.

exit status: 0 stopped; 2 a configuration error.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("collector", help="run the HTTP event collector",
                              description=DESCRIPTION)
    p.add_argument("--host", help="bind address (default: SEGSTREAM_COLLECTOR_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: SEGSTREAM_COLLECTOR_PORT, 8088)")
    p.set_defaults(func=run)


async def ensure_raw_topic(settings: Settings) -> None:
    """Create the raw topic when it is missing (local runs; production provisions it).
    Best effort: without the right to create topics the collector still starts."""
    spec = topic_spec(settings, "raw")
    admin = AIOKafkaAdminClient(**kafka_kwargs(settings))
    try:
        await admin.start()
        if spec.name in await admin.list_topics():
            return
        await admin.create_topics([NewTopic(spec.name, spec.partitions, spec.replication,
                                            topic_configs=spec.configs())])
        log.info("created topic %s (%d partitions)", spec.name, spec.partitions)
    except TopicAlreadyExistsError:
        pass
    except KafkaConnectionError:
        raise  # the caller retries the whole connection
    except KafkaError as exc:
        log.warning("could not check or create topic %s: %s", spec.name, exc)
    finally:
        await admin.close()


def build(settings: Settings) -> web.Application:
    """The collector application. Its start-up hook starts serving at once and connects to
    Kafka in the background, retrying (``/ready`` and ``POST`` answer 503 until connected), so
    start order against the broker does not matter."""
    collector = Collector(settings)
    collector.types.followed = True  # followed by the start-up hook below
    app = create_app(collector)
    scrub_http_parser_errors()  # aiohttp would log bytes of a malformed request (a write key)
    state: dict[str, Any] = {}

    kafka = kafka_kwargs(settings)  # SettingsError here (start-up) if a file is unusable

    async def connect() -> None:
        delay = 0.5
        while True:
            producer = AIOKafkaProducer(
                **kafka, acks="all",
                enable_idempotence=True, linger_ms=settings.kafka.producer_linger_ms,
                client_id="segstream-collector")
            try:
                await ensure_raw_topic(settings)
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                log.warning("Kafka at %s not reachable (%s); retrying in %.1f s",
                            ",".join(settings.kafka.bootstrap), type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
                continue
            state["producer"] = collector.producer = producer
            log.info("connected to Kafka at %s", ",".join(settings.kafka.bootstrap))
            return

    async def start(_: web.Application) -> None:
        state["connect"] = asyncio.create_task(connect())
        state["types"] = asyncio.create_task(collector.types.follow())  # live event types

    async def stop(_: web.Application) -> None:
        for task in (state["connect"], state["types"]):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        collector.producer = None
        if "producer" in state:
            await state["producer"].stop()  # flushes what is still buffered

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        overrides = {k: v for k, v in (("collector_host", args.host),
                                       ("collector_port", args.port)) if v is not None}
        settings = settings.but(**overrides)
        app = build(settings)
    except SettingsError as exc:
        print(f"segstream collector: {exc}", file=sys.stderr)
        return 2
    except DefinitionError as exc:  # SEGSTREAM_TYPES_FILE
        print(f"segstream collector: {exc}", file=sys.stderr)
        return 3
    configure_logging(settings)
    if settings.collector.auth == "none":
        log.warning("SEGSTREAM_COLLECTOR_AUTH=none: anyone who can reach %s:%d may post events",
                    settings.collector.host, settings.collector.port)
    web.run_app(app, host=settings.collector.host, port=settings.collector.port,
                access_log_class=AccessLogger, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                print=lambda _: log.info("collector listening on http://%s:%d%s (topic %s)",
                                         settings.collector.host, settings.collector.port,
                                         "/v1/events", settings.topic("raw")))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m stream.cli.cmd_collector``: the same as ``segstream collector``."""
    parser = argparse.ArgumentParser(prog="segstream")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["collector", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
