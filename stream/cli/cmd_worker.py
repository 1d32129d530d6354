"""`segstream worker`: run the Faust worker of ``build_worker(Settings.from_env())``.

Configuration comes from the ``SEGSTREAM_*`` environment (docs/configuration.md); the few flags
here override it for one run. The worker exits with a non-zero status when the app crashes (for
instance a bundle that Kafka refused), so a supervisor restarts it and it resumes from the last
committed offsets.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

from stream.settings import LOG_LEVELS, Settings, SettingsError

DESCRIPTION = """\
Run a stream worker: the ingest agent (raw events -> bundles) and the segmentation agent
(bundles -> segment changes, customer state in Redis, timers), plus the web server with the
membership API and /metrics. Configuration comes from the SEGSTREAM_* environment
(docs/configuration.md); the options below override it for one run.

The worker waits for Kafka and Redis and retries while they are away. It exits with a non-zero
status when it crashes, so a supervisor restarts it; it resumes from the committed offsets.
exit status: 2 a configuration error.
"""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``worker`` sub-command."""
    parser = subparsers.add_parser(
        "worker",
        help="run the stream worker (ingest and segmentation agents, /metrics)",
        description=DESCRIPTION,
    )
    parser.add_argument("--web-port", type=int, default=None,
                        help="port of the web server (API, /metrics) "
                             "(default: SEGSTREAM_WEB_PORT, 6066)")
    parser.add_argument("--web-host", default=None,
                        help="address the web server binds to "
                             "(default: SEGSTREAM_WEB_HOST, 127.0.0.1)")
    parser.add_argument("-l", "--loglevel", choices=LOG_LEVELS, default=None,
                        help="log level (default: SEGSTREAM_LOG_LEVEL, info)")
    parser.set_defaults(func=run)


def settings_for(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    """Environment settings with the command-line overrides applied."""
    settings = Settings.from_env(environ)
    overrides: dict[str, Any] = {}
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    if args.web_host is not None:
        overrides["web_host"] = args.web_host
    if args.loglevel is not None:
        overrides["log_level"] = args.loglevel
    return settings.but(**overrides)


#: Young-generation GC threshold of a worker (CPython's default is 700). An ingest batch
#: allocates and drops ~10 objects per event; at the default, the collector runs hundreds of
#: times per 100k events and scans the live batch each time (measured: ~10x fewer collections
#: and ~5-10% less CPU per event in bench_ingest's array phase).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze the start-up heap (never scanned again) and collect the young generation less."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def run(args: argparse.Namespace) -> int:
    """Start the worker; returns only on a configuration error (the worker exits itself)."""
    import faust  # noqa: PLC0415 - keep `segstream --help` fast; faust imports take ~1 s

    from processors.lang.errors import DefinitionError  # noqa: PLC0415
    from stream.logs import configure_logging, logging_config  # noqa: PLC0415 - same reason
    from stream.worker.bootstrap import build_worker  # noqa: PLC0415 - same reason

    try:
        settings = settings_for(args)
    except SettingsError as exc:
        print(f"segstream worker: configuration error: {exc}")
        return 2
    # absolute: Faust changes into the data directory, then creates its own directory by the
    # same path, relative to the new working directory (a relative path failed to start)
    settings = settings.but(data_dir=settings.process.data_dir.resolve())
    settings.process.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(settings)  # what is logged before Faust sets up logging (its own way)
    try:
        app = build_worker(settings).app  # reads the password files, builds the TLS contexts
    except SettingsError as exc:
        print(f"segstream worker: configuration error: {exc}")
        return 2
    except DefinitionError as exc:  # SEGSTREAM_SEGMENTS_FILE or SEGSTREAM_TYPES_FILE
        print(f"segstream worker: {exc}", file=sys.stderr)
        return 3
    json_logs = settings.process.log_format == "json"
    # JSON lines: our logging config instead of Faust's colored one, and no banner or spinner
    # on stdout (stdout prints still become log records: Faust redirects them)
    worker = faust.Worker(app, loglevel=settings.process.log_level,
                          workdir=str(settings.process.data_dir), quiet=json_logs,
                          logging_config=logging_config(settings) if json_logs else None)
    tune_gc()
    worker.execute_from_commandline()  # exits the process (status 0, or non-zero on a crash)
