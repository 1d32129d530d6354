"""Log output of the segstream processes: text lines (default) or JSON lines.

``SEGSTREAM_LOG_FORMAT=json`` makes every record one JSON object on one line (stderr), for log
shippers that index fields (Loki, Elasticsearch, Cloud Logging)::

    {"ts": "2026-12-07T11:02:03.456Z", "level": "error", "logger": "stream.worker.segmenter",
     "message": "partition 3: dead-lettering ...", "event_id": "e-981", "customer_id": "c-42",
     "partition": 3}

The context fields (:data:`CONTEXT_FIELDS`) appear when the code logging the record passed them
with ``extra=`` (:func:`event_context` builds them for an event); ``exc`` holds the traceback of
a record logged with one. The secret scrubbing filters (``stream.auth.scrub_http_parser_errors``,
``stream.connections.scrub_kafka_client_logs``) sit on the loggers, so they rewrite a record
before any handler formats it: a JSON line carries the scrubbed message, like a text line.
"""

from __future__ import annotations

import logging
import logging.config
import time
from collections.abc import Mapping
from typing import Any

import orjson

from stream.settings import Settings

#: ``extra=`` keys copied into a JSON line when a record has them (in this order)
CONTEXT_FIELDS = ("event_id", "customer_id", "anonymous_id", "segment", "destination",
                  "topic", "partition", "offset")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ms), level, logger, message, the context fields
    present, exc (the formatted traceback) when the record has one.

    >>> record = logging.makeLogRecord({"name": "x", "levelname": "WARNING", "msg": "%d left",
    ...     "args": (2,), "created": 1796641323.456, "event_id": "e-1", "partition": 0})
    >>> JsonFormatter().format(record)
    '{"ts":"2026-12-07T11:02:03.456Z","level":"warning","logger":"x","message":"2 left","event_id":"e-1","partition":0}'
    """  # noqa: E501

    def format(self, record: logging.LogRecord) -> str:
        ms = round(record.created * 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
        out: dict[str, Any] = {
            "ts": f"{stamp}.{ms % 1000:03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        fields = record.__dict__
        for name in CONTEXT_FIELDS:
            value = fields.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=repr).decode()


def event_context(event: Mapping[str, Any], **more: Any) -> dict[str, Any]:
    """``extra=`` for a record about one event: its ids (those it has) and ``more``.

    >>> event_context({"event_id": "e-1", "customer_id": "c-1", "type": "purchase"}, partition=3)
    {'event_id': 'e-1', 'customer_id': 'c-1', 'partition': 3}
    """
    ids = {k: event[k] for k in ("event_id", "customer_id", "anonymous_id") if event.get(k)}
    return {**ids, **more}


def logging_config(settings: Settings) -> dict[str, Any]:
    """The :func:`logging.config.dictConfig` of a process: the root logger at
    ``SEGSTREAM_LOG_LEVEL`` to stderr, as text or JSON lines (``SEGSTREAM_LOG_FORMAT``).
    Existing loggers stay enabled, with their filters (the secret scrubbers)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if settings.process.log_format == "json"
        else {"format": TEXT_FORMAT})
    level = settings.process.log_level.upper()
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"segstream": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "level": level,
                                 "formatter": "segstream", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["default"]},
    }


def configure_logging(settings: Settings) -> None:
    """Set up the process's logging from ``settings`` (collector, deliver; the worker hands
    :func:`logging_config` to Faust instead, which sets up logging itself)."""
    logging.config.dictConfig(logging_config(settings))
