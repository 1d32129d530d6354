"""`segstream deliver`: POST segment changes to the webhook destinations of a file.

Its own consumer group on the segment-changes topic (SEGSTREAM_DELIVER_GROUP); per
destination a segment filter, batches (N changes or T ms), HMAC-SHA256 signed bodies,
retries with exponential backoff and full jitter, a dead-letter topic after max_tries, order
per customer, at-least-once (offsets committed when every destination is done). Metrics on
http://SEGSTREAM_WEB_HOST:SEGSTREAM_DELIVER_PORT/metrics. Reference: docs/destinations.md.

Exit status: 0 stopped by SIGTERM/SIGINT, 2 bad command line or settings, 3 bad
destinations file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processors.lang.errors import DefinitionError
from stream.deliver.config import Destination, load_destinations
from stream.deliver.metrics import DeliverMetrics
from stream.deliver.runner import Deliverer, deadletters_topic, group_id
from stream.logs import configure_logging
from stream.settings import Settings, SettingsError, mask_url

log = logging.getLogger("segstream.deliver")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("deliver", help="POST segment changes to webhook destinations",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--destinations", metavar="FILE", default=None,
                   help="the destinations file (default: SEGSTREAM_DESTINATIONS_FILE)")
    p.add_argument("--check", action="store_true",
                   help="validate the file, print the destinations and exit (no Kafka)")
    p.set_defaults(func=run)


#: What ``stream.cli`` calls to add the sub-command.
register = add_parser


def _fail(message: str, code: int) -> int:
    print(f"segstream deliver: {message}", file=sys.stderr)
    return code


def describe(dest: Destination) -> str:
    """One line per destination for ``--check`` and the start-up log (never the secret)."""
    segments = "all segments" if dest.segments is None else ", ".join(sorted(dest.segments))
    return (f"{dest.name}: {mask_url(dest.url)} ({segments}; batches of {dest.max_changes} "
            f"changes or {dest.max_wait_ms} ms; timeout {dest.timeout_ms} ms; "
            f"{dest.max_tries} tries, backoff {dest.backoff_base_ms}..{dest.backoff_max_ms} ms)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        return _fail(str(exc), 2)
    if not settings.deliver.group.strip():
        return _fail("SEGSTREAM_DELIVER_GROUP must not be empty", 2)
    path = args.destinations or settings.deliver.destinations_file
    if not path:
        return _fail("no destinations file: give --destinations FILE or set "
                     "SEGSTREAM_DESTINATIONS_FILE", 2)
    if not Path(path).is_file():
        return _fail(f"{path}: no such file", 2)
    try:
        # secret_env names a variable of this process: the one read of the environment
        # outside stream.settings, on purpose (the file chooses the names)
        destinations = load_destinations(Path(path), environ=os.environ)
    except DefinitionError as exc:
        return _fail(f"invalid destinations file:\n{exc}", 3)
    except OSError as exc:
        return _fail(f"{path}: {exc.strerror}", 2)
    if args.check:
        print(f"{path}: {len(destinations)} destination(s) OK")
        for dest in destinations:
            print(f"  {describe(dest)}")
        return 0
    configure_logging(settings)
    try:
        asyncio.run(serve(settings, destinations))
    except SettingsError as exc:  # e.g. a Kafka password file that cannot be read
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        pass
    return 0


async def serve(settings: Settings, destinations: list[Destination]) -> None:
    """Run the delivery and its /metrics until SIGTERM or SIGINT."""
    metrics = DeliverMetrics.create()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.process.web_host, settings.deliver.port)
    await site.start()
    log.info("metrics on http://%s:%d/metrics; group %s; dead letters to %s",
             settings.process.web_host, settings.deliver.port, group_id(settings),
             deadletters_topic(settings))
    for dest in destinations:
        log.info("destination %s", describe(dest))
    try:
        await Deliverer(settings, destinations, metrics).run(stop)
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
    log.info("stopped")
